"""Framework metrics (``devplugin_*``), on an injected Prometheus registry.

Counters and histograms are updated where things happen; per-device gauges are built at scrape
time from the current snapshots by :class:`SnapshotCollector`, so a vanished device leaves no
stale series. Plugins add their own collectors (``Plugin.collectors``), which are handed the
same snapshots (:class:`PluginCollectors`).
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

try:  # prometheus_client >= 0.17: drop the *_created series
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]
except ImportError:  # pragma: no cover
    pass

from ._store import Snapshot

log = logging.getLogger("devplugin.metrics")

__all__ = ["Metrics", "PluginCollectors", "ResourceView", "SnapshotCollector"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SCAN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every framework metric, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, plugin: str, version: str) -> None:
        self.registry = registry
        r = registry
        build = Gauge(
            "devplugin_build_info",
            "Build information; always 1.",
            ["plugin", "version", "api_version", "python_version", "grpc_version"],
            registry=r,
        )
        build.labels(plugin, version, "v1beta1", platform.python_version(), grpc.__version__).set(1)
        self.registered = Gauge(
            "devplugin_registered",
            "1 while the resource is registered with the kubelet and serving.",
            ["resource", "mode"],
            registry=r,
        )
        self.registrations = Counter(
            "devplugin_registrations_total",
            "Registration attempts with the kubelet.",
            ["resource", "result"],
            registry=r,
        )
        self.last_registration = Gauge(
            "devplugin_last_registration_timestamp_seconds",
            "Unix time of the last successful registration.",
            ["resource"],
            registry=r,
        )
        self.kubelet_restarts = Counter(
            "devplugin_kubelet_restarts_detected_total",
            "Kubelet restarts or lost registrations detected, by how they were noticed.",
            ["reason"],
            registry=r,
        )
        self.server_restarts = Counter(
            "devplugin_server_restarts_total",
            "gRPC server restarts of a resource endpoint, by reason.",
            ["resource", "reason"],
            registry=r,
        )
        self.streams = Gauge(
            "devplugin_listandwatch_streams",
            "Open ListAndWatch streams (1 is normal; 0 means the kubelet is not watching).",
            ["resource"],
            registry=r,
        )
        self.updates = Counter(
            "devplugin_listandwatch_updates_total",
            "Device lists sent on ListAndWatch streams.",
            ["resource"],
            registry=r,
        )
        self.transitions = Counter(
            "devplugin_device_health_transitions_total",
            "Health changes of a device (or health group), by new state.",
            ["resource", "device", "to"],
            registry=r,
        )
        self.health_checks = Counter(
            "devplugin_health_checks_total",
            "Health check runs, by result (ok, error, timeout).",
            ["resource", "result"],
            registry=r,
        )
        self.health_duration = Histogram(
            "devplugin_health_check_duration_seconds",
            "Duration of health check runs.",
            ["resource"],
            buckets=_SCAN_BUCKETS,
            registry=r,
        )
        self.health_hung = Gauge(
            "devplugin_health_check_hung",
            "1 while a resource's health check runs past its timeout (its devices are Unhealthy).",
            ["resource", "checker"],
            registry=r,
        )
        self.parts_omitted = Counter(
            "devplugin_allocate_parts_omitted_total",
            "Host devices left out of an Allocate response because they vanished (e.g. a "
            "hot-removed HCA behind a shared slot).",
            ["resource", "part", "reason"],
            registry=r,
        )
        self.rescans_triggered = Counter(
            "devplugin_rescans_triggered_total",
            "Scans run at once because a health check or an Allocate saw the host change.",
            registry=r,
        )
        self.discovery_duration = Histogram(
            "devplugin_discovery_duration_seconds",
            "Duration of discovery passes over the host.",
            buckets=_SCAN_BUCKETS,
            registry=r,
        )
        self.discovery_errors = Counter(
            "devplugin_discovery_errors_total",
            "Scans that failed or timed out, by reason.",
            ["resource", "reason"],
            registry=r,
        )
        self.rescans_skipped = Counter(
            "devplugin_rescans_skipped_total",
            "Periodic rescans skipped because every fingerprint was unchanged.",
            registry=r,
        )
        self.allocations = Counter(
            "devplugin_allocate_requests_total",
            "Allocate requests, by result.",
            ["resource", "result"],
            registry=r,
        )
        self.allocate_duration = Histogram(
            "devplugin_allocate_duration_seconds",
            "Time to answer Allocate.",
            ["resource"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.allocated_devices = Counter(
            "devplugin_allocated_devices_total",
            "Device IDs handed out by Allocate.",
            ["resource"],
            registry=r,
        )
        self.preferred = Counter(
            "devplugin_preferred_allocation_requests_total",
            "GetPreferredAllocation requests, by result.",
            ["resource", "result"],
            registry=r,
        )
        self.preferred_duration = Histogram(
            "devplugin_preferred_allocation_duration_seconds",
            "Time to answer GetPreferredAllocation.",
            ["resource"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prestart = Counter(
            "devplugin_prestart_requests_total",
            "PreStartContainer requests, by result.",
            ["resource", "result"],
            registry=r,
        )
        self.config_reloads = Counter(
            "devplugin_config_reloads_total",
            "Config reloads, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.config_valid = Gauge(
            "devplugin_config_valid",
            "1 while the config file on disk is the one served; 0 while a rejected config sits "
            "on disk (the previous one keeps serving).",
            registry=r,
        )
        self.config_last_success = Gauge(
            "devplugin_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that was applied.",
            registry=r,
        )
        self.podresources_errors = Counter(
            "devplugin_podresources_errors_total",
            "Failed PodResources List calls, by gRPC code (or 'unavailable' when absent).",
            ["code"],
            registry=r,
        )
        for result in ("ok", "failed"):
            self.config_reloads.labels(result)

    def forget_resource(self, resource: str) -> None:
        """Drop the gauges of a resource that is no longer served."""
        for gauge in (self.streams, self.last_registration):
            with contextlib.suppress(KeyError):
                gauge.remove(resource)
        for mode in ("kubelet", "watcher"):
            with contextlib.suppress(KeyError):
                self.registered.remove(resource, mode)


@dataclass(frozen=True)
class ResourceView:
    """What the snapshot collector reads for one resource at scrape time."""

    name: str
    snapshot: Snapshot


class SnapshotCollector(Collector):
    """``devplugin_devices`` and ``devplugin_device_healthy`` from the current snapshots."""

    def __init__(self, views: Callable[[], Iterable[ResourceView]]) -> None:
        self._views = views

    def collect(self) -> Iterator[Metric]:
        devices = GaugeMetricFamily(
            "devplugin_devices",
            "Devices advertised to the kubelet, by health.",
            labels=["resource", "health"],
        )
        healthy = GaugeMetricFamily(
            "devplugin_device_healthy",
            "1 if the device (or health group, e.g. an HCA behind shared slots) is healthy.",
            labels=["resource", "device"],
        )
        for view in self._views():
            good, bad = view.snapshot.counts()
            devices.add_metric([view.name, "healthy"], good)
            devices.add_metric([view.name, "unhealthy"], bad)
            groups: dict[str, bool] = {}
            for device in view.snapshot.devices:
                ok = view.snapshot.healthy(device.id)
                groups[device.health_key] = groups.get(device.health_key, True) and ok
            for key, ok in groups.items():
                healthy.add_metric([view.name, key], 1 if ok else 0)
        yield devices
        yield healthy


class PluginCollectors(Collector):
    """Adapts the current plugin's :class:`~devplugin_core._api.MetricsCollector` s to the
    registry: each gets the snapshots by resource name. A collector that raises is logged and
    skipped (the rest of the scrape still answers)."""

    def __init__(
        self,
        collectors: Callable[[], Iterable[Any]],
        views: Callable[[], Iterable[ResourceView]],
    ) -> None:
        self._collectors = collectors
        self._views = views

    def collect(self) -> Iterator[Metric]:
        snapshots = {view.name: view.snapshot for view in self._views()}
        for collector in self._collectors():
            try:
                yield from collector.collect(snapshots)
            except Exception:
                log.exception("metrics collector %s failed", type(collector).__name__)
