"""rebel-npu: Rebellions ATOM / REBEL NPUs (``/dev/rblnN``) for Kubernetes.

Runs with no config (``rebellions.ai/ATOM`` and ``rebellions.ai/REBEL``) or with upstream's
``resourceList`` file plus our keys; see ``README.md`` in this directory. Module map:

* :mod:`.config` — the config model; :mod:`.products` — PCI IDs to products and families;
* :mod:`.discovery` — PCI scan, pools, ``pools`` files, tool mounts, the shared inventory;
* :mod:`.allocate` — Allocate contents; :mod:`.topology` — preferred allocation;
* :mod:`.rsd` — per-allocation RSD groups; :mod:`.smi` — running and parsing ``rbln-smi``;
* :mod:`.health` — health checks; :mod:`.metrics` — ``devplugin_npu_*``;
* :mod:`.generic` — vendor-neutral helpers (candidates for the core);
* :mod:`.testing` / :mod:`.fakesmi` — fake-host recipes and a fake ``rbln-smi`` for tests.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from devplugin_core import (
    DevicePluginError,
    PluginContext,
    PluginSpec,
    Resource,
    ResourceSet,
)

from .allocate import NpuAllocator
from .config import RebelNpuConfig
from .discovery import Inventory, NpuDiscoverer
from .health import NpuHealth
from .metrics import NpuCollector, Served
from .smi import RblnSmi

__all__ = ["SPEC", "RebelNpuConfig", "build", "preflight"]

log = logging.getLogger("devplugin.rebel_npu")


def build(config: RebelNpuConfig, ctx: PluginContext) -> ResourceSet:
    """One resource per pool; the pools share one inventory (scan, tools, rbln-smi, RSD)."""
    inventory = Inventory(config, ctx.host)
    resources = []
    served = []
    for pool in inventory.pools:
        discoverer = NpuDiscoverer(inventory, pool)
        health = NpuHealth(ctx.host, config.health, inventory.monitor)
        resources.append(
            Resource(
                pool.full_name(),
                discoverer,
                NpuAllocator(pool, inventory.tools, inventory.rsd),
                health,
                mount_allowlist=inventory.tools.allowlist,
                allocate_timeout=config.rsd_timeout + 2.0,
            )
        )
        served.append(Served(pool.full_name(), discoverer, health))
    return ResourceSet(
        tuple(resources),
        collectors=(NpuCollector(served, inventory.monitor, inventory.rsd),),
        description={
            "rsdGroups": config.rsd_groups,
            "rblnSmi": config.smi_executable(ctx.host.root) or "none",
        },
    )


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
    summary="Rebellions ATOM/REBEL NPUs with rbln-stat/rbln-smi mounts and RSD groups",
    config_model=RebelNpuConfig,
    build=build,
    config_optional=True,
    default_metrics_port=9463,
    preflight=preflight,
    demo=_demo,
    docs="plugins/rebel_npu/README.md",
)
