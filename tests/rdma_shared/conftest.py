"""Fixtures of the rdma_shared tests (``fake_host``/``fake_kubelet`` come from the core kit)."""

from __future__ import annotations

import pytest

from devplugin_core.testing import FakeHost

from .helpers import build_node


@pytest.fixture
def node(fake_host: FakeHost) -> FakeHost:
    """The fake RDMA node of :mod:`.helpers`."""
    return build_node(fake_host)
