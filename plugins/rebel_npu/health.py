"""NPU health: cheap sysfs and /dev checks every ``health.interval`` plus rbln-smi's view.

A device is bad when (sysfs, every check):

* its PCI function is gone (``/sys/bus/pci/devices/<bdf>`` missing; this also asks the
  framework for a rescan at once, which drops the device);
* it is not bound to the driver it was found with (``rebellions``, or ``vfio-pci`` for a
  passed-through NPU) any more;
* its char device ``/dev/rblnN`` is missing;
* passed through: its IOMMU group changed (also a rescan), ``/dev/vfio/vfio`` or the group's
  node is missing, or the group is not viable for VFIO (:mod:`.passthrough`);

and, with ``health.useRblnSmi`` when ``rbln-smi -j`` works and its last report is fresh (polled
in the background every ``rblnSmiInterval``, never on the Allocate path):

* the ``status`` it reports is not one of ``health.healthyStatuses`` (``normal``);
* its temperature is at or above ``health.maxTemperatureCelsius`` (when set).

A device rbln-smi does not list, or an rbln-smi that fails, is no health signal (the tool
being broken is not the NPU being broken); the failure is logged and counted instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from devplugin_core import Device, HealthChecker, HostFS, HostReadError, Observation

from .config import HealthConfig
from .discovery import NpuInfo
from .passthrough import Blockers, passthrough_problem
from .smi import SmiDevice, SmiMonitor

__all__ = ["NpuHealth"]


class NpuHealth(HealthChecker):
    """Health of NPUs (one instance serves every resource; it keeps no state of its own
    beyond the rbln-smi monitor)."""

    timeout = 2.0

    def __init__(self, host: HostFS, config: HealthConfig, monitor: SmiMonitor) -> None:
        self.host = host
        self.config = config
        self.monitor = monitor
        self.interval = config.interval
        self.recover_after = config.recover_after
        self.healthy_statuses = frozenset(s.lower() for s in config.healthy_statuses)

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        report = self.monitor.fresh() if self.config.use_rbln_smi else None
        out: dict[str, Observation] = {}
        groups: Blockers = {}
        for device in devices:
            npu = device.payload_as(NpuInfo)
            observation = self._sysfs(device.id, npu, groups)
            if observation is None and report is not None and not npu.passthrough:
                observation = self._smi(report.by_bus.get(device.id))
            out[device.health_key] = observation or Observation.ok()
        return out

    def _sysfs(self, address: str, npu: NpuInfo, groups: Blockers) -> Observation | None:
        base = f"/sys/bus/pci/devices/{address}"
        try:
            if not self.host.exists(base):
                return Observation.gone(f"PCI function {address} vanished")
            driver = self.host.link_name(f"{base}/driver")
        except HostReadError as err:
            return Observation.bad(str(err))
        if driver != npu.driver:
            return Observation.bad(f"driver unbound (now {driver or 'none'})")
        if npu.passthrough:
            return passthrough_problem(self.host, address, npu.iommu_group, npu.noiommu, groups)
        name = npu.npu
        if not self.host.exists(f"/dev/{name}"):
            return Observation.bad(f"/dev/{name} is missing")
        return None

    def _smi(self, seen: SmiDevice | None) -> Observation | None:
        if seen is None:
            return None
        if seen.status and seen.status.lower() not in self.healthy_statuses:
            return Observation.bad(f"rbln-smi reports status {seen.status!r}")
        limit = self.config.max_temperature
        if limit and seen.temperature is not None and seen.temperature >= limit:
            return Observation.bad(f"rbln-smi reports {seen.temperature:g} C (limit {limit:g} C)")
        return None

    async def watch(
        self, devices: Callable[[], Sequence[Device]], wake: Callable[[], None]
    ) -> None:
        if self.monitor.enabled:
            await self.monitor.watch(wake)
