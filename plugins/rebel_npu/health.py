"""NPU health: cheap sysfs and /dev checks every ``health.interval`` plus rbln-smi's view.

A device is bad when (sysfs, every check):

* its PCI function is gone (``/sys/bus/pci/devices/<bdf>`` missing);
* it is not bound to the ``rebellions`` driver any more;
* its char device ``/dev/rblnN`` is missing;

and, with ``health.useRblnSmi`` when ``rbln-smi -j`` works and its last report is fresh (polled
in the background every ``rblnSmiInterval``, never on the Allocate path):

* the ``status`` it reports is not one of ``health.healthyStatuses`` (``normal``);
* its temperature is at or above ``health.maxTemperatureCelsius`` (when set).

A device rbln-smi does not list, or an rbln-smi that fails, is no health signal (the tool
being broken is not the NPU being broken); the failure is logged and counted instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from devplugin_core import Device, HealthChecker, HostFS, HostReadError, Observation

from .config import HealthConfig
from .discovery import DRIVER
from .smi import SmiMonitor

__all__ = ["NpuHealth"]


class NpuHealth(HealthChecker):
    """Health of one resource's NPUs; the rbln-smi monitor is shared by all resources."""

    timeout = 2.0

    def __init__(self, host: HostFS, config: HealthConfig, monitor: SmiMonitor) -> None:
        self.host = host
        self.config = config
        self.monitor = monitor
        self.interval = config.interval
        self.recover_after = config.recover_after
        self.healthy_statuses = frozenset(s.lower() for s in config.healthy_statuses)
        self.last: dict[str, Observation] = {}
        self._lock = threading.Lock()

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        report = self.monitor.fresh() if self.config.use_rbln_smi else None
        out: dict[str, Observation] = {}
        for device in devices:
            problem = self._sysfs_problem(device)
            if problem is None and report is not None:
                seen = report.by_bus.get(device.id)
                if seen is not None:
                    if seen.status and seen.status.lower() not in self.healthy_statuses:
                        problem = f"rbln-smi reports status {seen.status!r}"
                    elif (
                        self.config.max_temperature
                        and seen.temperature is not None
                        and seen.temperature >= self.config.max_temperature
                    ):
                        problem = (
                            f"rbln-smi reports {seen.temperature:g} C (limit "
                            f"{self.config.max_temperature:g} C)"
                        )
            out[device.health_key] = (
                Observation.ok() if problem is None else Observation.bad(problem)
            )
        with self._lock:
            self.last = out
        return out

    def _sysfs_problem(self, device: Device) -> str | None:
        base = f"/sys/bus/pci/devices/{device.id}"
        try:
            if not self.host.exists(base):
                return f"PCI function {device.id} vanished"
            driver = self.host.link_name(f"{base}/driver")
        except HostReadError as err:
            return str(err)
        if driver != DRIVER:
            return f"driver unbound (now {driver or 'none'})"
        name = device.attributes.get("npu", "")
        if name and not self.host.exists(f"/dev/{name}"):
            return f"/dev/{name} is missing"
        return None

    def observation(self, device_id: str) -> Observation | None:
        with self._lock:
            return self.last.get(device_id)

    async def watch(
        self, devices: Callable[[], Sequence[Device]], wake: Callable[[], None]
    ) -> None:
        if self.monitor.enabled:
            await self.monitor.watch(wake)
