"""``devplugin_npu_*`` metrics, built at scrape time from the advertised devices (their
:class:`~.discovery.NpuInfo` payloads and health) and the last rbln-smi report (base units:
celsius, watts, bytes, ratio 0-1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from devplugin_core import Snapshot

from .discovery import NpuInfo
from .rsd import RsdGroups
from .smi import SmiDevice, SmiMonitor

__all__ = ["NpuCollector"]

_LABELS = ["resource", "device", "npu", "card"]


_GAUGES: tuple[tuple[str, str, Callable[[SmiDevice], float | None]], ...] = (
    (
        "devplugin_npu_temperature_celsius",
        "NPU temperature reported by rbln-smi.",
        lambda d: d.temperature,
    ),
    ("devplugin_npu_power_watts", "Card power reported by rbln-smi.", lambda d: d.power),
    ("devplugin_npu_memory_used_bytes", "NPU memory in use.", lambda d: d.memory_used),
    ("devplugin_npu_memory_total_bytes", "NPU memory size.", lambda d: d.memory_total),
    ("devplugin_npu_utilization_ratio", "NPU utilisation (0-1).", lambda d: d.utilization),
)


class NpuCollector:
    """Per-NPU gauges plus rbln-smi and RSD-group state, for every served resource."""

    def __init__(self, monitor: SmiMonitor, rsd: RsdGroups) -> None:
        self.monitor = monitor
        self.rsd = rsd

    def collect(self, snapshots: Mapping[str, Snapshot]) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "devplugin_npu_healthy",
            "1 if the NPU is advertised Healthy.",
            labels=_LABELS,
        )
        info = GaugeMetricFamily(
            "devplugin_npu_info",
            "NPU identity; always 1.",
            labels=[*_LABELS, "uuid", "firmware_version", "driver_version"],
        )
        gauges = [
            (GaugeMetricFamily(name, text, labels=_LABELS), get) for name, text, get in _GAUGES
        ]
        report = self.monitor.fresh()
        for resource, snapshot in snapshots.items():
            for device in snapshot.devices:
                npu = device.payload
                if not isinstance(npu, NpuInfo):
                    continue
                labels = [resource, device.id, npu.npu, npu.card]
                healthy.add_metric(labels, 1 if snapshot.healthy(device.id) else 0)
                # rbln-smi only sees NPUs bound to rebellions, not passed-through ones
                smi = (
                    report.by_bus.get(device.id)
                    if report is not None and not npu.passthrough
                    else None
                )
                identity = [smi.uuid, smi.firmware] if smi else ["", ""]
                info.add_metric([*labels, *identity, npu.driver_version], 1)
                if smi is None:
                    continue
                for family, get in gauges:
                    value = get(smi)
                    if value is not None:
                        family.add_metric(labels, value)
        yield healthy
        yield info
        for family, _ in gauges:
            yield family
        yield from self._tool_metrics()

    def _tool_metrics(self) -> Iterator[Metric]:
        polls = CounterMetricFamily(
            "devplugin_npu_rbln_smi_polls", "rbln-smi -j polls, by result.", labels=["result"]
        )
        for result, count in self.monitor.polls.items():
            polls.add_metric([result], count)
        yield polls
        last = GaugeMetricFamily(
            "devplugin_npu_rbln_smi_last_success_timestamp_seconds",
            "Unix time of the last successful rbln-smi -j poll.",
        )
        last.add_metric([], self.monitor.last_success_time)
        yield last
        mode = GaugeMetricFamily(
            "devplugin_npu_rsd_groups_enabled",
            "1 if every allocation gets its own RSD group; 0 when RSD groups are off "
            "(configured 'off', or 'auto' without a usable rbln-smi).",
            labels=["configured", "effective"],
        )
        effective = self.rsd.peek()
        mode.add_metric([self.rsd.configured, effective], 1 if effective == "create" else 0)
        yield mode
        groups = CounterMetricFamily(
            "devplugin_npu_rsd_groups", "RSD group assignments, by result.", labels=["result"]
        )
        for result, count in self.rsd.results.items():
            groups.add_metric([result], count)
        yield groups
