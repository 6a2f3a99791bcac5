"""rebel-npu: Rebellions ATOM / REBEL NPUs (``/dev/rblnN``) for Kubernetes.

Runs with no config (``rebellions.ai/ATOM`` and ``rebellions.ai/REBEL`` for NPUs bound to
``rebellions``, ``rebellions.ai/ATOM_PT``, ``ATOM_CA22_PT``, ``REBEL_PT``... per product for NPUs
bound to ``vfio-pci``, each while the node has such cards) or with upstream's ``resourceList``
file plus our keys; see ``README.md`` in this directory. Module map:

* :mod:`.config` — the config model; :mod:`.products` — PCI IDs to products and families;
* :mod:`.discovery` — the scanner (PCI scan, pools, ``pools`` files, tool mounts) and the
  per-device payload :class:`~.discovery.NpuInfo`;
* :mod:`.passthrough` — NPUs bound to ``vfio-pci`` (VFIO nodes, IOMMU group viability);
* :mod:`.allocate` — Allocate contents and preferred allocation;
* :mod:`.rsd` — per-allocation RSD groups; :mod:`.smi` — running and parsing ``rbln-smi``;
* :mod:`.health` — health checks; :mod:`.metrics` — ``devplugin_npu_*``;
* :mod:`.testing` / :mod:`.fakesmi` — fake-host recipes and a fake ``rbln-smi`` for tests.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from devplugin_core import DevicePluginError, Plugin, PluginContext, PluginSpec, Resource
from devplugin_core.toolkit import hex_id_warnings

from .allocate import NpuAllocator
from .config import PoolConfig, RebelNpuConfig
from .discovery import NpuPool, NpuScanner, Tool, ToolMounts, default_pools, passthrough_pool
from .health import NpuHealth
from .metrics import NpuCollector
from .passthrough import VFIO_DRIVER
from .rsd import RsdGroups
from .smi import RblnSmi, SmiMonitor

__all__ = ["SPEC", "RebelNpuConfig", "build", "preflight"]

log = logging.getLogger("devplugin.rebel_npu")


def build(config: RebelNpuConfig, ctx: PluginContext) -> Plugin:
    """One scanner for every pool; the pools share the tools, rbln-smi, RSD policy and health.

    Configured pools are served even while empty. Zero-config families are dynamic: a family
    is served while the node has devices of it (a card appearing later is added at the next
    rescan).
    """
    host = ctx.host
    executable = config.smi_executable(host.root)
    smi = RblnSmi(executable, config.rbln_smi_timeout) if executable else None
    polled = smi if config.rbln_smi_interval > 0 else None
    monitor = SmiMonitor(polled, config.rbln_smi_interval or 1.0)
    rsd = RsdGroups(config.rsd_groups, smi, host, config.rsd_lock_file, config.rsd_timeout)
    tools = ToolMounts(
        [
            Tool("rbln-stat", config.rbln_stat_host_path, "/usr/bin/rbln-stat"),
            Tool("rbln-smi", config.rbln_smi_host_path, "/usr/bin/rbln-smi"),
        ]
    )
    health = NpuHealth(host, config.health, monitor)
    _warn_about_ids(config)
    zero_config = not config.resource_list

    def pool(entry: PoolConfig) -> NpuPool:
        passthrough_only = all(s.drivers == (VFIO_DRIVER,) for s in entry.selectors)
        return NpuPool(
            entry,
            Resource(
                entry.full_name(),
                NpuAllocator(entry, rsd, passthrough_only=passthrough_only),
                health,
                mount_allowlist=() if passthrough_only else tools.allowlist,
                allocate_timeout=config.rsd_timeout + 2.0,
            ),
        )

    pools = [pool(entry) for entry in config.resource_list or default_pools()]
    scanner = NpuScanner(
        pools,
        tools,
        rsd,
        passthrough=(lambda name: pool(passthrough_pool(name))) if zero_config else None,
    )
    return Plugin(
        scanner,
        resources=() if zero_config else tuple(p.resource for p in pools),
        collectors=(NpuCollector(monitor, rsd),),
        description={
            "resources": (
                "one per family present (ATOM, REBEL) bound to rebellions, one per product "
                "present bound to vfio-pci (ATOM_PT, ATOM_CA22_PT, REBEL_PT...)"
                if zero_config
                else ", ".join(p.resource.name for p in pools)
            ),
            "rsdGroups": config.rsd_groups,
            "rblnSmi": config.smi_executable(host.root) or "none",
        },
    )


def _warn_about_ids(config: RebelNpuConfig) -> None:
    for i, pool in enumerate(config.resource_list):
        for j, s in enumerate(pool.selectors):
            base = f"resourceList[{i}].selectors[{j}]"
            for warning in (
                *hex_id_warnings(s.vendors, f"{base}.vendors"),
                *hex_id_warnings(s.devices, f"{base}.devices"),
            ):
                log.warning("config: %s", warning)


def preflight(config: RebelNpuConfig, ctx: PluginContext) -> None:
    """``rsdGroups: create`` refuses to start without a working ``rbln-smi -g -j``."""
    if config.rsd_groups != "create":
        return
    executable = config.smi_executable(ctx.host.root)
    problem = (
        RblnSmi(executable, config.rbln_smi_timeout).probe()
        if executable
        else "no rbln-smi configured (rblnSmiPath and rblnSmiHostPath are empty)"
    )
    if problem is None:
        lock_dir = os.path.dirname(config.rsd_lock_file) or "/"
        if not os.path.isdir(lock_dir):
            problem = f"the directory of rsdLockFile {config.rsd_lock_file} does not exist"
    if problem is not None:
        raise DevicePluginError(
            f"rsdGroups is 'create' but {problem}; refusing to start (use rsdGroups: auto or "
            "off to run without per-allocation RSD groups)"
        )


def _demo(host: Any) -> dict[str, Any]:
    from .testing import demo_host

    return demo_host(host)


SPEC: PluginSpec[RebelNpuConfig] = PluginSpec(
    name="rebel-npu",
    summary=(
        "Rebellions ATOM/REBEL NPUs with rbln-stat/rbln-smi mounts and RSD groups, "
        "and vfio-pci passthrough for VMs"
    ),
    config_model=RebelNpuConfig,
    build=build,
    config_optional=True,
    default_metrics_port=9463,
    preflight=preflight,
    demo=_demo,
    docs="plugins/rebel_npu/README.md",
)
