"""Discovery: the reference's scenario tables A to D on generated fake hosts.

Upstream's tables are mock-based; on a real sysfs tree a few cells need a host that can exist:
each device is a VF of its own PF, link types come from a VF netdev, the reference's ``fake``
link type becomes ``none`` (ARPHRD 65534) and ``other``/``other2`` become ``gre``/``sit``.
The ``ddpProfiles`` and ``vdpaType`` rows are in tests/sriov_net/test_ddp.py and test_vdpa.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from devplugin_plugins.sriov_net.discovery import VfInfo
from devplugin_plugins.sriov_net.specs import Needs

from devplugin_core.testing import FakeHost

from .helpers import MGMT, PF, SECTION_7_4, VF, add_pf_with_vfs, discover, doc, intel_node, pool

# Table A: (vf, vendor, device, driver, pf, pf netdev, vf link type, rdma)
TABLE_A = [
    ("0000:03:02.0", "8086", "abcd", "igb_uio", "0000:86:00.0", "eth0", "ether", False),
    ("0000:03:02.1", "8086", "123a", "igb_uio", "0000:86:00.1", "eth0", "infiniband", True),
    ("0000:03:02.2", "1111", "abcd", "igb_uio", "0000:86:00.2", "eth1", "ether", False),
    ("0000:03:02.3", "2222", "2222", "iavf", "0000:86:00.3", "net0", "ether", False),
    ("0000:03:02.4", "3333", "1024", "vfio-pci", "0000:86:00.4", "net0", "none", True),
]
D = [row[0] for row in TABLE_A]


def table_a_host(host: FakeHost) -> FakeHost:
    """Two PFs may show the same netdev name here (upstream's mocks do); each VF has a netdev
    carrying its link type."""
    for n, (vf, vendor, device, driver, pf, pf_net, link, rdma) in enumerate(TABLE_A):
        host.add_sriov_pf(pf, vendor=vendor, device="1572", driver="pfdrv", totalvfs=8, netdev=None)
        path = host.pci[pf].path
        host.write(f"{path}/net/{pf_net}/type", "1\n")
        host.pci[pf].netdevs.append(pf_net)
        host.add_vf(
            pf,
            0,
            vf,
            device=device,
            driver=driver,
            vendor=vendor,
            netdev=f"vf{n}",
            link_type="infiniband" if link == "infiniband" else "ether",
        )
        if link == "none":
            host.write(f"{host.pci[vf].path}/net/vf{n}/type", "65534\n")
        if rdma:
            host.add_rdma(vf, f"mlx5_{n}")
    return host


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"vendors": ["8086"]}, [D[0], D[1]]),
        ({"devices": ["abcd"]}, [D[0], D[2]]),
        ({"drivers": ["igb_uio"]}, [D[0], D[1], D[2]]),
        ({"pciAddresses": ["0000:03:02.0", "0000:03:02.3"]}, [D[0], D[3]]),
        ({"pfNames": ["net0", "eth1"]}, [D[2], D[3], D[4]]),
        ({"rootDevices": ["0000:86:00.0", "0000:86:00.4"]}, [D[0], D[4]]),
        ({"linkTypes": ["infiniband"]}, [D[1]]),
        ({"linkTypes": ["infiniband", "none"]}, [D[1], D[4]]),
        ({"isRdma": True}, [D[1], D[4]]),
        ({"isRdma": False}, D),
        ({}, D),
        ({"vendors": ["8086"], "drivers": ["igb_uio"], "isRdma": True}, [D[1]]),
        ({"vendors": ["None"]}, []),
    ],
)
def test_table_a_selector_matrix(
    fake_host: FakeHost, selector: dict[str, Any], expected: list[str]
) -> None:
    found = discover(table_a_host(fake_host), doc(pool("p", selector)))
    assert found.ids("intel.com/p") == expected


def test_table_a_second_selector_object(fake_host: FakeHost) -> None:
    table_a_host(fake_host)
    found = discover(fake_host, doc(pool("p", [{"vendors": ["None"]}, {"vendors": ["8086"]}])))
    assert found.ids("intel.com/p") == [D[0], D[1]]
    assert "selector 0: vendors ['None'] does not include '1111'" in found.why(D[2])[0]


def test_matching_is_exact_like_upstream(fake_host: FakeHost) -> None:
    table_a_host(fake_host)
    for selector in (
        {"vendors": ["0x8086"]},
        {"devices": ["ABCD"]},
        {"pciAddresses": ["03:02.0"]},
        {"drivers": ["IGB_UIO"]},
    ):
        assert discover(fake_host, doc(pool("p", selector))).ids("intel.com/p") == []


@pytest.mark.parametrize(
    ("pf", "indices", "selected"),
    [
        ("ens0", [0], [0]),
        ("eth0", [0], []),
        ("ens2f0", [0, 1], [1]),
        ("ens2f1", list(range(8)), [0, 3, 4, 5, 7]),
    ],
)
def test_table_b_pfnames_ranges(
    fake_host: FakeHost, pf: str, indices: list[int], selected: list[int]
) -> None:
    vfs = add_pf_with_vfs(fake_host, "0000:86:00.0", pf, len(indices))
    found = discover(fake_host, doc(pool("p", {"pfNames": ["ens0", "ens2f0#1", "ens2f1#0,3-5,7"]})))
    assert found.ids("intel.com/p") == [vfs[i] for i in selected]


def test_table_b_pfnames_are_case_insensitive_and_first_item_decides(fake_host: FakeHost) -> None:
    vfs = add_pf_with_vfs(fake_host, "0000:86:00.0", "ens2f1", 4)
    found = discover(fake_host, doc(pool("p", {"pfNames": ["ENS2F1#1", "ens2f1#0-3"]})))
    assert found.ids("intel.com/p") == [vfs[1]]


@pytest.mark.parametrize(
    ("pf", "selected"),
    [
        ("0000:86:00.0", list(range(8))),
        ("0000:a0:00.0", []),
        ("0000:86:00.1", [1]),
        ("0000:86:00.2", [0, 1, 2, 5, 7]),
    ],
)
def test_table_b_root_devices_ranges(fake_host: FakeHost, pf: str, selected: list[int]) -> None:
    vfs = add_pf_with_vfs(fake_host, pf, "ens9", 8)
    selector = {"rootDevices": ["0000:86:00.0", "0000:86:00.1#1", "0000:86:00.2#0-2,5,7"]}
    found = discover(fake_host, doc(pool("p", selector)))
    assert found.ids("intel.com/p") == [vfs[i] for i in selected]


def test_vf_without_index_never_matches_a_range(fake_host: FakeHost) -> None:
    vfs = add_pf_with_vfs(fake_host, "0000:86:00.0", "ens2f0", 2)
    fake_host.remove(f"{fake_host.pci['0000:86:00.0'].path}/virtfn1")  # funcID -1
    found = discover(
        fake_host,
        doc(pool("ranged", {"pfNames": ["ens2f0#0-7"]}), pool("all", {"pfNames": ["ens2f0"]})),
    )
    assert found.ids("intel.com/ranged") == [vfs[0]]
    assert found.ids("intel.com/all") == [vfs[1]]


def test_devices_without_pf_never_match_pf_selectors(fake_host: FakeHost) -> None:
    fake_host.add_pci(
        "0000:00:04.0", vendor="8086", device="154c", driver="vfio-pci", iommu_group=3
    )  # a VF passed into a VM: no physfn
    found = discover(
        fake_host,
        doc(
            pool("pf", {"pfNames": ["ens1"]}),
            pool("root", {"rootDevices": ["0000:00:00.0"]}),
            pool("addr", {"pciAddresses": ["0000:00:04.0"]}),
        ),
    )
    assert found.ids("intel.com/pf") == found.ids("intel.com/root") == []
    assert found.ids("intel.com/addr") == ["0000:00:04.0"]
    device = found.device("intel.com/addr", "0000:00:04.0")
    assert "pf" not in device.attributes


# Table C: (vf, driver, pf, pf netdev, link type)
TABLE_C = [
    ("0000:03:02.0", "iavf", "0000:86:00.0", "enp2s0f2", "ether"),
    ("0000:03:02.1", "iavf", "0000:86:00.1", "ens0", "infiniband"),
    ("0000:03:02.2", "vfio-pci", "0000:86:00.2", "eth0", "gre"),
    ("0000:03:02.3", "vfio-pci", "0000:86:00.3", "net2", "sit"),
]
ARPHRD = {"ether": 1, "infiniband": 32, "gre": 778, "sit": 776}
ALL_OF_FIRST = {
    "drivers": ["iavf", "vfio-pci"],
    "pciAddresses": ["0000:03:02.0"],
    "pfNames": ["enp2s0f2"],
    "rootDevices": ["0000:86:00.0"],
    "linkTypes": ["ether"],
}
ALL_OF_LAST = {
    "drivers": ["vfio-pci"],
    "pciAddresses": ["0000:03:02.3"],
    "pfNames": ["net2"],
    "rootDevices": ["0000:86:00.3"],
    "linkTypes": ["sit"],
}


def table_c_host(host: FakeHost) -> FakeHost:
    for n, (vf, driver, pf, pf_net, link) in enumerate(TABLE_C):
        host.add_sriov_pf(
            pf, vendor="8086", device="1572", driver="i40e", totalvfs=8, netdev=pf_net
        )
        host.add_vf(pf, 0, vf, device="1111", driver=driver, netdev=f"vf{n}", iommu_group=10 + n)
        host.write(f"{host.pci[vf].path}/net/vf{n}/type", f"{ARPHRD[link]}\n")
    return host


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (ALL_OF_FIRST, ["0000:03:02.0"]),
        ([ALL_OF_FIRST], ["0000:03:02.0"]),
        ([ALL_OF_FIRST, ALL_OF_LAST], ["0000:03:02.0", "0000:03:02.3"]),
        ([ALL_OF_LAST, ALL_OF_FIRST], ["0000:03:02.0", "0000:03:02.3"]),
    ],
)
def test_table_c_multi_selector_pools(
    fake_host: FakeHost, selectors: Any, expected: list[str]
) -> None:
    found = discover(table_c_host(fake_host), doc(pool("p", selectors)))
    assert found.ids("intel.com/p") == expected


def test_table_c_exclusive_pools_first_wins(fake_host: FakeHost) -> None:
    table_c_host(fake_host)
    found = discover(fake_host, doc(pool("a", ALL_OF_FIRST), pool("b", [ALL_OF_FIRST])))
    assert found.ids("intel.com/a") == ["0000:03:02.0"]
    assert found.ids("intel.com/b") == []
    rejection = next(r for r in found.rejections if r.resource == "intel.com/b")
    assert rejection.subject == "0000:03:02.0" and "intel.com/a comes first" in rejection.reason


def test_pkeys_compare_the_default_pkey_of_infiniband_vfs(fake_host: FakeHost) -> None:
    table_c_host(fake_host)
    fake_host.add_rdma("0000:03:02.1", "mlx5_1", link_layer="InfiniBand")
    path = fake_host.pci["0000:03:02.1"].path
    fake_host.write(f"{path}/infiniband/mlx5_1/ports/1/pkeys/0", "0x8002\n")
    found = discover(
        fake_host, doc(pool("ib", {"pKeys": ["0x8002"]}), pool("other", {"pKeys": ["0xffff"]}))
    )
    assert found.ids("intel.com/ib") == ["0000:03:02.1"]
    assert found.ids("intel.com/other") == []


def test_each_device_lands_in_at_most_one_pool(fake_host: FakeHost) -> None:
    table_a_host(fake_host)
    found = discover(
        fake_host,
        doc(pool("rdma", {"isRdma": True}), pool("intel", {"vendors": ["8086"]}), pool("rest", {})),
    )
    assert found.ids("intel.com/rdma") == [D[1], D[4]]
    assert found.ids("intel.com/intel") == [D[0]]
    assert found.ids("intel.com/rest") == [D[2], D[3]]


def test_section_7_4_pools_and_exclusions(fake_host: FakeHost) -> None:
    found = discover(intel_node(fake_host), SECTION_7_4)
    assert found.ids("intel.com/sriov_net") == VF[:2]
    assert found.ids("intel.com/sriov_dpdk") == VF[2:]
    assert found.ids("intel.com/sriov_all") == []
    assert found.why(PF) == ["SR-IOV PF with 4 VFs enabled (its VFs are pooled instead)"]
    assert found.why(MGMT) == ["holds the node's default route (eno1)"]
    for device in (*found.devices["intel.com/sriov_net"], *found.devices["intel.com/sriov_dpdk"]):
        assert device.numa_nodes == (1,)
        assert device.attributes["pf"] == PF and device.attributes["pfName"] == "enp3s0f0"
    assert found.device("intel.com/sriov_dpdk", VF[3]).attributes["vf"] == "3"
    assert found.device("intel.com/sriov_dpdk", VF[3]).payload_as(VfInfo) == VfInfo(
        driver="vfio-pci", pf=PF, pf_netdev="enp3s0f0", vf_index=3, numa_node=1, needs=Needs()
    )


def test_table_d_discovery_exclusions(fake_host: FakeHost) -> None:
    fake_host.add_sriov_pf("0000:00:00.1", vendor="8086", device="1572", driver="fake", totalvfs=64)
    fake_host.set_numvfs("0000:00:00.1", 32)
    fake_host.add_pci("0000:00:00.2", vendor="8086", device="1572", driver="fake")  # no SR-IOV
    fake_host.add_sriov_pf(
        "0000:00:00.3", vendor="8086", device="1572", driver="fake", totalvfs=8
    )  # SR-IOV capable, no VFs: a whole PF can be pooled
    fake_host.add_pci("0000:00:00.4", vendor="8086", device="1572")  # no driver
    fake_host.add_pci("0000:00:00.5", vendor="8086", device="1572", driver="fake")
    path = fake_host.pci["0000:00:00.5"].path
    fake_host.write(f"{path}/class", "completely unparsable\n")
    fake_host.write(f"{path}/modalias", "pci:short\n")
    found = discover(fake_host, doc(pool("all", {})))
    assert found.ids("intel.com/all") == ["0000:00:00.2", "0000:00:00.3"]
    assert "VFs enabled" in found.why("0000:00:00.1")[0]
    assert found.why("0000:00:00.4") == ["no driver bound"]


def test_ipv6_default_route_is_excluded_too(fake_host: FakeHost) -> None:
    fake_host.add_pci("0000:05:00.0", vendor="8086", device="1533", driver="igb")
    fake_host.add_netdev("0000:05:00.0", "eno1")
    fake_host.add_pci("0000:05:00.1", vendor="8086", device="1533", driver="igb")
    fake_host.add_netdev("0000:05:00.1", "eno2")
    fake_host.write(
        "/proc/net/ipv6_route",
        (
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
            "fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eno1\n"
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
            "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
            "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 "
            "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eno2\n"
        ),
    )
    found = discover(fake_host, doc(pool("nics", {"drivers": ["igb"]})))
    assert found.ids("intel.com/nics") == ["0000:05:00.1"]
    assert found.why("0000:05:00.0") == ["holds the node's default route (eno1)"]


def test_non_default_routes_do_not_exclude(fake_host: FakeHost) -> None:
    fake_host.add_pci("0000:05:00.0", vendor="8086", device="1533", driver="igb")
    fake_host.add_netdev("0000:05:00.0", "eno1")
    fake_host.write(
        "/proc/net/route",
        (
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            "eno1\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
        ),
    )
    assert discover(fake_host, doc(pool("n", {}))).ids("intel.com/n") == ["0000:05:00.0"]


def test_accelerator_pools_use_class_0x12_without_pf_filters(fake_host: FakeHost) -> None:
    fake_host.add_sriov_pf(
        "0000:af:00.0",
        vendor="8086",
        device="0d5c",
        driver="vfio-pci",
        totalvfs=16,
        class_code=0x120000,
        iommu_group=80,
    )
    fake_host.add_vf(
        "0000:af:00.0", 0, "0000:b0:00.0", device="0d5d", driver="vfio-pci", iommu_group=81
    )
    fake_host.add_vf("0000:af:00.0", 1, "0000:b0:00.1", device="0d5d", driver=None)
    intel_node(fake_host)
    found = discover(
        fake_host,
        doc(
            pool("fec", {"vendors": ["8086"]}, deviceType="accelerator"),
            pool("nics", {"vendors": ["8086"]}),
        ),
    )
    assert found.ids("intel.com/fec") == ["0000:af:00.0", "0000:b0:00.0"]
    assert found.why("0000:b0:00.1") == ["no driver bound"]
    assert found.ids("intel.com/nics") == VF


def test_acpi_index_selector(fake_host: FakeHost) -> None:
    fake_host.add_pci("0000:05:00.0", vendor="8086", device="1533", driver="igb", acpi_index=1)
    fake_host.add_pci("0000:05:00.1", vendor="8086", device="1533", driver="igb", acpi_index=2)
    found = discover(fake_host, doc(pool("n", {"acpiIndexes": ["2"]})))
    assert found.ids("intel.com/n") == ["0000:05:00.1"]


def test_switchdev_pf_name_is_the_uplink_not_a_representor(fake_host: FakeHost) -> None:
    vfs = add_pf_with_vfs(
        fake_host,
        "0000:3b:00.0",
        "p0",
        2,
        vendor="15b3",
        device="101d",
        vf_device="101e",
        driver="mlx5_core",
        vf_driver="mlx5_core",
    )
    path = fake_host.pci["0000:3b:00.0"].path
    for name, port in (("eth0", "pf0vf0"), ("eth1", "pf0vf1"), ("p0", "p0")):
        if name != "p0":
            fake_host.add_netdev("0000:3b:00.0", name)
        fake_host.write(f"{path}/net/{name}/phys_port_name", f"{port}\n")
    found = discover(fake_host, doc(pool("p", {"pfNames": ["p0"]})))
    assert found.ids("intel.com/p") == vfs
    assert found.device("intel.com/p", vfs[0]).attributes["pfName"] == "p0"


def test_exclude_topology_drops_numa(fake_host: FakeHost) -> None:
    intel_node(fake_host)
    found = discover(
        fake_host,
        doc(
            pool("a", {"drivers": ["iavf"]}, excludeTopology=True),
            pool("b", {"drivers": ["vfio-pci"]}),
        ),
    )
    assert [d.numa_nodes for d in found.devices["intel.com/a"]] == [(), ()]
    assert [d.payload_as(VfInfo).numa_node for d in found.devices["intel.com/a"]] == [1, 1]
    assert [d.numa_nodes for d in found.devices["intel.com/b"]] == [(1,), (1,)]
