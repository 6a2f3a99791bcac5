"""Port-state health: a resource is Unhealthy while *all* its matched HCAs are down.

Every ``healthCheckInterval`` (default 0.5 s, so a fault reaches the kubelet within a second)
the checker reads, per matched HCA, each port's ``state``/``phys_state`` and the netdev's
``operstate``/``carrier`` — a handful of small sysfs files, never a PCI rescan. One working HCA
keeps the shared slots Healthy (pods can still reach the fabric through it); the framework's
hysteresis brings them back after ``recover_after`` good checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from devplugin_core import Device, HealthChecker, HostFS, Observation

from .ports import hca_down_reason
from .state import PluginState

__all__ = ["PortHealthChecker"]


class PortHealthChecker(HealthChecker):
    """Checks the HCAs behind each health key of one resource."""

    recover_after = 2

    def __init__(self, host: HostFS, state: PluginState, interval: float) -> None:
        self.host = host
        self.state = state
        self.interval = interval
        self.timeout = max(2.0, 4 * interval)
        self._devices: Sequence[Device] | None = None
        self._keys: tuple[str, ...] = ()

    def _health_keys(self, devices: Sequence[Device]) -> tuple[str, ...]:
        # The runtime hands over the same tuple until discovery changes it: with 100 000 slots
        # sharing one key, finding the keys once per device list keeps a tick cheap.
        if devices is not self._devices:
            self._keys = tuple(dict.fromkeys(d.health_key for d in devices))
            self._devices = devices
        return self._keys

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        observations: dict[str, Observation] = {}
        for key in self._health_keys(devices):
            hcas = self.state.hcas_for(key)
            if not hcas:
                continue
            down = [reason for hca in hcas if (reason := hca_down_reason(self.host, hca))]
            if len(down) == len(hcas):
                observations[key] = Observation.bad("all matched HCAs are down: " + "; ".join(down))
            else:
                observations[key] = Observation.ok()
        return observations
