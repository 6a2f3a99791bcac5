"""Port-state health: a resource is Unhealthy while *all* its matched HCAs are down.

Every ``healthCheckInterval`` (default 0.5 s, so a fault reaches the kubelet within a second)
the checker reads, per matched HCA (from the slots' :class:`~.discovery.SharedHcas` payload),
each port's ``state``/``phys_state`` and the netdev's ``operstate``/``carrier`` — a handful of
small sysfs files, never a PCI rescan. One working HCA keeps the shared slots Healthy (pods can
still reach the fabric through it); the framework's hysteresis brings them back after
``recover_after`` good checks. An HCA whose PCI function vanished (hot removal) asks for a
rescan at once; while others remain the slots stay Healthy (Allocate leaves the vanished one
out), and when none remains they are Unhealthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from devplugin_core import Device, HealthChecker, HostFS, Observation

from .discovery import SharedHcas
from .ports import hca_down_reason

__all__ = ["PortHealthChecker"]


class PortHealthChecker(HealthChecker):
    """Checks the HCAs behind each health key of one resource."""

    recover_after = 2

    def __init__(self, host: HostFS, interval: float) -> None:
        self.host = host
        self.interval = interval
        self.timeout = max(2.0, 4 * interval)
        self._devices: Sequence[Device] | None = None
        self._groups: tuple[tuple[str, SharedHcas], ...] = ()

    def _by_key(self, devices: Sequence[Device]) -> tuple[tuple[str, SharedHcas], ...]:
        # The framework hands over the same tuple until a scan changes it: with 100 000 slots
        # sharing one key, grouping once per device list keeps a tick cheap.
        if devices is not self._devices:
            groups: dict[str, SharedHcas] = {}
            for d in devices:
                if d.health_key not in groups:
                    groups[d.health_key] = d.payload_as(SharedHcas)
            self._groups = tuple(groups.items())
            self._devices = devices
        return self._groups

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        observations: dict[str, Observation] = {}
        for key, payload in self._by_key(devices):
            hcas = payload.hcas
            gone = [
                h.address for h in hcas if not self.host.exists(f"/sys/bus/pci/devices/{h.address}")
            ]
            left = [h for h in hcas if h.address not in gone]
            down = [reason for hca in left if (reason := hca_down_reason(self.host, hca))]
            vanished = f"HCA {', '.join(gone)} vanished" if gone else ""
            if not left:
                observations[key] = Observation.gone(
                    f"every matched HCA vanished ({', '.join(gone)})"
                )
            elif len(down) == len(left):
                reason = "all matched HCAs are down: " + "; ".join(down)
                observations[key] = Observation(
                    False, f"{reason}; {vanished}" if gone else reason, rescan=bool(gone)
                )
            elif gone:
                observations[key] = Observation(True, vanished, rescan=True)
            else:
                observations[key] = Observation.ok()
        return observations
