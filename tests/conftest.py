"""Shared test configuration: examples/ importable; the testing kit's fixtures come from the
``devplugin`` pytest plugin installed with the package."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devplugin_core.testing import FakeKubelet
from devplugin_core.testing.fakekubelet import CLIENT_MODELS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture(params=CLIENT_MODELS)
async def kubelet(request: pytest.FixtureRequest, kubelet_dir: str) -> AsyncIterator[FakeKubelet]:
    """A started FakeKubelet, once per client model (1.32's single client, per-socket)."""
    k = FakeKubelet(kubelet_dir, clients=request.param)
    await k.start()
    try:
        yield k
    finally:
        await k.stop()


def pytest_configure(config):  # type: ignore[no-untyped-def]
    config.addinivalue_line("markers", "soak: long fault-injection runs (make soak)")


def pytest_runtest_logreport(report):  # type: ignore[no-untyped-def]
    """Print a failure the moment it happens: if a later test hangs and CI kills the run, the
    reason for the earlier failures is still in the log."""
    if report.failed:
        sys.stderr.write(f"\n===== FAILED {report.nodeid} ({report.when}) =====\n")
        sys.stderr.write(f"{report.longreprtext}\n")
        sys.stderr.flush()
