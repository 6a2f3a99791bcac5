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


# -- Scalable Functions, vDPA, DDP -----------------------------------------------------------
BF2 = "0000:03:00.0"  # BlueField-2 port 0 (uplink p0), see bluefield_node()
BF2_P1 = "0000:03:00.1"


def bluefield_node(host: FakeHost) -> FakeHost:
    """A BlueField-2 (15b3:a2d6, mlx5_core) with both ports in switchdev mode::

        0000:03:00.0  p0  NUMA 0   mlx5_core.eth.0, mlx5_core.rdma.0   (not SFs)
            mlx5_core.sf.2  sfnum 0   p0s0
            mlx5_core.sf.3  sfnum 1   p0s1   RDMA mlx5_2
            mlx5_core.sf.4  sfnum 5   p0s5
            mlx5_core.sf.5  sfnum 88  p0s88
        0000:03:00.1  p1  NUMA 0
            mlx5_core.sf.6  sfnum 2   p1s2

    The auxiliary device index (``sf.N``) and the SF number differ, as on real hosts.
    """
    for address, uplink in ((BF2, "p0"), (BF2_P1, "p1")):
        host.add_sriov_pf(
            address,
            vendor="15b3",
            device="a2d6",
            driver="mlx5_core",
            totalvfs=8,
            numa_node=0,
            netdev=uplink,
        )
        host.set_switchdev(uplink, port_name=f"p{address[-1]}")
    host.add_aux_device(BF2, "mlx5_core.eth.0")
    host.add_aux_device(BF2, "mlx5_core.rdma.0")
    host.add_sf(BF2, 2, sfnum=0)
    host.add_sf(BF2, 3, sfnum=1, rdma="mlx5_2")
    host.add_sf(BF2, 4, sfnum=5)
    host.add_sf(BF2, 5, sfnum=88)
    host.add_sf(BF2_P1, 6, sfnum=2)
    host.add_rdma_cm()
    return host


def sf_pool(name: str, selectors: Any, **fields: Any) -> dict[str, Any]:
    return {"resourceName": name, "deviceType": "auxNetDevice", "selectors": selectors, **fields}


CX6DX_PF = "0000:65:00.0"
CX6DX_VF = ["0000:65:00.2", "0000:65:00.3", "0000:65:00.4"]


def vdpa_node(host: FakeHost) -> FakeHost:
    """A ConnectX-6 Dx PF (15b3:101d) with three VFs (101e, mlx5_core): the first has a vhost
    vDPA device ``vdpa0`` whose char device is ``vhost-vdpa-7``, the second a virtio one
    (``vdpa1``, netdev ``eth7`` in the host), the third none."""
    host.add_sriov_pf(
        CX6DX_PF,
        vendor="15b3",
        device="101d",
        driver="mlx5_core",
        totalvfs=8,
        numa_node=1,
        netdev="ens2f0np0",
    )
    for index, vf in enumerate(CX6DX_VF):
        host.add_vf(
            CX6DX_PF, index, vf, device="101e", driver="mlx5_core", netdev=f"ens2f0v{index}"
        )
    host.add_vdpa(CX6DX_VF[0], "vhost", name="vdpa0", vhost_index=7)
    host.add_vdpa(CX6DX_VF[1], "virtio", name="vdpa1", netdev="eth7")
    return host


class FakeDdp:
    """A :class:`~devplugin_plugins.sriov_net.ddp.DdpSource` over ``FakeHost.devlink_info``
    (what ``devlink dev info`` would report) and an optional ddptool table; ``broken`` makes
    devlink fail. Counts the calls."""

    def __init__(
        self,
        host: FakeHost,
        ddptool: Mapping[str, str] | None = None,
        broken: str = "",
    ) -> None:
        self.host = host
        self.tool = ddptool
        self.broken = broken
        self.dumps = 0
        self.tool_calls: list[str] = []

    def devlink_app_names(self) -> Mapping[str, str]:
        from devplugin_plugins.sriov_net.ddp import DdpError

        self.dumps += 1
        if self.broken:
            raise DdpError(self.broken)
        return {
            address: info["fw.app.name"]
            for address, info in self.host.devlink_info.items()
            if "fw.app.name" in info
        }

    def ddptool(self, address: str) -> str | None:
        self.tool_calls.append(address)
        if self.tool is None:
            return None
        return self.tool.get(address, "")
