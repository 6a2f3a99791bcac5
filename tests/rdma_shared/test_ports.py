"""Live port reads, the optional pyverbs backend and the shared-slot allocator."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from devplugin_plugins.rdma_shared import verbs
from devplugin_plugins.rdma_shared.allocator import SharedSlotAllocator
from devplugin_plugins.rdma_shared.ports import (
    HcaRef,
    PortRef,
    hca_down_reason,
    read_netdev,
    read_port,
)

from devplugin_core import (
    AllocationRequest,
    ContainerEdits,
    Device,
    DeviceNode,
    HostFS,
    PreferredRequest,
)
from devplugin_core.testing import FakeHost

from .helpers import IB, IBDEV, NETDEV, ROCE0


def ref(address: str) -> HcaRef:
    path = f"/sys/bus/pci/devices/{address}/infiniband/{IBDEV[address]}/ports/1"
    return HcaRef(address, (PortRef(IBDEV[address], 1, path),), NETDEV[address])


def test_port_state_in_kernel_format(node: FakeHost) -> None:
    status = read_port(node.host, ref(ROCE0).ports[0])
    assert status is not None and status.active
    assert (status.state_id, status.state, status.phys_id, status.phys) == (
        4,
        "ACTIVE",
        5,
        "LinkUp",
    )
    node.set_port_state(IBDEV[ROCE0], 1, active=False)
    status = read_port(node.host, ref(ROCE0).ports[0])
    assert status is not None and not status.active and status.describe() == "DOWN/Disabled"


def test_active_but_not_link_up_is_down(node: FakeHost) -> None:
    base = ref(IB).ports[0].path
    node.write(f"{base}/phys_state", "2: Polling\n")
    assert hca_down_reason(node.host, ref(IB)) == f"{IB} (mlx5_2 port 1 ACTIVE/Polling)"


def test_down_reasons(node: FakeHost) -> None:
    assert hca_down_reason(node.host, ref(ROCE0)) is None
    node.set_link(NETDEV[ROCE0], False)
    assert hca_down_reason(node.host, ref(ROCE0)) == f"{ROCE0} (netdev enp59s0f0np0: no carrier)"
    node.remove(f"/sys/class/net/{NETDEV[ROCE0]}/carrier")  # EINVAL-like: admin down
    assert "operstate down" in str(hca_down_reason(node.host, ref(ROCE0)))
    node.remove_netdev(NETDEV[ROCE0])  # netdev left the host namespace: ports decide
    assert read_netdev(node.host, NETDEV[ROCE0]) is None
    assert hca_down_reason(node.host, ref(ROCE0)) is None
    node.remove_pci(ROCE0)
    assert hca_down_reason(node.host, ref(ROCE0)) == f"{ROCE0} (mlx5_0 port 1 vanished)"
    assert "no RDMA ports" in str(hca_down_reason(node.host, HcaRef(IB, ())))


def test_unreadable_port_state_names_the_file(node: FakeHost) -> None:
    state = f"{ref(IB).ports[0].path}/state"
    node.write(state, "banana\n")
    assert hca_down_reason(node.host, ref(IB)) == (
        f"{IB} (mlx5_2 port 1 state unreadable ({state}: 'banana'))"
    )
    node.remove(state)
    assert hca_down_reason(node.host, ref(IB)) == f"{IB} (mlx5_2 port 1 state unreadable ({state}))"


class FakeContext:
    def __init__(self, name: str) -> None:
        if name != "mlx5_0":
            raise RuntimeError(f"Failed to find device {name}")

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def query_port(self, port: int) -> Any:
        return SimpleNamespace(state=4, phys_state=5)


def test_pyverbs_is_optional_and_only_used_on_the_real_host(
    node: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verbs, "_device", None)
    assert not verbs.available()
    assert verbs.query_port(HostFS("/"), "mlx5_0", 1) is None
    monkeypatch.setattr(verbs, "_device", SimpleNamespace(Context=FakeContext))
    assert verbs.available()
    assert verbs.query_port(node.host, "mlx5_0", 1) is None  # --host-root is not this machine
    assert verbs.query_port(HostFS("/"), "mlx5_0", 1) == (4, 5)
    assert verbs.query_port(HostFS("/"), "mlx5_9", 1) is None  # errors mean "unknown"
    missing = PortRef("mlx5_0", 1, "/sys/bus/pci/devices/0000:ff:1f.7/infiniband/mlx5_0/ports/1")
    status = read_port(HostFS("/"), missing)  # sysfs unreadable: verbs answers
    assert status is not None and status.active


def _slots(count: int, edits: ContainerEdits) -> tuple[Device, ...]:
    return tuple(Device(str(i), edits=edits, health_key="k") for i in range(count))


def test_allocator_returns_the_shared_edits_and_cheap_preferences() -> None:
    edits = ContainerEdits(device_nodes=(DeviceNode("/dev/infiniband/uverbs0"),))
    slots = _slots(6, edits)
    allocator = SharedSlotAllocator()
    assert allocator.allocate(AllocationRequest("rdma/r", slots[:3])) is edits
    other = ContainerEdits(device_nodes=(DeviceNode("/dev/infiniband/uverbs1"),))
    mixed = (slots[0], Device("x", edits=other))
    merged = allocator.allocate(AllocationRequest("rdma/r", mixed))
    assert [n.host_path for n in merged.device_nodes] == [
        "/dev/infiniband/uverbs0",
        "/dev/infiniband/uverbs1",
    ]
    request = PreferredRequest("rdma/r", slots[::-1], (slots[2],), 3)
    assert allocator.preferred(request) == ["2", "5", "4"]
    assert allocator.preferred(PreferredRequest("rdma/r", slots, slots[:4], 2)) == list("0123")
