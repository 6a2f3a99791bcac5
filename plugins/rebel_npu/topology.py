"""Preferred allocation: one rule for every product, from attributes set at discovery.

Devices are grouped by NUMA node, then by each PCI bridge on their path from the root port
down (``pciBridges``), then by physical function (VFs of one PF together). The allocation
packs into the fewest groups level by level, preferring one group at any depth that can hold
the whole request (see :func:`~plugins.rebel_npu.generic.prefer_nested`). For a CA22 (cards
behind PCIe switches) this is upstream's "bridge index 1" grouping; for a CA25 (four NPUs
behind the card's own switch) upstream's "bridge index 2"; neither depth is hard-coded here.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from devplugin_core import Device, PreferredRequest
from devplugin_core.allocation import KeyFn, prefer_nested

__all__ = ["bridges_of", "levels_for", "preferred"]


def bridges_of(device: Device) -> tuple[str, ...]:
    text = device.attributes.get("pciBridges", "")
    return tuple(text.split(",")) if text else ()


def _numa(device: Device) -> Hashable:
    return device.numa_nodes or None


def _bridge(depth: int) -> KeyFn:
    def key(device: Device) -> Hashable:
        chain = bridges_of(device)
        if len(chain) > depth:
            return chain[: depth + 1]
        return ("-", device.id)  # nothing shared this deep: a group of its own

    return key


def _function(device: Device) -> Hashable:
    return device.attributes.get("pf") or device.id


def levels_for(devices: Sequence[Device]) -> list[KeyFn]:
    """Grouping keys from the outermost (NUMA) to the innermost (physical function)."""
    depth = max((len(bridges_of(d)) for d in devices), default=0)
    return [_numa, *(_bridge(i) for i in range(depth)), _function]


def preferred(request: PreferredRequest) -> list[str]:
    """The preferred IDs for ``request`` (must-include first, always kept)."""
    return prefer_nested(request, levels_for((*request.available, *request.must_include)))
