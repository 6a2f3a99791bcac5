"""Optional pyverbs backend: a second source of port state when sysfs cannot be read.

pyverbs (rdma-core's Python bindings) is never required: sysfs carries everything the plugin
needs. When the module imports (e.g. Debian's ``python3-pyverbs`` in a venv created with
``--system-site-packages``) and the plugin reads the real host (``--host-root /``), a port whose
sysfs state file cannot be read is queried through ``ibv_query_port`` instead. Any failure
(no device, no permission on ``/dev/infiniband/uverbsN``, no provider library) means "unknown".
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any

from devplugin_core import HostFS

__all__ = ["available", "query_port"]

log = logging.getLogger("devplugin.rdma_shared.verbs")


def _load() -> ModuleType | None:
    try:
        import pyverbs.device as device  # optional dependency
    except Exception:  # ImportError, or a broken install (missing libibverbs symbols)
        return None
    module: ModuleType = device
    return module


_device: ModuleType | None = _load()


def available() -> bool:
    """True when pyverbs imported."""
    return _device is not None


def query_port(host: HostFS, ibdev: str, port: int) -> tuple[int, int] | None:
    """``(state, phys_state)`` of ``ibdev`` port ``port`` via verbs, or None when unknown.

    Only on the real host: verbs sees this machine's devices, not a ``--host-root`` tree.
    """
    if _device is None or host.root != "/":
        return None
    try:
        context: Any = _device.Context(name=ibdev)
        with context as ctx:
            attr = ctx.query_port(port)
            return int(attr.state), int(attr.phys_state)
    except Exception as err:  # PyverbsError and friends; all mean "unknown"
        log.debug("pyverbs query of %s port %d failed: %s", ibdev, port, err)
        return None
