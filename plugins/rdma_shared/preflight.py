"""Host checks before serving: refuse the RDMA subsystem's exclusive network-namespace mode.

In exclusive mode (``rdma system set netns exclusive``; module parameter
``ib_core.netns_mode=N``) an RDMA device lives in one network namespace only, so it cannot be
shared between pods. Upstream refuses to start then, and so do we. The plugin only *reads* the
mode: it never changes host state (nor brings links up, which upstream does).
"""

from __future__ import annotations

import logging

from devplugin_core import DevicePluginError, HostReadError, PluginContext

from .config import RdmaSharedConfig

__all__ = ["NETNS_MODE_PARAM", "ExclusiveNetnsModeError", "check_netns_mode"]

log = logging.getLogger("devplugin.rdma_shared")

NETNS_MODE_PARAM = "/sys/module/ib_core/parameters/netns_mode"


_noted: set[str] = set()


def _note(message: str) -> None:
    """Log ``message`` once per process: preflight also runs on every config reload."""
    if message not in _noted:
        _noted.add(message)
        log.warning("%s", message)


class ExclusiveNetnsModeError(DevicePluginError):
    """The RDMA subsystem is in exclusive netns mode: shared HCAs are impossible."""


def check_netns_mode(config: RdmaSharedConfig, ctx: PluginContext) -> None:
    """Raise :class:`ExclusiveNetnsModeError` when ``netns_mode`` reads ``N``.

    The parameter is a boolean (``Y`` = shared). When it is absent (older kernels, or ib_core
    not loaded yet) the plugin continues, as upstream does on "invalid argument".
    """
    try:
        mode = ctx.host.read_attr(NETNS_MODE_PARAM)
    except HostReadError as err:
        _note(f"cannot read the RDMA netns mode ({err}); assuming shared")
        return
    if mode is None:
        _note(
            f"{NETNS_MODE_PARAM} not found (old kernel, or ib_core not loaded yet); "
            "assuming shared netns mode"
        )
        return
    if mode.upper() in ("N", "0"):
        raise ExclusiveNetnsModeError(
            f"the RDMA subsystem is in exclusive network namespace mode ({NETNS_MODE_PARAM} "
            f"reads {mode!r}): RDMA devices cannot be shared between pods. Use the SR-IOV "
            "network device plugin (devplugin run sriov-net, with rdma-cni) for exclusive "
            "RDMA, or switch the host to shared mode (rdma system set netns shared)."
        )
