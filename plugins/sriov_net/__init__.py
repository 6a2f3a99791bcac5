"""sriov-net: exclusive SR-IOV VFs, a drop-in for sriov-network-device-plugin.

Reads upstream's ``resourceList`` config unchanged and serves every pool as its own extended
resource with upstream's env vars and device-info files; adds health (PF link, vanished
functions), rediscovery without restarts and preferred allocation. See ``README.md`` here.

Modules: :mod:`.config` (the config model; generic ``resourceList`` parts in
the core's :mod:`devplugin_core._pcidp`), :mod:`.pools` (compiled selectors, the
:class:`~.pools.VfInfo` payload), :mod:`.discovery` (the one scanner: exclusions, pool
assignment), :mod:`.aux` (Scalable Functions), :mod:`.vdpa`, :mod:`.ddp` (DDP profiles),
:mod:`.specs` (nodes and ``_INFO`` per driver), :mod:`.allocate`, :mod:`.deviceinfo`,
:mod:`.health` with :mod:`.links` and :mod:`.netlink`, :mod:`.routes`, :mod:`.metrics`,
:mod:`.demo`.
"""

from __future__ import annotations

import logging

from devplugin_core import Plugin, PluginContext, PluginFlag, PluginSpec, Resource
from devplugin_core.toolkit import full_names

from .allocate import PoolAllocator
from .config import SriovNetConfig
from .ddp import DdpSource, SystemDdp
from .demo import demo
from .deviceinfo import DEFAULT_DEVICE_INFO_DIR, DeviceInfoFiles
from .discovery import SriovScanner
from .health import DEFAULT_HEALTH_INTERVAL, PoolHealth
from .metrics import SriovCollector
from .netlink import LinkMonitor
from .pools import PoolSpec

__all__ = ["DEFAULT_RESOURCE_PREFIX", "SPEC", "build"]

log = logging.getLogger("devplugin.sriov_net")

DEFAULT_RESOURCE_PREFIX = "intel.com"
DEFAULT_RESCAN_INTERVAL = 60.0
DEFAULT_NUMVFS_CHECK_INTERVAL = 5.0
LINK_MONITORS = ("netlink", "sysfs")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be a positive number of seconds, got {text!r}")
    return value


def _link_monitor(text: str) -> str:
    if text not in LINK_MONITORS:
        raise ValueError(f"must be one of {', '.join(LINK_MONITORS)}")
    return text


FLAGS = (
    PluginFlag(
        "resource-prefix",
        "default resource prefix of every pool (upstream's flag)",
        DEFAULT_RESOURCE_PREFIX,
    ),
    PluginFlag(
        "device-info-dir",
        "where device-info files for Multus/CNIs are written",
        DEFAULT_DEVICE_INFO_DIR,
    ),
    PluginFlag(
        "link-monitor",
        "PF link state source: netlink events (falls back to sysfs) or sysfs polling only",
        "netlink",
        _link_monitor,
    ),
    PluginFlag(
        "netlink-netns",
        "network namespace whose links netlink watches (a name under "
        "/var/run/netns or a path); default: the plugin's own (hostNetwork)",
        "",
    ),
    PluginFlag(
        "health-interval",
        "seconds between health checks (PF link poll, vanished VFs)",
        DEFAULT_HEALTH_INTERVAL,
        _positive,
    ),
    PluginFlag(
        "rescan-interval", "seconds between full PCI rescans", DEFAULT_RESCAN_INTERVAL, _positive
    ),
    PluginFlag(
        "numvfs-check-interval",
        "seconds between cheap checks of sriov_numvfs, PCI "
        "functions and drivers (a change triggers a rescan)",
        DEFAULT_NUMVFS_CHECK_INTERVAL,
        _positive,
    ),
)


def _pools(config: SriovNetConfig, ctx: PluginContext) -> list[PoolSpec]:
    prefix = ctx.option("resource_prefix") or DEFAULT_RESOURCE_PREFIX
    names = full_names(config.resource_list, prefix)
    return [
        PoolSpec(name, entry.prefix(prefix), entry)
        for name, entry in zip(names, config.resource_list, strict=True)
    ]


def _device_info_dir(ctx: PluginContext) -> str:
    """The flag's directory; the default one lives under the root of a fake host (demo, tests)
    so that nothing is written to the real /var/run."""
    directory = str(ctx.option("device_info_dir") or DEFAULT_DEVICE_INFO_DIR)
    if ctx.host.fake and directory == DEFAULT_DEVICE_INFO_DIR:
        return ctx.host.local(directory)
    return directory


def build(config: SriovNetConfig, ctx: PluginContext) -> Plugin:
    """One resource per configured pool (served even while empty), one scanner for all.
    Tests may pass a ``ddp_source`` option (a :class:`~.ddp.DdpSource`) instead of devlink and
    ddptool."""
    pools = _pools(config, ctx)
    host = ctx.host
    netns = ctx.option("netlink_netns") or ""
    monitor = None
    if (ctx.option("link_monitor") or "netlink") == "netlink":
        monitor = LinkMonitor(netns)  # one netlink thread, all pools
    ddp: DdpSource = ctx.option("ddp_source") or SystemDdp(netns)
    device_info = DeviceInfoFiles(_device_info_dir(ctx))
    interval = float(ctx.option("health_interval") or DEFAULT_HEALTH_INTERVAL)
    resources = tuple(
        Resource(
            spec.name,
            PoolAllocator(host, spec, device_info),
            PoolHealth(host, spec, monitor, interval),
        )
        for spec in pools
    )
    return Plugin(
        SriovScanner(zip(pools, resources, strict=True), ddp),
        resources,
        rescan_interval=float(ctx.option("rescan_interval") or DEFAULT_RESCAN_INTERVAL),
        fingerprint_interval=float(
            ctx.option("numvfs_check_interval") or DEFAULT_NUMVFS_CHECK_INTERVAL
        ),
        collectors=(SriovCollector(host, monitor),),
        description={"pools": [spec.name for spec in pools]},
    )


def on_start(config: SriovNetConfig, ctx: PluginContext) -> None:
    """Remove device-info files our pools left behind (a previous instance, a crash): the CNI
    must never read a stale file for a VF that is handed out again."""
    files = DeviceInfoFiles(_device_info_dir(ctx))
    removed = files.clean([s.name for s in _pools(config, ctx) if s.writes_device_info])
    if removed:
        log.info("removed %d stale device-info files from %s", len(removed), files.directory)


SPEC: PluginSpec[SriovNetConfig] = PluginSpec(
    name="sriov-net",
    summary="exclusive SR-IOV VFs (drop-in for sriov-network-device-plugin)",
    config_model=SriovNetConfig,
    build=build,
    default_config_file="/etc/pcidp/config.json",
    default_metrics_port=9462,
    flags=FLAGS,
    on_start=on_start,
    demo=demo,
    docs="plugins/sriov_net/README.md",
)
