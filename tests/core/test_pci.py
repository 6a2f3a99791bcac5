"""scan_pci over faithful fake sysfs trees, including broken ones."""

from __future__ import annotations

import logging
import os

from devplugin_core import scan_pci
from devplugin_core.testing import FakeHost


def build(host: FakeHost) -> None:
    host.add_bridge("0000:3a:00.0", numa_node=0)
    host.add_sriov_pf(
        "0000:3b:00.0",
        vendor="15b3",
        device="1017",
        driver="mlx5_core",
        totalvfs=8,
        numa_node=0,
        netdev="enp59s0f0np0",
        parents=["0000:3a:00.0"],
    )
    host.add_rdma("0000:3b:00.0", "mlx5_0")
    for i in range(2):
        host.add_vf(
            "0000:3b:00.0",
            i,
            f"0000:3b:00.{i + 2}",
            device="1018",
            driver="mlx5_core",
            netdev=f"enp59s0f0v{i}",
        )
    host.add_vf("0000:3b:00.0", 2, "0000:3b:00.4", device="1018", driver="vfio-pci", iommu_group=52)
    host.add_pci(
        "0000:86:00.0",
        vendor="15b3",
        device="101b",
        class_code=0x020700,
        driver="mlx5_core",
        numa_node=1,
    )
    host.add_netdev("0000:86:00.0", "ibp134s0", link_type="infiniband")
    host.add_rdma("0000:86:00.0", "mlx5_1", link_layer="InfiniBand", ports=2)
    host.add_rdma_cm()
    host.add_pci("0000:01:00.0", vendor="8086", device="1593", driver="ice", numa_node=None)
    host.add_netdev("0000:01:00.0", "eno1")
    host.add_pci("0000:05:00.0", vendor="1eff", device="1220", class_code=0x120000)


def test_identity_links_and_topology(fake_host):
    build(fake_host)
    scan = scan_pci(fake_host.host)
    pf = scan.devices["0000:3b:00.0"]
    assert (pf.vendor, pf.device, pf.base_class, pf.driver, pf.numa_node) == (
        "15b3",
        "1017",
        0x02,
        "mlx5_core",
        0,
    )
    assert pf.is_pf and pf.sriov_numvfs == 3 and pf.sriov_totalvfs == 8
    assert pf.virtfns == ("0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4")
    assert pf.upstream == ("0000:3a:00.0",)
    assert pf.path == "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0"
    vf = scan.devices["0000:3b:00.4"]
    assert vf.physfn == "0000:3b:00.0" and vf.vf_index == 2 and vf.iommu_group == "52"
    assert vf.netdevs == () and scan.link_type(vf) == "ether"  # from the PF
    assert scan.pf_name(vf) == "enp59s0f0np0"
    assert scan.devices["0000:01:00.0"].numa_node is None
    assert scan.devices["0000:05:00.0"].driver is None
    assert scan.netdevs["ibp134s0"].link_type == "infiniband"
    assert scan.netdevs["eno1"].up


def test_rdma_devices_ports_and_char_devices(fake_host):
    build(fake_host)
    scan = scan_pci(fake_host.host)
    roce = scan.rdma["mlx5_0"]
    assert [c.path for c in roce.char_devices] == [
        "/dev/infiniband/umad0",
        "/dev/infiniband/uverbs0",
    ]
    assert roce.ports[0].active and roce.ports[0].link_layer == "Ethernet"
    ib = scan.rdma["mlx5_1"]
    assert [c.name for c in ib.char_devices] == ["issm1", "issm2", "umad1", "umad2", "uverbs1"]
    fake_host.set_port_state("mlx5_1", 2, active=False)
    port = scan_pci(fake_host.host).rdma["mlx5_1"].ports[1]
    assert (port.state_id, port.state, port.phys_state) == (1, "DOWN", "Disabled")
    assert not port.active


def test_class_filter(fake_host):
    build(fake_host)
    scan = scan_pci(fake_host.host, classes=[0x12])
    assert list(scan.devices) == ["0000:05:00.0"]


def test_broken_devices_are_skipped_with_a_log_line_naming_the_path(fake_host, caplog):
    build(fake_host)
    h = fake_host
    # garbage and non-UTF-8 attributes, a missing identity, a dangling link, a junk entry
    h.write(f"{h.pci['0000:01:00.0'].path}/numa_node", "banana\n")
    h.write(f"{h.pci['0000:86:00.0'].path}/vendor", b"\xff\xfe\n")
    h.remove(f"{h.pci['0000:86:00.0'].path}/modalias")
    h.remove(f"{h.pci['0000:05:00.0'].path}/device")
    h.remove(f"{h.pci['0000:05:00.0'].path}/modalias")
    h.remove(h.pci["0000:3b:00.3"].path)  # vanished between listing and reading
    os.symlink("nowhere", h.path("/sys/bus/pci/devices/junk-entry"))
    with caplog.at_level(logging.WARNING, logger="devplugin.pci"):
        scan = scan_pci(h.host)
    assert "0000:01:00.0" in scan.devices and scan.devices["0000:01:00.0"].numa_node is None
    assert "0000:86:00.0" not in scan.devices
    assert "0000:05:00.0" not in scan.devices
    assert "0000:3b:00.3" not in scan.devices
    text = caplog.text
    assert "/sys/bus/pci/devices/0000:01:00.0/numa_node" in text
    assert "/sys/bus/pci/devices/0000:86:00.0/vendor: not UTF-8" in text
    assert "0000:05:00.0: vendor/device/class unreadable" in text
    assert "/sys/bus/pci/devices/0000:3b:00.3: dangling link" in text
    assert "junk-entry: not a PCI address" in text
    assert len(scan.problems) >= 5


def test_noiommu_group_and_uio(fake_host):
    fake_host.add_pci("0000:00:05.0", vendor="8086", device="154c", driver="vfio-pci")
    fake_host.set_iommu_group("0000:00:05.0", 7, noiommu=True)
    fake_host.add_pci("0000:00:06.0", vendor="8086", device="154c", driver="igb_uio")
    fake_host.add_uio("0000:00:06.0", 3)
    scan = scan_pci(fake_host.host)
    assert scan.devices["0000:00:05.0"].iommu_noiommu
    assert scan.devices["0000:00:06.0"].uio == ("uio3",)


def test_char_devices_of_one_function_match_the_global_index(fake_host):
    from devplugin_core._pci import rdma_char_devices_of, rdma_char_index

    build(fake_host)
    host = fake_host.host
    everything = rdma_char_index(host)
    assert rdma_char_devices_of(host, "0000:86:00.0") == {"mlx5_1": everything["mlx5_1"]}
    assert rdma_char_devices_of(host, "0000:3b:00.0") == {"mlx5_0": everything["mlx5_0"]}
    assert rdma_char_devices_of(host, "0000:01:00.0") == {}


def test_details_are_read_for_accepted_functions_and_the_pfs_of_accepted_vfs(fake_host):
    build(fake_host)
    full = scan_pci(fake_host.host)
    scan = scan_pci(fake_host.host, details=lambda d: d.address == "0000:3b:00.4")
    assert list(scan.devices) == list(full.devices)  # every function is still listed
    assert scan.devices["0000:86:00.0"] == full.devices["0000:86:00.0"]  # names included
    assert scan.devices["0000:86:00.0"].rdma_devices == ("mlx5_1",)
    # the vfio VF has no netdev: its link type comes from its PF, whose details were read
    assert set(scan.netdevs) == {"enp59s0f0np0"} and set(scan.rdma) == {"mlx5_0"}
    assert scan.link_type(scan.devices["0000:3b:00.4"]) == "ether"
    assert scan.rdma["mlx5_0"] == full.rdma["mlx5_0"]
    assert scan.devices["0000:3b:00.4"].vf_index == 2


def test_char_devices_of_a_few_accepted_functions_are_read_below_them(fake_host):
    # ib_uverbs_add_one / ib_umad_add_one (drivers/infiniband/core) make the IB device's
    # parent, the PCI function, the parent of its uverbsN/umadN/issmN class devices: they are
    # listed below the function as in /sys/class. One of three RDMA functions accepted: the
    # scan reads below it instead of the class directories, and finds the same char devices.
    build(fake_host)
    fake_host.add_pci("0000:af:00.0", vendor="15b3", device="101b", driver="mlx5_core")
    fake_host.add_rdma("0000:af:00.0", "mlx5_2", link_layer="InfiniBand")
    full = scan_pci(fake_host.host)
    fake_host.remove("/sys/class/infiniband_verbs")  # not read on this path
    scan = scan_pci(fake_host.host, details=lambda d: d.address == "0000:86:00.0")
    assert set(scan.rdma) == {"mlx5_1"}
    assert scan.rdma["mlx5_1"].char_devices == full.rdma["mlx5_1"].char_devices
    assert not scan.problems


def test_rdma_attributes_left_out_on_request(fake_host):
    build(fake_host)
    full = scan_pci(fake_host.host).rdma["mlx5_1"]
    light = scan_pci(fake_host.host, rdma_attributes=False).rdma["mlx5_1"]
    assert [p.number for p in light.ports] == [1, 2]
    assert light.char_devices == full.char_devices
    assert (light.ports[0].state, light.ports[0].pkey, light.ports[0].link_layer) == ("", "", "")
    assert (light.node_guid, light.fw_version, light.hca_type) == ("", "", "")
    assert full.ports[0].link_layer == "InfiniBand" and full.node_guid
