"""Fixtures of the rebel_npu tests (``fake_host``, ``kubelet_dir``, ``fake_kubelet`` come from
the core's pytest plugin).

The standard node (``ca22``): four CA22 cards, two behind a PCIe switch on NUMA node 0
(``0000:13:00.0`` = rbln0, ``0000:14:00.0`` = rbln1) and two behind a switch on NUMA node 1
(``0000:23:00.0`` = rbln2, ``0000:24:00.0`` = rbln3), plus ``rbln-stat`` on the host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from devplugin_plugins.rebel_npu.testing import (
    FakeSmi,
    add_ca22_switches,
    add_tools,
    install_fake_smi,
)

from devplugin_core.testing import FakeHost

from .helpers import CA22


@pytest.fixture
def ca22(fake_host: FakeHost) -> FakeHost:
    assert add_ca22_switches(fake_host) == CA22
    add_tools(fake_host)
    return fake_host


@pytest.fixture
def smi(ca22: FakeHost) -> FakeSmi:
    """The fake rbln-smi at the host's /usr/bin/rbln-smi (run through the host root)."""
    return install_fake_smi(ca22)


@pytest.fixture
def lock_file(tmp_path: Path) -> str:
    return str(tmp_path / "rsd.lock")
