"""``devplugin demo``: a simulated node with RDMA HCAs and the config that serves them."""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_HCAS", "add_demo_hcas"]

#: (PCI address, netdev, RDMA device, NUMA node, device ID, link layer): ConnectX-5 RoCE PFs on
#: both sockets and one ConnectX-6 InfiniBand HCA.
DEMO_HCAS = (
    ("0000:5e:00.0", "enp94s0f0np0", "mlx5_0", 0, "1017", "Ethernet"),
    ("0000:d8:00.0", "enp216s0f0np0", "mlx5_1", 1, "1017", "Ethernet"),
    ("0000:af:00.0", "ibp175s0", "mlx5_2", 1, "101b", "InfiniBand"),
)


def add_demo_hcas(host: Any) -> dict[str, Any]:
    """Add the demo HCAs and ``rdma_cm`` to a ``devplugin_core.testing.FakeHost``; return the
    config document (one RoCE and one InfiniBand resource)."""
    for address, netdev, ibdev, numa, device, layer in DEMO_HCAS:
        if address in host.pci:
            continue  # another plugin's demo already placed a device here
        host.add_pci(
            address,
            vendor="15b3",
            device=device,
            driver="mlx5_core",
            numa_node=numa,
            class_code=0x020700 if layer == "InfiniBand" else 0x020000,
        )
        host.add_netdev(
            address, netdev, link_type="infiniband" if layer == "InfiniBand" else "ether"
        )
        host.add_rdma(
            address,
            ibdev,
            link_layer=layer,
            hca_type="MT4123" if layer == "InfiniBand" else "MT4119",
        )
    host.add_rdma_cm()
    return {
        "periodicUpdateInterval": 60,
        "configList": [
            {
                "resourceName": "roce_shared",
                "rdmaHcaMax": 63,
                "selectors": {"vendors": ["15b3"], "linkTypes": ["ether"]},
            },
            {
                "resourceName": "ib_shared",
                "rdmaHcaMax": 16,
                "selectors": {"vendors": ["15b3"], "linkTypes": ["infiniband"]},
            },
        ],
    }
