"""pytest fixtures of the devplugin testing kit (registered through the ``pytest11`` entry point).

* ``kubelet_dir``: a short temp directory for kubelet sockets (removed afterwards);
* ``fake_host``: a :class:`FakeHost` under ``tmp_path``;
* ``fake_kubelet``: a started :class:`FakeKubelet` on ``kubelet_dir`` (needs an asyncio test).

The async fixture is declared with ``pytest_asyncio.fixture``, so it works in pytest-asyncio's
``strict`` mode (mark the tests ``@pytest.mark.asyncio``) as well as in ``auto`` mode.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from . import FakeHost, FakeKubelet, short_tempdir


@pytest.fixture
def kubelet_dir() -> Iterator[str]:
    base = short_tempdir()
    directory = os.path.join(base, "device-plugins")
    os.makedirs(directory)
    try:
        yield directory
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "host")


@pytest_asyncio.fixture
async def fake_kubelet(kubelet_dir: str) -> AsyncIterator[FakeKubelet]:
    kubelet = FakeKubelet(kubelet_dir)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop()
