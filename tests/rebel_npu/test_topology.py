"""GetPreferredAllocation: one bridge/NUMA rule, pinned against upstream's CA22 and CA25 picks.

Upstream groups CA22 devices by the PCI component at index 1 of the resolved sysfs path (the
PCIe switch holding four cards) and CA25 devices by index 2 (the host-switch port of one card,
whose four NPUs sit behind the card's own switch). These hosts are built the same way and the
expected picks are what upstream's allocator returns for them (ties broken by address here).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from devplugin_plugins.rebel_npu import SPEC
from devplugin_plugins.rebel_npu.allocate import preferred
from devplugin_plugins.rebel_npu.testing import add_ca22_switches, add_ca25_card, add_sriov_npu

from devplugin_core import Device, PreferredRequest
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, CA22, built, config, discover


def bdf(bus: int) -> str:
    return f"0000:{bus:02x}:00.0"


def pick(
    devices: Sequence[Device],
    size: int,
    *,
    free: Sequence[str] | None = None,
    must: Sequence[str] = (),
) -> list[str]:
    by_id = {d.id: d for d in devices}
    available = [by_id[i] for i in (free if free is not None else by_id)]
    request = PreferredRequest(ATOM, tuple(available), tuple(by_id[i] for i in must), size)
    chosen = preferred(request)
    # must-include first (in request order), the rest in address order
    return [*must, *sorted(chosen[len(must) :])]


@pytest.fixture
def ca22_16(fake_host: FakeHost) -> list[Device]:
    """Two NUMA nodes x two PCIe switches x four CA22: switches at buses 0x13-0x16,
    0x23-0x26 (NUMA 0) and 0x33-0x36, 0x43-0x46 (NUMA 1)."""
    add_ca22_switches(fake_host, numa_nodes=2, switches_per_numa=2, cards_per_switch=4)
    devices, _ = discover(fake_host, built(fake_host))
    return devices[ATOM]


def switch(first_bus: int) -> list[str]:
    return [bdf(first_bus + i) for i in range(4)]


def test_ca22_full_switch_for_four(ca22_16: list[Device]) -> None:
    assert pick(ca22_16, 4) == switch(0x13)
    assert pick(ca22_16, 2) == switch(0x13)[:2]


def test_ca22_exact_switch_and_single_switch_over_smaller_node(ca22_16: list[Device]) -> None:
    free = [*switch(0x13)[:3], *switch(0x23)[:2], *switch(0x33), *switch(0x43)]
    # size 3: the switch with exactly three free cards (upstream: fewest-device NUMA node
    # that has a single bridge able to hold the request, then the exact-fit bridge)
    assert pick(ca22_16, 3, free=free) == switch(0x13)[:3]
    # size 4: NUMA 0 has five free cards but on two switches; NUMA 1 has a whole switch
    assert pick(ca22_16, 4, free=free) == switch(0x33)


def test_ca22_spills_switch_then_node(ca22_16: list[Device]) -> None:
    assert pick(ca22_16, 6) == [*switch(0x13), *switch(0x23)[:2]]
    ten = pick(ca22_16, 10)
    assert ten[:8] == [*switch(0x13), *switch(0x23)]
    assert ten[8:] == switch(0x33)[:2]  # the rest together on one switch


def test_must_include_is_honoured(ca22_16: list[Device]) -> None:
    # upstream ignored must_include; here it is kept and the rest packed around it
    assert pick(ca22_16, 4, must=[bdf(0x36)]) == [bdf(0x36), *switch(0x33)[:3]]
    assert pick(ca22_16, 2, must=[bdf(0x36), bdf(0x13)]) == [bdf(0x36), bdf(0x13)]
    assert pick(ca22_16, 3, must=[bdf(0x46), bdf(0x45)]) == [bdf(0x46), bdf(0x45), bdf(0x43)]


@pytest.fixture
def ca25_16(fake_host: FakeHost) -> tuple[list[Device], list[list[str]]]:
    """Two NUMA nodes x one host switch x two CA25 cards x four NPUs."""
    cards = [add_ca25_card(fake_host, 0x40, slot, numa=0) for slot in (0, 1)]
    cards += [add_ca25_card(fake_host, 0x80, slot, numa=1) for slot in (0, 1)]
    devices, _ = discover(fake_host, built(fake_host))
    return devices[ATOM], cards


def test_ca25_one_card_for_four(ca25_16: tuple[list[Device], list[list[str]]]) -> None:
    devices, cards = ca25_16
    assert pick(devices, 4) == cards[0]
    assert pick(devices, 8) == [*cards[0], *cards[1]]


def test_ca25_exact_card_and_whole_card_elsewhere(
    ca25_16: tuple[list[Device], list[list[str]]],
) -> None:
    devices, cards = ca25_16
    free = [*cards[0][:2], *cards[1], *cards[2], *cards[3]]
    assert pick(devices, 2, free=free) == cards[0][:2]  # the card with exactly two left
    free = [*cards[0][:2], *cards[1][:3], *cards[2], *cards[3]]
    assert pick(devices, 4, free=free) == cards[2]  # a whole card on the other node
    assert pick(devices, 3, free=free) == cards[1][:3]


def test_vfs_of_one_pf_stay_together(fake_host: FakeHost) -> None:
    add_sriov_npu(fake_host, "0000:31:00.0", ["0000:31:00.1", "0000:31:00.2"], numa=0)
    add_sriov_npu(fake_host, "0000:32:00.0", ["0000:32:00.1", "0000:32:00.2"], numa=0)
    devices, _ = discover(fake_host, built(fake_host))
    free = ["0000:31:00.1", "0000:32:00.1", "0000:32:00.2"]
    assert pick(devices[ATOM], 2, free=free) == ["0000:32:00.1", "0000:32:00.2"]


async def test_preferred_through_the_kubelet(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="off")):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        options = await fake_kubelet.options(ATOM)
        assert options.get_preferred_allocation_available
        assert await fake_kubelet.preferred(ATOM, CA22, [], 2) == CA22[:2]
        assert await fake_kubelet.preferred(ATOM, CA22, [CA22[2]], 2) == [CA22[2], CA22[3]]
        assert await fake_kubelet.preferred(ATOM, [CA22[0], CA22[2], CA22[3]], [], 2) == CA22[2:]
