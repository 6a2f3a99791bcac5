"""Fake SR-IOV nodes and helpers shared by the sriov_net tests.

:func:`intel_node` is the reference's §7.4 acceptance node::

    0000:03:00.0  i40e  8086:1572  enp3s0f0   PF, 4 VFs enabled, NUMA 1
    0000:03:02.0  iavf      154c   enp3s0f0v0
    0000:03:02.1  iavf      154c   enp3s0f0v1
    0000:03:02.2  vfio-pci  154c   -          IOMMU group 52
    0000:03:02.3  vfio-pci  154c   -          IOMMU group 53
    0000:05:00.0  igb   8086:1533  eno1       holds the default route

Every plugin run here uses a temporary device-info directory (never /var/run) and, unless a
test says otherwise, sysfs link polling (the netlink path has its own tests in a netns).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devplugin_plugins.sriov_net import SPEC, build
from devplugin_plugins.sriov_net.config import SriovNetConfig
from prometheus_client import CollectorRegistry

from devplugin_core import Device, PluginContext, Scan
from devplugin_core._api import Rejection
from devplugin_core._runtime import PluginRuntime
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin
from devplugin_core.toolkit import decode

PF = "0000:03:00.0"
VF = [f"0000:03:02.{i}" for i in range(4)]
MGMT = "0000:05:00.0"
ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)

SECTION_7_4 = {
    "resourceList": [
        {"resourceName": "sriov_net", "selectors": [{"vendors": ["8086"], "drivers": ["iavf"]}]},
        {
            "resourceName": "sriov_dpdk",
            "selectors": [{"pfNames": ["enp3s0f0#2-3"], "drivers": ["vfio-pci"]}],
        },
        {"resourceName": "sriov_all", "selectors": {"pfNames": ["enp3s0f0"]}},
    ]
}


def default_route(host: FakeHost, *ifaces: str) -> None:
    """Write ``/proc/net/route`` with an IPv4 default route on each of ``ifaces``."""
    rows = "".join(f"{i}\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" for i in ifaces)
    host.write("/proc/net/route", ROUTE_HEADER + rows)


def intel_node(host: FakeHost) -> FakeHost:
    """The §7.4 node of the module docstring."""
    host.add_sriov_pf(
        PF, vendor="8086", device="1572", driver="i40e", totalvfs=64, numa_node=1, netdev="enp3s0f0"
    )
    for index, address in enumerate(VF):
        kernel = index < 2
        host.add_vf(
            PF,
            index,
            address,
            device="154c",
            driver="iavf" if kernel else "vfio-pci",
            netdev=f"enp3s0f0v{index}" if kernel else None,
            iommu_group=None if kernel else 52 + index - 2,
        )
    host.add_pci(MGMT, vendor="8086", device="1533", driver="igb", numa_node=0)
    host.add_netdev(MGMT, "eno1")
    default_route(host, "eno1")
    return host


def add_pf_with_vfs(
    host: FakeHost,
    pf: str,
    netdev: str,
    count: int,
    *,
    numa: int | None = 0,
    vendor: str = "8086",
    device: str = "1572",
    vf_device: str = "154c",
    driver: str = "i40e",
    vf_driver: str = "iavf",
    first_group: int | None = None,
    vf_netdevs: bool = True,
    link_type: str = "ether",
) -> list[str]:
    """A PF whose VFs sit at ``<bus>:02.<i>`` (one bus per PF); returns the VF addresses."""
    host.add_sriov_pf(
        pf,
        vendor=vendor,
        device=device,
        driver=driver,
        totalvfs=max(count, 8),
        numa_node=numa,
        netdev=netdev,
        link_type=link_type,
    )
    bus = pf[:8]
    vfs = []
    for index in range(count):
        address = f"{bus}{2 + index // 8:02x}.{index % 8}"
        group = None if first_group is None else first_group + index
        host.add_vf(
            pf,
            index,
            address,
            device=vf_device,
            driver=vf_driver,
            iommu_group=group,
            netdev=f"{netdev}v{index}" if vf_netdevs else None,
            link_type=link_type,
        )
        vfs.append(address)
    return vfs


def doc(*entries: Mapping[str, Any]) -> dict[str, Any]:
    return {"resourceList": [dict(e) for e in entries]}


def pool(name: str, selectors: Any, **fields: Any) -> dict[str, Any]:
    return {"resourceName": name, "selectors": selectors, **fields}


@dataclass
class Discovered:
    """One scan over every pool of a config (no kubelet)."""

    devices: dict[str, list[Device]]
    rejections: list[Rejection]
    warnings: list[str] = field(default_factory=list)

    def ids(self, name: str) -> list[str]:
        return [d.id for d in self.devices[name]]

    def device(self, name: str, device_id: str) -> Device:
        return next(d for d in self.devices[name] if d.id == device_id)

    def why(self, subject: str) -> list[str]:
        return [r.reason for r in self.rejections if r.subject == subject]


def discover(
    host: FakeHost, document: Mapping[str, Any], prefix: str = "intel.com", **options: Any
) -> Discovered:
    """Decode ``document``, build the plugin and run its scanner once."""
    result = decode(SriovNetConfig, document)
    ctx = PluginContext(host=host.host, options={"resource_prefix": prefix, **options})
    plugin = build(result.value, ctx)
    scan = Scan(host.host, plugin.resources)
    plugin.scanner.scan(scan)
    devices = {name: list(found) for name, (_, found) in scan.tree.items()}
    return Discovered(devices, scan.rejections, result.warnings)


def options(host: FakeHost, **overrides: Any) -> dict[str, Any]:
    """Plugin options for a test run: temp device-info dir, sysfs link polling."""
    opts: dict[str, Any] = {
        "device_info_dir": str(devinfo_dir(host)),
        "link_monitor": "sysfs",
        "health_interval": 30.0,
        "numvfs_check_interval": 30.0,
    }
    opts.update(overrides)
    return opts


def devinfo_dir(host: FakeHost) -> Path:
    return host.root.parent / "devinfo"


@contextlib.asynccontextmanager
async def serve(
    host: FakeHost,
    kubelet: FakeKubelet,
    document: Mapping[str, Any],
    registry: CollectorRegistry | None = None,
    **overrides: Any,
) -> AsyncIterator[PluginRuntime[Any]]:
    """Run sriov-net on ``host`` against ``kubelet`` until the block exits."""
    async with run_plugin(
        SPEC,
        host,
        kubelet,
        config=document,
        registry=registry,
        plugin_options=options(host, **overrides),
    ) as runtime:
        yield runtime


def info(response: Any, env_name: str) -> dict[str, Any]:
    """The decoded ``_INFO`` env var of an Allocate response."""
    parsed: dict[str, Any] = json.loads(response.envs[env_name])
    return parsed


def specs(response: Any) -> list[tuple[str, str, str]]:
    """(host path, container path, permissions) of an Allocate response, in order."""
    return [(d.host_path, d.container_path, d.permissions) for d in response.devices]


def ids(devices: Sequence[Any]) -> list[str]:
    return [d.ID for d in devices]
