"""NPUs bound to vfio-pci for virtual machines (KubeVirt), as the kubelet receives them:
per-product resources, VFIO nodes and env, IOMMU group viability, rebinding, health,
preferred allocation, configured pools, CDI and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from devplugin_plugins.rebel_npu import SPEC
from devplugin_plugins.rebel_npu.discovery import NpuInfo
from devplugin_plugins.rebel_npu.products import passthrough_name, product_of
from devplugin_plugins.rebel_npu.testing import (
    add_ca22_switches,
    add_sriov_npu,
    add_switch,
    add_vfio_npu,
    install_fake_smi,
    to_rebellions,
    to_vfio,
)
from prometheus_client import CollectorRegistry

from devplugin_core import cli
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, CA22, REBEL, built, config, discover

ATOM_PT = "rebellions.ai/ATOM_PT"
CA22_PT = "rebellions.ai/ATOM_CA22_PT"
MAX_PT = "rebellions.ai/ATOM_MAX_PT"
REBEL_PT = "rebellions.ai/REBEL_PT"
CA12_VM = "0000:53:00.0"
CA22_VM = ["0000:63:00.0", "0000:64:00.0"]
CR03_VM = "0000:73:00.0"
CA22_CT = "0000:83:00.0"  # bound to rebellions: a container device on the same node


def state(device: str, health: str) -> Callable[[Sequence[Any]], bool]:
    return lambda devices: any((d.ID, d.health) == (device, health) for d in devices)


def ids(devices: Sequence[Any]) -> list[str]:
    return [d.ID for d in devices]


def vm_node(host: FakeHost) -> None:
    """CA12 (NUMA 0), two CA22 behind one switch and a CR03 (NUMA 1), all bound to vfio-pci,
    each in its own IOMMU group (the second CA22's a no-IOMMU group); plus one CA22 bound to
    rebellions."""
    add_vfio_npu(
        host, CA12_VM, group=53, device="1120", numa=0, parents=add_switch(host, 0x50, 1, numa=0)[0]
    )
    for slot, chain in enumerate(add_switch(host, 0x60, 2, numa=1)):
        add_vfio_npu(host, CA22_VM[slot], group=63 + slot, numa=1, parents=chain, noiommu=slot == 1)
    add_vfio_npu(
        host, CR03_VM, group=73, device="2030", numa=1, parents=add_switch(host, 0x70, 1, numa=1)[0]
    )
    host.add_npu(CA22_CT, numa_node=0, parents=add_switch(host, 0x80, 1, numa=0)[0])


def test_passthrough_names_follow_the_operator() -> None:
    def name(device_id: str) -> str:
        product = product_of(device_id)
        assert product is not None
        return passthrough_name(product, device_id)

    assert name("1120") == "ATOM_PT"  # RBLN-CA12
    assert name("1250") == name("1251") == "ATOM_MAX_PT"  # RBLN-CA25, PF and VF
    assert name("2030") == "REBEL_PT"  # RBLN-CR03
    assert name("1220") == name("1221") == "ATOM_CA22_PT"  # the operator README's form
    assert name("1020") == "ATOM_CA02_PT" and name("1150") == "ATOM_CA15_PT"
    assert name("2130") == "REBEL_CR13_PT"  # unknown ID, by its pattern
    assert name("0010") == name("0011") == "ATOM_0010_PT"  # early IDs name no card


async def test_zero_config_serves_passthrough_products_present(
    fake_host: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    vm_node(fake_host)
    async with run_plugin(
        SPEC, fake_host, fake_kubelet, config=config(lock_file, rsdGroups="off")
    ) as rt:
        assert ids(await fake_kubelet.wait_for_devices(ATOM_PT, lambda d: len(d) == 1)) == [CA12_VM]
        assert ids(await fake_kubelet.wait_for_devices(CA22_PT, lambda d: len(d) == 2)) == CA22_VM
        assert ids(await fake_kubelet.wait_for_devices(REBEL_PT, lambda d: len(d) == 1)) == [
            CR03_VM
        ]
        assert ids(await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 1)) == [CA22_CT]
        # only products present: no CA25 (ATOM_MAX_PT), no REBEL bound to rebellions
        assert {r.resource for r in fake_kubelet.registrations} == {
            ATOM,
            ATOM_PT,
            CA22_PT,
            REBEL_PT,
        }
        assert set(rt.resources) == {ATOM, ATOM_PT, CA22_PT, REBEL_PT}
        pt = {d.ID: d for d in fake_kubelet.devices(CA22_PT)}
        assert [n.ID for n in pt[CA22_VM[0]].topology.nodes] == [1]
        assert all(d.health == "Healthy" for d in pt.values())


def test_passthrough_payload_and_attributes(fake_host: FakeHost) -> None:
    vm_node(fake_host)
    devices, _ = discover(fake_host, built(fake_host))
    first, second = devices[CA22_PT]
    info = first.payload_as(NpuInfo)
    assert (info.driver, info.iommu_group, info.noiommu, info.npu) == ("vfio-pci", "63", False, "")
    assert info.passthrough and info.tools == () and info.card == "RBLN-CA22"
    assert len(info.bridges) == 3
    assert dict(first.attributes) == {
        "card": "RBLN-CA22",
        "driver": "vfio-pci",
        "family": "ATOM",
        "function": "pf",
        "iommuGroup": "63",
        "numa": "1",
        "pciBridges": ",".join(info.bridges),
    }
    assert second.attributes["iommuGroup"] == "noiommu-64"
    assert second.cdi_name == CA22_VM[1]


async def test_allocate_passthrough(
    fake_host: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    """VFIO container and group nodes (no-IOMMU group from its host node), PCI_RESOURCE_* for
    KubeVirt and PCIDEVICE_* as the fork sets them; no rbln tools, no RSD group even though
    RSD groups are on (the fake rbln-smi works)."""
    vm_node(fake_host)
    smi = install_fake_smi(fake_host)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(lock_file)):
        await fake_kubelet.wait_for_devices(CA22_PT, lambda d: len(d) == 2)
        reply = await fake_kubelet.allocate(CA22_PT, [CA22_VM[1], CA22_VM[0]])
        container = await fake_kubelet.allocate(ATOM, [CA22_CT])  # RSD groups are on
    assert [(d.host_path, d.container_path, d.permissions) for d in reply.devices] == [
        ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
        ("/dev/vfio/63", "/dev/vfio/63", "rw"),
        ("/dev/vfio/noiommu-64", "/dev/vfio/64", "rw"),
    ]
    assert list(reply.mounts) == []
    both = ",".join(CA22_VM)
    assert dict(reply.envs) == {
        "PCIDEVICE_REBELLIONS_AI_ATOM_CA22_PT": both,
        "PCI_RESOURCE_REBELLIONS_AI_ATOM_CA22_PT": both,
        "PCIDEVICE_REBELLIONS_AI_ATOM_CA22_PT_INFO": (
            '{"0000:63:00.0":{"vfio":{"dev-mount":"/dev/vfio/63","mount":"/dev/vfio/vfio"}},'
            '"0000:64:00.0":{"vfio":{"dev-mount":"/dev/vfio/64","mount":"/dev/vfio/vfio"}}}'
        ),
    }
    assert ("/dev/rsd1", "/dev/rsd0") in [
        (d.host_path, d.container_path) for d in container.devices
    ]
    group_calls = [c for c in smi.calls() if c[:1] == ["group"]]
    assert all(CA22_VM[0] not in " ".join(c) for c in group_calls)
    assert len(group_calls) == 1  # only the container allocation made a group


async def test_non_viable_iommu_group_is_unhealthy_and_named(
    fake_host: FakeHost,
    lock_file: str,
    fake_kubelet: FakeKubelet,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The kernel's VFIO viability rule: a group can be handed to userspace only while every
    other function in it is bound to a vfio driver or to pci-stub, bound to no driver, or is a
    bridge (``vfio_dev_viable()`` / ``vfio_dev_driver_allowed()`` in drivers/vfio/vfio.c up to
    Linux 5.18 — the ``vfio_driver_allowed[] = { "pci-stub" }`` list and the "header type not
    normal" test for bridges; since 5.19 the same rule is enforced through DMA ownership,
    ``iommu_group_claim_dma_owner()``, taken when drivers/vfio/group.c attaches the group).
    A function bound to a host driver in the NPU's group makes KubeVirt fail at VM start, so
    the NPU is advertised Unhealthy and ``discover`` names the function; unbinding it heals."""
    chain = add_switch(fake_host, 0x30, 1, numa=0)[0]
    npu = add_vfio_npu(fake_host, "0000:33:00.0", group=30, numa=0, parents=chain)
    for bridge in chain:  # bridges (bound to pcieport) in the group are fine
        fake_host.set_iommu_group(bridge, 30)
    allowed = [
        fake_host.add_pci("0000:33:00.2", vendor="8086", device="0001", driver="pci-stub"),
        fake_host.add_pci("0000:33:00.3", vendor="8086", device="0002"),  # unbound
        fake_host.add_pci(
            "0000:33:00.4", vendor="1eff", device="1220", class_code=0x12, driver="vfio-pci"
        ),
    ]
    nic = fake_host.add_pci("0000:33:00.1", vendor="8086", device="10fb", driver="ixgbe")
    for address in (*allowed, nic):
        fake_host.set_iommu_group(address, 30)
    document = config(lock_file, rsdGroups="off", health={"recoverAfter": 1})
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=document) as rt:
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Unhealthy"))
        reason = rt.resources[CA22_PT].tracker.reason(npu)
        assert "IOMMU group 30 is not viable for VFIO: 0000:33:00.1 (bound to ixgbe)" in reason
        assert all(a not in reason for a in (*allowed, *chain))
        fake_host.unbind(nic)
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Healthy"))
        fake_host.bind(nic, "ixgbe")
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Unhealthy"))
    args = ["discover", "rebel-npu", "--host-root", str(fake_host.root), "--json"]
    assert await asyncio.to_thread(cli.main, args) == 0
    report = json.loads(capsys.readouterr().out)
    resource = next(r for r in report["resources"] if r["name"] == CA22_PT)
    assert {d["id"]: d["health"] for d in resource["devices"]}[npu] == "Unhealthy"
    assert "0000:33:00.1 (bound to ixgbe)" in json.dumps(resource["unhealthy_reasons"])


async def test_rebind_moves_the_npu_between_resources_never_both(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    """rebellions -> vfio-pci -> rebellions (an operator switching the node between container
    and VM mode): the NPU moves at the next rediscovery, and is never advertised in both."""
    moving = CA22[1]
    seen_in_both: list[str] = []

    def advertised(resource: str) -> list[str]:
        # a stream that ended is no advertisement: the kubelet marks its devices unhealthy
        conn = fake_kubelet.connections.get(resource)
        return ids(conn.devices) if conn is not None and not conn.ended else []

    def nowhere_twice() -> bool:
        if moving in advertised(ATOM) and moving in advertised(CA22_PT):
            seen_in_both.append(f"{fake_kubelet.health(ATOM)} {fake_kubelet.health(CA22_PT)}")
        return True

    async def settle(predicate: Callable[[], bool], what: str) -> None:
        await fake_kubelet.wait_until(lambda: nowhere_twice() and predicate(), what=what)

    def served(rt: Any) -> list[str]:
        return [n for n, r in rt.resources.items() if moving in r.snapshot.by_id]

    async with run_plugin(
        SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="off")
    ) as rt:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        held = await fake_kubelet.allocate(ATOM, [moving])  # a pod holds it
        ca22.unbind(moving)  # step 1 of a rebind: still advertised where it was, Unhealthy
        assert await rt.discover_once()
        assert served(rt) == [ATOM]
        await settle(lambda: fake_kubelet.health(ATOM).get(moving) == "Unhealthy", "unhealthy")
        ca22.remove("/dev/rbln1")
        ca22.set_iommu_group(moving, 14)
        ca22.bind(moving, "vfio-pci")
        assert await rt.discover_once()
        assert served(rt) == [CA22_PT]
        await settle(
            lambda: (
                moving not in ids(fake_kubelet.devices(ATOM))
                and fake_kubelet.health(CA22_PT).get(moving) == "Healthy"
            ),
            "moved to the passthrough resource",
        )
        vm = await fake_kubelet.allocate(CA22_PT, [moving])
        assert [d.host_path for d in vm.devices] == ["/dev/vfio/vfio", "/dev/vfio/14"]
        to_rebellions(ca22, moving)
        assert await rt.discover_once()
        assert served(rt) == [ATOM]
        assert CA22_PT not in rt.resources  # its last device left: the resource is gone
        await settle(
            lambda: (
                fake_kubelet.health(ATOM).get(moving) == "Healthy"
                and (
                    CA22_PT not in fake_kubelet.connections
                    or fake_kubelet.connections[CA22_PT].ended
                )
            ),
            "back in the container resource",
        )
    assert seen_in_both == []
    assert [d.host_path for d in held.devices] == ["/dev/rbln1"]  # the pod's answer stands


def test_fingerprint_follows_vfio_bindings(ca22: FakeHost) -> None:
    """A rebind in either direction is noticed by the fingerprint poll (a rescan within about
    5 s), not only by the periodic rescan."""
    scanner = built(ca22).scanner
    before = scanner.fingerprint(ca22.host)
    to_vfio(ca22, CA22[2], group=23)
    in_vm_mode = scanner.fingerprint(ca22.host)
    assert in_vm_mode != before
    ca22.set_iommu_group(CA22[3], 24)
    assert scanner.fingerprint(ca22.host) == in_vm_mode  # groups alone change nothing
    to_rebellions(ca22, CA22[2])
    assert scanner.fingerprint(ca22.host) == before


async def test_passthrough_health_driver_node_group_and_removal(
    fake_host: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    vm_node(fake_host)
    npu = CA22_VM[0]
    document = config(lock_file, rsdGroups="off", health={"recoverAfter": 1})
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=document) as rt:
        await fake_kubelet.wait_for_devices(CA22_PT, lambda d: len(d) == 2)
        fake_host.unbind(npu)  # driver changes away from vfio-pci: Unhealthy, and back
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Unhealthy"))
        assert rt.resources[CA22_PT].tracker.reason(npu) == "driver unbound (now none)"
        fake_host.bind(npu, "vfio-pci")
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Healthy"))
        fake_host.remove("/dev/vfio/63")
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Unhealthy"))
        assert rt.resources[CA22_PT].tracker.reason(npu) == "/dev/vfio/63 is missing"
        fake_host.add_dev("/dev/vfio/63")
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Healthy"))
        fake_host.set_iommu_group(npu, 99)  # a new group: rescanned, the new node advertised
        await fake_kubelet.wait_until(
            lambda: (
                rt.resources[CA22_PT].snapshot.by_id[npu].payload_as(NpuInfo).iommu_group == "99"
            ),
            what="the new IOMMU group",
        )
        await fake_kubelet.wait_for_devices(CA22_PT, state(npu, "Healthy"))
        reply = await fake_kubelet.allocate(CA22_PT, [npu])
        assert [d.host_path for d in reply.devices] == ["/dev/vfio/vfio", "/dev/vfio/99"]
        fake_host.remove_pci(CA22_VM[1])  # the function vanishes: gone at once
        await fake_kubelet.wait_for_devices(CA22_PT, lambda d: ids(d) == [npu], timeout=3.0)


def test_sriov_pf_is_left_out_and_its_vfs_passed_through(fake_host: FakeHost) -> None:
    pf, *vfs = add_sriov_npu(fake_host, "0000:31:00.0", ["0000:31:00.1", "0000:31:00.2"], numa=1)
    for n, vf in enumerate(vfs):
        to_vfio(fake_host, vf, group=310 + n)
    devices, scan = discover(fake_host, built(fake_host))
    assert [d.id for d in devices[MAX_PT]] == vfs  # CA25 VFs (1251): the operator's name
    assert devices[MAX_PT][0].payload_as(NpuInfo).pf == pf
    assert ATOM not in devices and pf not in [d.id for ds in devices.values() for d in ds]
    assert any("SR-IOV enabled" in r.reason for r in scan.rejections if r.subject == pf)


def test_other_drivers_are_explained(fake_host: FakeHost) -> None:
    fake_host.add_npu("0000:05:00.0", numa_node=0, index=0, driver="pci-stub")
    fake_host.add_npu("0000:06:00.0", numa_node=0, index=1)
    fake_host.unbind("0000:06:00.0")
    devices, scan = discover(fake_host, built(fake_host))
    assert devices == {}
    reasons = {r.subject: r.reason for r in scan.rejections}
    assert reasons["0000:05:00.0"].startswith("bound to pci-stub; rebel-npu serves NPUs bound to")
    assert "rebellions (containers) or vfio-pci (virtual machines)" in reasons["0000:06:00.0"]
    assert reasons["0000:06:00.0"].startswith("bound to no driver")


async def test_preferred_allocation_packs_passthrough_npus(
    fake_host: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    """Two NUMA nodes x two PCIe switches x four CA22, all bound to vfio-pci: the same NUMA
    and switch packing as the container resource."""
    npus = add_ca22_switches(fake_host, numa_nodes=2, switches_per_numa=2, cards_per_switch=4)
    for n, address in enumerate(npus):
        to_vfio(fake_host, address, group=100 + n)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(lock_file, rsdGroups="off")):
        await fake_kubelet.wait_for_devices(CA22_PT, lambda d: len(d) == 16)
        assert (await fake_kubelet.options(CA22_PT)).get_preferred_allocation_available
        assert sorted(await fake_kubelet.preferred(CA22_PT, npus, [], 4)) == npus[:4]
        free = [*npus[:3], *npus[4:6], *npus[8:]]
        assert sorted(await fake_kubelet.preferred(CA22_PT, free, [], 4)) == npus[8:12]
        picked = await fake_kubelet.preferred(CA22_PT, npus, [npus[13]], 2)
        assert picked[0] == npus[13] and picked[1] in npus[12:16]
    assert ATOM not in fake_kubelet.connections


async def test_resource_list_pool_with_vfio_driver(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    """An upstream-style pool selecting ``drivers: ["vfio-pci"]`` gives the same per-device
    answer under its own name; a pool that does not list vfio-pci explains why it skips one."""
    to_vfio(ca22, CA22[2], group=23)
    to_vfio(ca22, CA22[3], group=24)
    document = config(
        lock_file,
        rsdGroups="off",
        resourceList=[
            {
                "resourceName": "ATOM",
                "selectors": {"vendors": ["1eff"], "pciAddresses": [CA22[0], CA22[2]]},
            },
            {
                "resourceName": "npu_vm",
                "selectors": {"vendors": ["1eff"], "drivers": ["vfio-pci"]},
            },
        ],
    )
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document) as rt:
        assert ids(await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 1)) == [CA22[0]]
        vm = "rebellions.ai/npu_vm"
        assert ids(await fake_kubelet.wait_for_devices(vm, lambda d: len(d) == 1)) == [CA22[3]]
        reply = await fake_kubelet.allocate(vm, [CA22[3]])
        assert rt.resources[vm].resource.allocator.reusable  # no RSD group is ever made
        reasons = [r.reason for r in rt.rejections if r.subject == CA22[2]]
        assert any("does not list it in drivers" in r for r in reasons)
        assert set(rt.resources) == {ATOM, vm}  # configured: no zero-config *_PT names
    assert [d.host_path for d in reply.devices] == ["/dev/vfio/vfio", "/dev/vfio/24"]
    assert dict(reply.envs) == {
        "PCIDEVICE_REBELLIONS_AI_NPU_VM": CA22[3],
        "PCI_RESOURCE_REBELLIONS_AI_NPU_VM": CA22[3],
        "PCIDEVICE_REBELLIONS_AI_NPU_VM_INFO": (
            '{"0000:24:00.0":{"vfio":{"dev-mount":"/dev/vfio/24","mount":"/dev/vfio/vfio"}}}'
        ),
    }
    assert list(reply.mounts) == []


async def test_cdi_and_metrics_cover_passthrough_devices(
    fake_host: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    vm_node(fake_host)
    install_fake_smi(fake_host)
    cdi_dir = fake_host.root.parent / "cdi"
    registry = CollectorRegistry()
    document = config(lock_file, rsdGroups="off")
    async with run_plugin(
        SPEC, fake_host, fake_kubelet, config=document, cdi_dir=str(cdi_dir), registry=registry
    ) as rt:
        await fake_kubelet.wait_for_devices(CA22_PT, lambda d: len(d) == 2)
        reply = await fake_kubelet.allocate(CA22_PT, [CA22_VM[0]])
        health = rt.resources[ATOM].resource.health
        assert health is not None
        health.monitor.refresh(force=True)  # type: ignore[attr-defined]
        labels = {"resource": CA22_PT, "device": CA22_VM[0], "npu": "", "card": "RBLN-CA22"}
        assert registry.get_sample_value("devplugin_npu_healthy", labels) == 1
        assert registry.get_sample_value("devplugin_npu_temperature_celsius", labels) is None
        container = {"resource": ATOM, "device": CA22_CT, "npu": "rbln0", "card": "RBLN-CA22"}
        assert registry.get_sample_value("devplugin_npu_temperature_celsius", container) == 35
    assert [d.name for d in reply.cdi_devices] == [f"{CA22_PT}={CA22_VM[0]}"]
    assert list(reply.devices) == []
    assert reply.envs["PCI_RESOURCE_REBELLIONS_AI_ATOM_CA22_PT"] == CA22_VM[0]
    spec = next(json.loads(p.read_text()) for p in cdi_dir.iterdir() if "ATOM_CA22_PT" in p.name)
    nodes = {d["name"]: d["containerEdits"]["deviceNodes"] for d in spec["devices"]}
    assert [n["hostPath"] for n in nodes[CA22_VM[1]]] == ["/dev/vfio/vfio", "/dev/vfio/noiommu-64"]
    assert REBEL not in rt.resources
