"""Allocation for shared slots: every slot of a resource grants the same device nodes."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from devplugin_core import AllocationRequest, Allocator, ContainerEdits, Device, PreferredRequest

__all__ = ["SharedSlotAllocator"]


class SharedSlotAllocator(Allocator):
    """Slots are interchangeable: no NUMA packing, no per-slot merging."""

    reusable = True  # every answer depends only on the slots' edits and parts
    build_ahead = True  # identical slots share one answer: a few builds per HCA set

    def reuse_key(self, devices: Sequence[Device]) -> Hashable:
        """Slots are interchangeable: requests of equally many identical slots share one
        answer, whichever slot IDs they name."""
        if _identical(devices):
            return ("slots", len(devices))
        return tuple(d.id for d in devices)

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        """The shared edits: every slot carries the same edits and parts (the framework may
        have left vanished parts out), so one slot's merge answers the request (and the
        framework keeps that answer until the slots change)."""
        if _identical(request.devices):
            return request.devices[0].all_edits
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


def _identical(devices: Sequence[Device]) -> bool:
    """All slots of one template: the same edits and parts objects."""
    first = devices[0]
    return all(d.edits is first.edits and d.parts is first.parts for d in devices)
