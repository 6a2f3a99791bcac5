"""A realistic SR-IOV node for ``devplugin demo``: Intel kernel and DPDK VFs, Mellanox RDMA VFs."""

from __future__ import annotations

from typing import Any

__all__ = ["PROC_NET_ROUTE", "demo"]

#: ``eno1`` holds the default route (the management NIC the plugin must never hand out).
PROC_NET_ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eno1\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    "eno1\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
)


def demo(host: Any) -> dict[str, Any]:
    """Add the devices to a ``devplugin_core.testing.FakeHost``; return the config document."""
    host.add_pci("0000:01:00.0", vendor="8086", device="1533", driver="igb", numa_node=0)
    host.add_netdev("0000:01:00.0", "eno1")
    host.write("/proc/net/route", PROC_NET_ROUTE)

    intel = host.add_sriov_pf(
        "0000:3b:00.0",
        vendor="8086",
        device="1572",
        driver="i40e",
        totalvfs=64,
        numa_node=0,
        netdev="ens1f0",
        parents=["0000:3a:00.0"],
    )
    for index in range(4):
        kernel = index < 2
        host.add_vf(
            intel,
            index,
            f"0000:3b:02.{index}",
            device="154c",
            driver="iavf" if kernel else "vfio-pci",
            netdev=f"ens1f0v{index}" if kernel else None,
            iommu_group=None if kernel else 60 + index,
        )
    host.add_dev("/dev/vhost-net")
    host.add_dev("/dev/net/tun")

    mlx = host.add_sriov_pf(
        "0000:5e:00.0",
        vendor="15b3",
        device="1017",
        driver="mlx5_core",
        totalvfs=8,
        numa_node=1,
        netdev="ens2f0np0",
        parents=["0000:5d:00.0"],
    )
    host.add_rdma(mlx, "mlx5_0")
    for index in range(2):
        vf = host.add_vf(
            mlx,
            index,
            f"0000:5e:00.{index + 2}",
            device="1018",
            driver="mlx5_core",
            netdev=f"ens2f0v{index}",
        )
        host.add_rdma(vf, f"mlx5_{index + 2}")
    host.add_rdma_cm()

    return {
        "resourceList": [
            {
                "resourceName": "intel_sriov_netdevice",
                "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["iavf"]},
            },
            {
                "resourceName": "intel_sriov_dpdk",
                "selectors": {
                    "vendors": ["8086"],
                    "drivers": ["vfio-pci"],
                    "pfNames": ["ens1f0#2-3"],
                    "needVhostNet": True,
                },
            },
            {
                "resourceName": "mlnx_sriov_rdma",
                "resourcePrefix": "nvidia.com",
                "selectors": {"vendors": ["15b3"], "devices": ["1018"], "isRdma": True},
                "additionalInfo": {"*": {"fabric": "roce"}},
            },
        ]
    }
