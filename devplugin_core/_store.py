"""Per-resource device state: the latest snapshot plus a version, never a queue.

Producers (discovery, health) publish full snapshots; publishing never blocks. Consumers
(ListAndWatch streams, any number of them, or none) wait for a version newer than the one they
sent and then read the latest snapshot, so bursts coalesce and nobody can stall a producer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from ._model import Device, Health

__all__ = ["ResourceState", "Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """What one resource advertises: devices in order, their health, and a version."""

    version: int
    devices: tuple[Device, ...] = ()
    health: Mapping[str, Health] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", MappingProxyType({d.id: d for d in self.devices}))

    by_id: Mapping[str, Device] = field(init=False, repr=False, compare=False)

    def healthy(self, device_id: str) -> bool:
        return self.health.get(device_id) is Health.HEALTHY

    def counts(self) -> tuple[int, int]:
        """(healthy, unhealthy) device counts."""
        good = sum(1 for h in self.health.values() if h is Health.HEALTHY)
        return good, len(self.health) - good


class ResourceState:
    """The latest snapshot of one resource and a way to wait for a newer one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.snapshot = Snapshot(0)
        self._changed = asyncio.Event()

    def publish(self, devices: Sequence[Device], health: Mapping[str, Health]) -> bool:
        """Replace the snapshot if it differs; returns True when a new version was published."""
        devices = tuple(devices)
        old = self.snapshot
        # Lengths first: tuple equality compares items before sizes, and 10 000 fresh Device
        # values (a discovery pass) would each be compared field by field.
        if (
            old.version
            and len(old.devices) == len(devices)
            and old.devices == devices
            and old.health == health
        ):
            return False
        self.snapshot = Snapshot(old.version + 1, devices, MappingProxyType(dict(health)))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    async def wait_newer(self, version: int) -> Snapshot:
        """The latest snapshot once its version is greater than ``version``."""
        while self.snapshot.version <= version:
            await self._changed.wait()
        return self.snapshot
