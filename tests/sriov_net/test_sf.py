"""``deviceType: auxNetDevice``: Scalable Functions on the auxiliary bus, end to end.

The fake host lays SFs out as the kernel does (``FakeHost.add_sf``): the auxiliary device's
directory under its parent PCI function, ``/sys/bus/auxiliary/devices/mlx5_core.sf.N`` linking
to it, its ``sfnum``, its netdev and RDMA device under it, nested ``mlx5_core.eth.N`` devices,
and the SF representor under the parent when the eswitch is in switchdev mode.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from devplugin_plugins.sriov_net import SPEC
from devplugin_plugins.sriov_net.aux import aux_type_of
from devplugin_plugins.sriov_net.config import SriovNetConfig
from devplugin_plugins.sriov_net.discovery import VfInfo
from devplugin_plugins.sriov_net.specs import Needs
from prometheus_client import CollectorRegistry

from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin
from devplugin_core.toolkit import decode

from .helpers import (
    BF2,
    bluefield_node,
    default_route,
    devinfo_dir,
    discover,
    doc,
    ids,
    info,
    options,
    serve,
    sf_pool,
    specs,
)

#: upstream README's bf2_sf pool
BF2_SF = sf_pool(
    "bf2_sf",
    {"vendors": ["15b3"], "devices": ["a2d6"], "pfNames": ["p0#1-5"], "auxTypes": ["sf"]},
    resourcePrefix="nvidia.com",
)
NAME = "nvidia.com/bf2_sf"
SF1, SF5 = "mlx5_core.sf.3", "mlx5_core.sf.4"  # sfnum 1 and 5 on p0


def test_aux_type_parsing_mirrors_upstream() -> None:
    """utils.ParseAuxDeviceType, its table in pkg/utils/utils_test.go."""
    assert aux_type_of("driver_name.type.123") == "type"
    assert aux_type_of("mlx5_core.sf.4") == "sf"
    assert aux_type_of("0000:12:34.0") == ""
    assert aux_type_of("driver_name.type.id") == ""
    assert aux_type_of("driver_name.type.-4") == ""


def test_sfs_are_found_under_their_parent_with_pfnames_ranges_over_sfnum(
    fake_host: FakeHost,
) -> None:
    """auxNetDeviceProvider.GetDevices + GetFilteredDevices: device ID = the auxiliary device
    name; pfNames compares the uplink representor (sriovnet GetUplinkRepresentorFromAux) and
    its '#' range counts GenNetDevice.GetFuncID, which for auxNetDevice is the SF number
    (sriovnet GetSfIndexByAuxDev reads <aux>/sfnum), not the aux device index."""
    bluefield_node(fake_host)
    found = discover(fake_host, doc(BF2_SF))
    assert found.ids(NAME) == [SF1, SF5]
    device = found.device(NAME, SF1)
    assert device.payload == VfInfo(
        "mlx5_core", BF2, "p0", 1, 0, Needs(), bus="auxiliary"
    )  # vendor/device/driver/NUMA of the parent (NewHostDeviceImpl(dev, deviceID, ...))
    assert device.numa_nodes == (0,)
    assert dict(device.attributes) == {
        "driver": "mlx5_core",
        "vendor": "15b3",
        "device": "a2d6",
        "pf": BF2,
        "pfName": "p0",
        "sfnum": "1",
        "auxType": "sf",
        "netdev": "p0s1",
        "linkType": "ether",
        "rdma": "mlx5_2",
    }
    assert found.why("mlx5_core.sf.2") == [
        f"matches no pool: {NAME}: pfNames item 'p0#1,2,3,4,5' does not include SF number 0"
    ]
    assert "does not include 'p1'" in found.why("mlx5_core.sf.6")[0]
    # upstream drops auxiliary devices that are not SFs (GetSfIndexByAuxDev fails)
    assert found.why("mlx5_core.eth.0") == ["not a Scalable Function: no readable sfnum"]
    # nested auxiliary devices (mlx5_core.eth.3 under the SF) are not the PCI function's
    assert not any(r.subject.startswith("mlx5_core.eth.3") for r in found.rejections)


def test_selectors_in_upstream_order(fake_host: FakeHost) -> None:
    """The other AuxNetDeviceSelectors: drivers of the parent, rootDevices with ranges,
    linkTypes of the SF's netdev, isRdma from <aux>/infiniband (NewAuxRdmaSpec)."""
    bluefield_node(fake_host)
    cases = {
        "root": ({"rootDevices": [f"{BF2}#0-1"], "auxTypes": ["sf"]}, ["mlx5_core.sf.2", SF1]),
        "drv": ({"drivers": ["mlx5_core"], "auxTypes": ["sf"]}, None),
        "other": ({"drivers": ["ice"], "auxTypes": ["sf"]}, []),
        "eth": ({"linkTypes": ["ether"], "pfNames": ["p1"], "auxTypes": ["sf"]}, None),
        "rdma": ({"isRdma": True, "auxTypes": ["sf"]}, [SF1]),
    }
    for name, (selector, expected) in cases.items():
        found = discover(fake_host, doc(sf_pool(name, selector)))
        every = ["mlx5_core.sf.2", SF1, SF5, "mlx5_core.sf.5", "mlx5_core.sf.6"]
        if name == "eth":
            every = ["mlx5_core.sf.6"]
        assert found.ids(f"intel.com/{name}") == (every if expected is None else expected), name


def test_sf_whose_parent_is_not_in_switchdev_mode_is_left_out(fake_host: FakeHost) -> None:
    """GetUplinkRepresentorFromAux fails without a switchdev uplink (phys_switch_id and a
    p<N> phys_port_name), so NewGenNetDevice drops the SF."""
    fake_host.add_sriov_pf(
        BF2, vendor="15b3", device="a2d6", driver="mlx5_core", totalvfs=8, netdev="p0"
    )
    fake_host.add_sf(BF2, 2, sfnum=1)
    found = discover(fake_host, doc(sf_pool("sf", {"auxTypes": ["sf"]})))
    assert found.ids("intel.com/sf") == []
    assert found.why("mlx5_core.sf.2") == [
        f"no uplink representor on {BF2} (its eswitch is not in switchdev mode)"
    ]


def test_parent_holding_the_default_route_still_has_its_sfs_pooled(fake_host: FakeHost) -> None:
    """auxNetDeviceProvider.AddTargetDevices keeps every class 0x02 function: the netDevice
    exclusions (default route, PF with VFs) do not apply to SF parents."""
    bluefield_node(fake_host)
    default_route(fake_host, "p0")
    found = discover(
        fake_host, doc({"resourceName": "net", "selectors": {"vendors": ["15b3"]}}, BF2_SF)
    )
    assert found.ids(NAME) == [SF1, SF5]
    assert found.why(BF2) == ["holds the node's default route (p0)"]


def test_validation_follows_upstream_and_warns_about_ignored_keys() -> None:
    result = decode(
        SriovNetConfig,
        doc(sf_pool("sf", {"auxTypes": ["sf"], "acpiIndexes": ["1"], "pciAddresses": ["x"]})),
    )
    assert result.warnings == [
        "resourceList[0].selectors.pciAddresses: unknown key, ignored",
        "resourceList[0].selectors.acpiIndexes: ignored for auxNetDevice pools (upstream "
        "never applies it to auxiliary devices, which have no ACPI index of their own)",
    ]


async def test_allocate_env_info_device_info_and_topology(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    """PCIDEVICE_* = the auxiliary device names; _INFO per SF: generic (deviceID = the aux
    name, GetDefaultInfoProvider(deviceID, driver)), rdma of the SF's own RDMA device
    (NewAuxRdmaSpec), extra keyed by the parent's PCI address (NewExtraInfoProvider(
    dev.Address, ...)); needVhostNet (upstream PR #682). Device-info files of type
    "auxiliary" are our addition (upstream writes none for auxNetDevice pools)."""
    bluefield_node(fake_host)
    fake_host.add_dev("/dev/vhost-net")
    fake_host.add_dev("/dev/net/tun")
    document = doc(
        sf_pool(
            "sf_rdma",
            [{"auxTypes": ["sf"], "isRdma": True, "needVhostNet": True}],
            resourcePrefix="nvidia.com",
            additionalInfo={"*": {"fabric": "roce"}, BF2: {"port": "p0"}},
        ),
        BF2_SF,
    )
    async with serve(fake_host, fake_kubelet, document):
        conn = await fake_kubelet.wait_for_registration("nvidia.com/sf_rdma")
        assert ids(conn.devices) == [SF1]
        assert [n.ID for n in conn.devices[0].topology.nodes] == [0]
        bf2 = await fake_kubelet.wait_for_registration(NAME)
        assert ids(bf2.devices) == [SF5]  # SF1 went to the first pool
        reply = await fake_kubelet.allocate("nvidia.com/sf_rdma", [SF1])
        assert specs(reply) == [
            ("/dev/infiniband/umad0", "/dev/infiniband/umad0", "rw"),
            ("/dev/infiniband/uverbs0", "/dev/infiniband/uverbs0", "rw"),
            ("/dev/infiniband/rdma_cm", "/dev/infiniband/rdma_cm", "rw"),
            ("/dev/vhost-net", "/dev/vhost-net", "rw"),
            ("/dev/net/tun", "/dev/net/tun", "rw"),
        ]
        assert reply.envs["PCIDEVICE_NVIDIA_COM_SF_RDMA"] == SF1
        assert info(reply, "PCIDEVICE_NVIDIA_COM_SF_RDMA_INFO") == {
            SF1: {
                "generic": {"deviceID": SF1},
                "extra": {"fabric": "roce", "port": "p0"},
                "rdma": {
                    "rdma_cm": "/dev/infiniband/rdma_cm",
                    "rdma_dev": "mlx5_2",
                    "umad": "/dev/infiniband/umad0",
                    "uverbs": "/dev/infiniband/uverbs0",
                },
                "vhost": {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"},
            }
        }
        path = devinfo_dir(fake_host) / f"nvidia.com-sf_rdma-{SF1}-device.json"
        assert path.read_text() == (
            '{"type":"auxiliary","version":"1.1.0","auxiliary":{"auxiliary-device":'
            f'"{SF1}","pf-pci-address":"{BF2}","rdma-device":"mlx5_2"}}}}'
        )
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        reply = await fake_kubelet.allocate(NAME, [SF5])
        assert specs(reply) == []
        assert dict(reply.envs) == {
            "PCIDEVICE_NVIDIA_COM_BF2_SF": SF5,
            "PCIDEVICE_NVIDIA_COM_BF2_SF_INFO": json.dumps(
                {SF5: {"generic": {"deviceID": SF5}}}, separators=(",", ":")
            ),
        }


async def test_sf_that_vanished_is_unhealthy_then_removed_and_comes_back(
    fake_host: FakeHost, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    bluefield_node(fake_host)
    async with serve(fake_host, fake_kubelet, doc(BF2_SF), numvfs_check_interval=0.05) as rt:
        conn = await fake_kubelet.wait_for_registration(NAME)
        fake_host.remove_aux(SF5)  # devlink port del
        await rt.check_health_once(NAME)
        await fake_kubelet.wait_until(
            lambda: any({d.ID: d.health for d in h}.get(SF5) == "Unhealthy" for h in conn.history),
            what="the vanished SF to be reported Unhealthy",
        )
        await fake_kubelet.wait_for_devices(NAME, lambda d: ids(d) == [SF1])
        assert f"{SF5} is Unhealthy: Scalable Function {SF5} vanished" in caplog.text
        fake_host.add_sf(BF2, 9, sfnum=4)  # created at run time: the fingerprint sees it
        devices = await fake_kubelet.wait_for_devices(NAME, lambda d: len(d) == 2)
        assert ids(devices) == [SF1, "mlx5_core.sf.9"]
        assert fake_kubelet.registration_count(NAME) == 1


async def test_parent_link_down_makes_its_sfs_unhealthy_with_recovery_hysteresis(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    bluefield_node(fake_host)
    registry = CollectorRegistry()
    async with serve(fake_host, fake_kubelet, doc(BF2_SF), registry=registry) as rt:
        await fake_kubelet.wait_for_registration(NAME)
        fake_host.set_link("p0", False)
        await rt.check_health_once(NAME)
        unhealthy = {SF1: "Unhealthy", SF5: "Unhealthy"}
        await fake_kubelet.wait_until(lambda: fake_kubelet.health(NAME) == unhealthy)
        assert rt.resources[NAME].tracker.reason(SF1) == f"PF {BF2} (p0) link is down"
        sample = registry.get_sample_value
        fake_host.set_link("p0", True)
        await rt.check_health_once(NAME)  # one good check is not enough (recover_after=2)
        assert sample("devplugin_sriov_pool_vfs_healthy", {"resource": NAME}) == 0
        await rt.check_health_once(NAME)
        await fake_kubelet.wait_until(
            lambda: fake_kubelet.health(NAME) == {SF1: "Healthy", SF5: "Healthy"}
        )
        assert sample("devplugin_sriov_pool_vfs", {"resource": NAME}) == 2
        labels = {"resource": NAME, "device": SF1, "pf": BF2, "vf": "1"}
        assert (
            sample("devplugin_sriov_vf_info", {**labels, "driver": "mlx5_core", "numa_node": "0"})
            == 1
        )
        assert sample("devplugin_sriov_pf_link_up", {"pf": BF2, "netdev": "p0"}) == 1


async def test_sf_netdev_in_a_pod_keeps_its_pool_across_rescans(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    """A pod takes the SF's netdev (and RDMA device) into its namespace: upstream would lose
    it from a linkTypes/isRdma pool after a restart; we keep what the last pass saw."""
    bluefield_node(fake_host)
    document = doc(sf_pool("eth", {"auxTypes": ["sf"], "linkTypes": ["ether"], "isRdma": True}))
    async with serve(fake_host, fake_kubelet, document) as rt:
        conn = await fake_kubelet.wait_for_registration("intel.com/eth")
        assert ids(conn.devices) == [SF1]
        fake_host.remove_netdev("p0s1")
        await rt.discover_once()
        assert ids(fake_kubelet.devices("intel.com/eth")) == [SF1]


async def test_cdi_names_sfs(fake_host: FakeHost, fake_kubelet: FakeKubelet) -> None:
    bluefield_node(fake_host)
    cdi_dir = fake_host.root.parent / "cdi"
    document = doc(sf_pool("sf", {"auxTypes": ["sf"], "isRdma": True}, resourcePrefix="nvidia.com"))
    async with run_plugin(
        SPEC,
        fake_host,
        fake_kubelet,
        config=document,
        cdi_dir=str(cdi_dir),
        plugin_options=options(fake_host),
    ):
        await fake_kubelet.wait_for_registration("nvidia.com/sf")
        reply = await fake_kubelet.allocate("nvidia.com/sf", [SF1])
    assert [d.name for d in reply.cdi_devices] == [f"nvidia.com/sf={SF1}"]
    assert reply.envs["PCIDEVICE_NVIDIA_COM_SF"] == SF1
    spec = json.loads(next(Path(cdi_dir).glob("*.json")).read_text())
    assert [d["name"] for d in spec["devices"]] == [SF1]
