"""Allocation for shared slots: every slot of a resource grants the same device nodes."""

from __future__ import annotations

from collections.abc import Sequence

from devplugin_core import AllocationRequest, Allocator, ContainerEdits, PreferredRequest

__all__ = ["SharedSlotAllocator"]


class SharedSlotAllocator(Allocator):
    """Slots are interchangeable: no NUMA packing, no per-slot merging."""

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        """The shared edits (all slots carry one object); a general merge otherwise."""
        devices = request.devices
        if devices and all(d.edits is devices[0].edits for d in devices):
            return devices[0].edits
        return super().allocate(request)

    def preferred(self, request: PreferredRequest) -> Sequence[str]:
        """``must_include`` first, then the first available slots: O(size), not O(slots)."""
        chosen = list(dict.fromkeys(d.id for d in request.must_include))
        taken = set(chosen)
        for device in request.available:
            if len(chosen) >= request.size:
                break
            if device.id not in taken:
                chosen.append(device.id)
                taken.add(device.id)
        return chosen
