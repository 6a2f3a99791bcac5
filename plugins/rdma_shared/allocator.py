"""Allocation for shared slots: every slot of a resource grants the same device nodes."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from devplugin_core import AllocationRequest, Allocator, ContainerEdits, Device, PreferredRequest

__all__ = ["SharedSlotAllocator"]


class SharedSlotAllocator(Allocator):
    """Slots are interchangeable: no NUMA packing, no per-slot merging."""

    reusable = True  # every answer depends only on the slots' edits and parts

    def reuse_key(self, devices: Sequence[Device]) -> Hashable:
        """Slots are interchangeable: requests of equally many identical slots share one
        answer, whichever slot IDs they name."""
        first = devices[0]
        if all(d.edits is first.edits and d.parts is first.parts for d in devices):
            return ("slots", len(devices))
        return tuple(d.id for d in devices)

    def __init__(self) -> None:
        self._merged: tuple[object, object, ContainerEdits] | None = None

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        """The shared edits: every slot carries the same edits and parts (the framework may
        have left vanished parts out), so one slot's merge answers the request; it is kept
        until the slots change."""
        devices = request.devices
        first = devices[0]
        if not all(d.edits is first.edits and d.parts is first.parts for d in devices):
            return super().allocate(request)
        cached = self._merged
        if cached is not None and cached[0] is first.edits and cached[1] is first.parts:
            return cached[2]
        merged = first.all_edits
        self._merged = (first.edits, first.parts, merged)
        return merged

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
