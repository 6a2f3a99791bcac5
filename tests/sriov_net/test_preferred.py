"""GetPreferredAllocation (upstream has none): must-include, then one NUMA node, then spread
over PFs (default) or pack per PF (``allocationPolicy: packed``)."""

from __future__ import annotations

from collections import Counter

import pytest

from devplugin_core.testing import FakeHost, FakeKubelet

from .helpers import add_pf_with_vfs, doc, pool, serve

RES = "intel.com/vfs"


def node(host: FakeHost) -> dict[str, list[str]]:
    """NUMA 0: PFs A and B with 2 VFs each; NUMA 1: PFs C and D with 3 VFs each."""
    layout = {
        "A": ("0000:11:00.0", 0, 2),
        "B": ("0000:12:00.0", 0, 2),
        "C": ("0000:21:00.0", 1, 3),
        "D": ("0000:22:00.0", 1, 3),
    }
    return {
        name: add_pf_with_vfs(host, pf, f"ens{pf[5:7]}", count, numa=numa)
        for name, (pf, numa, count) in layout.items()
    }


def pfs_of(vfs: dict[str, list[str]], chosen: list[str]) -> Counter[str]:
    owner = {vf: pf for pf, members in vfs.items() for vf in members}
    return Counter(owner[c] for c in chosen)


async def preferred(
    host: FakeHost,
    kubelet: FakeKubelet,
    size: int,
    must: list[str] | None = None,
    available: list[str] | None = None,
    **fields: object,
) -> list[str]:
    async with serve(host, kubelet, doc(pool("vfs", {}, **fields))):
        conn = await kubelet.wait_for_registration(RES)
        everything = [d.ID for d in conn.devices]
        return await kubelet.preferred(RES, available or everything, must or [], size)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1, {"A": 1}),
        (2, {"A": 1, "B": 1}),  # the smallest NUMA node that fits, one VF per PF
        (4, {"A": 2, "B": 2}),
        (5, {"C": 3, "D": 2}),  # only NUMA 1 fits five: spread over C and D
        (6, {"C": 3, "D": 3}),
        (8, {"C": 3, "D": 3, "A": 1, "B": 1}),  # nothing fits: the biggest node, then the next
    ],
)
async def test_spread_inside_one_numa_node(
    fake_host: FakeHost, fake_kubelet: FakeKubelet, size: int, expected: dict[str, int]
) -> None:
    vfs = node(fake_host)
    chosen = await preferred(fake_host, fake_kubelet, size)
    assert len(chosen) == size and len(set(chosen)) == size
    assert pfs_of(vfs, chosen) == Counter(expected)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (2, {"A": 2}),
        (3, {"A": 2, "B": 1}),  # NUMA first: node 0 fits three, then whole PFs first
        (5, {"C": 3, "D": 2}),
    ],
)
async def test_packed_fills_as_few_pfs_as_possible(
    fake_host: FakeHost, fake_kubelet: FakeKubelet, size: int, expected: dict[str, int]
) -> None:
    vfs = node(fake_host)
    chosen = await preferred(fake_host, fake_kubelet, size, allocationPolicy="packed")
    assert pfs_of(vfs, chosen) == Counter(expected)


async def test_must_include_anchors_numa_node_and_counts_for_the_spread(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = node(fake_host)
    chosen = await preferred(fake_host, fake_kubelet, 2, must=[vfs["C"][1]])
    assert chosen[0] == vfs["C"][1]
    assert pfs_of(vfs, chosen) == Counter({"C": 1, "D": 1})


async def test_must_include_filling_the_request_is_the_answer(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = node(fake_host)
    must = [vfs["D"][0], vfs["A"][0]]
    assert await preferred(fake_host, fake_kubelet, 2, must=must) == must


async def test_only_available_ids_are_returned(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = node(fake_host)
    available = [vfs["A"][0], vfs["C"][0], vfs["C"][1]]
    chosen = await preferred(fake_host, fake_kubelet, 2, available=available)
    assert set(chosen) == {vfs["C"][0], vfs["C"][1]}


async def test_without_topology_spread_still_applies(
    fake_host: FakeHost, fake_kubelet: FakeKubelet
) -> None:
    vfs = node(fake_host)
    chosen = await preferred(fake_host, fake_kubelet, 4, excludeTopology=True)
    assert pfs_of(vfs, chosen) == Counter({"A": 1, "B": 1, "C": 1, "D": 1})
