"""Which pod holds which device: attribution from the kubelet PodResources API.

Allocate requests carry no pod identity and there is no release call, so the only truthful
source is the kubelet's ``PodResourcesLister.List`` (socket under
``/var/lib/kubelet/pod-resources/``; mount the directory, not the socket). The poller calls it
every ``interval`` seconds (the kubelet rate-limits the API), keeps the last answer, and
exports ``devplugin_device_allocation_info{resource,device,namespace,pod,container} 1`` and
``devplugin_devices_in_use{resource}`` for this plugin's resources. A missing socket is a
warning (logged when it disappears and when it comes back), never a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._metrics import Metrics
from ._proto import podresources_v1_pb2 as pr_pb
from ._proto import podresources_v1_pb2_grpc as pr_grpc

log = logging.getLogger("devplugin.podresources")

__all__ = ["Assignment", "PodResourcesPoller"]


@dataclass(frozen=True)
class Assignment:
    """One device held by one container."""

    resource: str
    device: str
    namespace: str
    pod: str
    container: str


class PodResourcesPoller(Collector):
    """Polls ``List`` and exports the device -> pod mapping for ``resources()``."""

    def __init__(
        self,
        socket_path: str,
        resources: Callable[[], set[str]],
        metrics: Metrics,
        interval: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self.socket_path = socket_path
        self.resources = resources
        self.metrics = metrics
        self.interval = interval
        self.timeout = timeout
        self.assignments: tuple[Assignment, ...] = ()
        self.available: bool | None = None
        self.refreshed = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    def _set_available(self, available: bool, detail: str = "") -> None:
        if available == self.available:
            return
        self.available = available
        if available:
            log.info("PodResources API available at %s; per-pod attribution on", self.socket_path)
        else:
            log.warning(
                "PodResources API unavailable at %s (%s); per-pod attribution off",
                self.socket_path,
                detail,
            )

    async def poll_once(self) -> None:
        if not os.path.exists(self.socket_path):
            self.metrics.podresources_errors.labels("unavailable").inc()
            self._set_available(False, "socket missing")
            self.assignments = ()
            await self.close()
            return
        if self._channel is None:  # one channel, kept between polls (reconnects by itself)
            self._channel = grpc.aio.insecure_channel(
                f"unix://{self.socket_path}", options=[("grpc.default_authority", "localhost")]
            )
        try:
            reply = await pr_grpc.PodResourcesListerStub(self._channel).List(
                pr_pb.ListPodResourcesRequest(), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                await self.close()  # a restarted kubelet: dial afresh next time
            self.metrics.podresources_errors.labels(err.code().name).inc()
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                self._set_available(False, f"{err.code().name}: {err.details()}")
            return
        self._set_available(True)
        wanted = self.resources()
        found = []
        for pod in reply.pod_resources:
            for container in pod.containers:
                for devices in container.devices:
                    if devices.resource_name not in wanted:
                        continue
                    for device_id in devices.device_ids:
                        found.append(
                            Assignment(
                                devices.resource_name,
                                device_id,
                                pod.namespace,
                                pod.name,
                                container.name,
                            )
                        )
        self.assignments = tuple(found)
        self.refreshed.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.poll_once()
                except Exception:  # an attribution bug must never take the plugin down
                    log.exception("PodResources poll failed")
                await asyncio.sleep(self.interval)
        finally:
            await self.close()

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "devplugin_device_allocation_info",
            "A device held by a container, from the kubelet PodResources API; always 1.",
            labels=["resource", "device", "namespace", "pod", "container"],
        )
        in_use = GaugeMetricFamily(
            "devplugin_devices_in_use",
            "Devices of the resource held by containers, from the kubelet PodResources API.",
            labels=["resource"],
        )
        counts = dict.fromkeys(sorted(self.resources()), 0)
        for a in self.assignments:
            info.add_metric([a.resource, a.device, a.namespace, a.pod, a.container], 1)
            counts[a.resource] = counts.get(a.resource, 0) + 1
        for resource, count in counts.items():
            in_use.add_metric([resource], count)
        yield info
        yield in_use
