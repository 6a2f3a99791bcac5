"""Fixtures of the fault suite: every test runs once per real plugin (``case``) on that
plugin's realistic node (``node``). ``fake_host``, ``kubelet_dir`` and ``fake_kubelet`` come
from the core's pytest plugin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devplugin_core.testing import FakeHost

from .cases import CASES, Case, case_ids
from .helpers import Node

#: Consecutive kubelet restarts per plugin: ~20 in ``make test``, 100 in ``make soak``.
RESTARTS = int(os.environ.get("DEVPLUGIN_SOAK_RESTARTS") or 20)


@pytest.fixture(params=CASES, ids=case_ids)
def case(request: pytest.FixtureRequest) -> Case:
    value: Case = request.param
    return value


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


@pytest.fixture
def node(case: Case, fake_host: FakeHost, scratch: Path) -> Node:
    return Node(case, fake_host, scratch, case.build(fake_host, scratch))
