"""FakePodResources: a kubelet PodResources API (v1 ``List``) on a unix socket, for tests."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from .._proto import podresources_v1_pb2 as pr_pb
from .._proto import podresources_v1_pb2_grpc as pr_grpc

__all__ = ["FakePodResources", "PodAssignment"]


@dataclass(frozen=True)
class PodAssignment:
    """Devices of one resource held by one container."""

    namespace: str
    pod: str
    container: str
    resource: str
    device_ids: tuple[str, ...]


class _Lister(pr_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self, fake: FakePodResources) -> None:
        self.fake = fake

    async def List(
        self, request: pr_pb.ListPodResourcesRequest, context: object
    ) -> pr_pb.ListPodResourcesResponse:
        self.fake.calls += 1
        pods: dict[tuple[str, str], dict[str, list[PodAssignment]]] = {}
        for a in self.fake.assignments:
            pods.setdefault((a.namespace, a.pod), {}).setdefault(a.container, []).append(a)
        reply = pr_pb.ListPodResourcesResponse()
        for (namespace, pod), containers in pods.items():
            pod_msg = reply.pod_resources.add(name=pod, namespace=namespace)
            for container, items in containers.items():
                c = pod_msg.containers.add(name=container)
                for a in items:
                    c.devices.add(resource_name=a.resource, device_ids=list(a.device_ids))
        return reply


class FakePodResources:
    """Serves ``PodResourcesLister.List`` from :attr:`assignments` at ``socket_path``."""

    def __init__(self, socket_path: str, assignments: Sequence[PodAssignment] = ()) -> None:
        self.socket_path = socket_path
        self.assignments: list[PodAssignment] = list(assignments)
        self.calls = 0
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        server = grpc.aio.server()
        pr_grpc.add_PodResourcesListerServicer_to_server(_Lister(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def __aenter__(self) -> FakePodResources:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
