"""rdma-shared: shared-mode RDMA HCAs, a drop-in for Mellanox/NVIDIA k8s-rdma-shared-dev-plugin.

Many pods (macvlan/ipvlan secondary networks) share the same HCAs. Each ``configList`` entry
becomes one extended resource (``<resourcePrefix>/<resourceName>``) advertising ``rdmaHcaMax``
interchangeable slots ``"0"`` … ``"N-1"``; a container that gets any slot gets every
``/dev/infiniband`` char device of every matched HCA (``rdma_cm`` once, permissions ``rw``).

The config file is upstream's JSON, unchanged (default
``/k8s-rdma-shared-dev-plugin/config.json``)::

    {
      "periodicUpdateInterval": 300,          // s; absent -> 60, 0 -> no periodic rescan
      "healthCheckInterval": 0.5,             // s; ours: port-state checks, 0 disables
      "configList": [{
        "resourcePrefix": "rdma",             // default rdma
        "resourceName": "hca_shared_devices_a",
        "rdmaHcaMax": 1000,                   // 0..100000; 0 advertises nothing
        "excludeTopology": false,             // ours: never advertise NUMA
        "selectors": {"vendors": ["15b3"], "deviceIDs": ["1017"], "drivers": ["mlx5_core"],
                      "ifNames": ["ib0"], "linkTypes": ["infiniband"]}
        // or the deprecated "devices": ["ib0", "ib1"] (= selectors.ifNames)
      }]
    }

Beyond upstream: port-state health (all matched HCAs down -> Unhealthy, and back), NUMA
topology when every matched HCA agrees, metrics (``devplugin_rdma_*``), hot-plug rescans, no
duplicate ``rdma_cm``, no ``LinkSetUp`` side effect. See ``README.md`` next to this file.

Modules: :mod:`.config` (model + validation), :mod:`.inventory` (PCI functions -> HCAs and char
devices), :mod:`.discovery` (the scanner: selectors -> shared slots), :mod:`.ports` (live
port/netdev reads), :mod:`.health`, :mod:`.metrics`, :mod:`.preflight` (netns mode),
:mod:`.allocator`,
:mod:`.verbs` (optional pyverbs), :mod:`.demo`.
"""

from __future__ import annotations

from devplugin_core import Plugin, PluginContext, PluginSpec, Resource

from .allocator import SharedSlotAllocator
from .config import RdmaSharedConfig
from .demo import add_demo_hcas
from .discovery import RdmaScanner
from .health import PortHealthChecker
from .metrics import RdmaCollector
from .preflight import check_netns_mode

__all__ = ["SPEC", "build"]


def build(config: RdmaSharedConfig, ctx: PluginContext) -> Plugin:
    """One resource per ``configList`` entry, all filled by one scanner."""
    interval = config.update_interval
    entries = []
    for entry in config.config_list:
        health = None
        if config.health_check_interval > 0:
            health = PortHealthChecker(ctx.host, config.health_check_interval)
        entries.append((entry, Resource(entry.full_name, SharedSlotAllocator(), health)))
    return Plugin(
        RdmaScanner(entries, hotplug=interval > 0),
        tuple(resource for _, resource in entries),
        rescan_interval=float(interval),
        collectors=(RdmaCollector(ctx.host),),
        description={
            "periodicUpdateInterval": interval,
            "healthCheckInterval": config.health_check_interval,
        },
    )


SPEC: PluginSpec[RdmaSharedConfig] = PluginSpec(
    name="rdma-shared",
    summary="shared-mode RDMA HCAs (drop-in for k8s-rdma-shared-dev-plugin)",
    config_model=RdmaSharedConfig,
    build=build,
    default_config_file="/k8s-rdma-shared-dev-plugin/config.json",
    default_metrics_port=9461,
    preflight=check_netns_mode,
    demo=add_demo_hcas,
    docs="plugins/rdma_shared/README.md",
)
