"""Load: waves of 1000 concurrent Allocate calls while 50 extra ListAndWatch streams per
resource are open, and a health fault comes and goes in the middle of it.

Zero Allocate errors (every call names healthy devices the fault does not touch), and the
health update — Unhealthy, then Healthy again — reaches the kubelet's stream and every one of
the 50 others on the affected resource while the calls are in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator

import grpc

from devplugin_core._proto import deviceplugin_v1beta1_pb2 as pb
from devplugin_core._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from devplugin_core.testing import FakeKubelet

from .helpers import HEALTHY, UNHEALTHY, Node, serve, wait_registered

CALLS = 1000
STREAMS = 50
CHANNELS = 5  # the 50 streams of a resource spread over 5 client connections


class Watchers:
    """``STREAMS`` ListAndWatch consumers per resource, each keeping its latest device list."""

    def __init__(self) -> None:
        self.latest: dict[str, list[dict[str, str]]] = {}
        self.channels: list[grpc.aio.Channel] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: list[str] = []

    async def _consume(self, resource: str, slot: int, stub: pb_grpc.DevicePluginStub) -> None:
        try:
            async for response in stub.ListAndWatch(pb.Empty()):
                self.latest[resource][slot] = {d.ID: d.health for d in response.devices}
        except grpc.aio.AioRpcError as err:
            self.errors.append(f"{resource}#{slot}: {err.code().name}")

    def open(self, resource: str, socket: str) -> None:
        self.latest[resource] = [{} for _ in range(STREAMS)]
        stubs = []
        for _ in range(CHANNELS):
            channel = grpc.aio.insecure_channel(
                f"unix://{socket}", options=[("grpc.default_authority", "localhost")]
            )
            self.channels.append(channel)
            stubs.append(pb_grpc.DevicePluginStub(channel))
        for slot in range(STREAMS):
            task = asyncio.create_task(self._consume(resource, slot, stubs[slot % CHANNELS]))
            self.tasks.append(task)

    def all_see(self, resource: str, devices: tuple[str, ...], health: str) -> bool:
        return all(
            latest and all(latest.get(d) == health for d in devices)
            for latest in self.latest[resource]
        )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()


@contextlib.asynccontextmanager
async def watchers(kubelet: FakeKubelet, resources: tuple[str, ...]) -> AsyncIterator[Watchers]:
    group = Watchers()
    try:
        for resource in resources:
            socket = os.path.join(kubelet.directory, kubelet.connections[resource].endpoint)
            group.open(resource, socket)
        yield group
    finally:
        await group.close()


async def test_concurrent_allocations_and_streams_while_health_changes(
    node: Node, fake_kubelet: FakeKubelet
) -> None:
    case = node.case
    fault = case.fault
    async with serve(node, fake_kubelet) as runtime:
        await wait_registered(fake_kubelet, case, 1)
        targets = [
            (resource, device.ID)
            for resource in case.resources
            for device in fake_kubelet.devices(resource)
            if device.health == HEALTHY
            and not (resource == fault.resource and device.ID in fault.affected)
        ]
        assert targets
        async with watchers(fake_kubelet, case.resources) as group:
            await fake_kubelet.wait_until(
                lambda: all(group.all_see(r, (case.stable[r],), HEALTHY) for r in case.resources),
                timeout=30,
                what=f"{STREAMS} streams per resource with their first snapshot",
            )
            for resource in case.resources:
                streams = runtime.registry.get_sample_value(
                    "devplugin_listandwatch_streams", {"resource": resource}
                )
                assert streams == STREAMS + 1, (resource, streams)

            errors: list[str] = []
            done = 0
            stop = asyncio.Event()
            cycle = itertools.cycle(targets)

            async def one(resource: str, device: str) -> None:
                nonlocal done
                try:
                    reply = await fake_kubelet.allocate(resource, [device], timeout=60)
                    assert reply.devices or reply.envs or reply.mounts
                    done += 1
                except (grpc.aio.AioRpcError, AssertionError) as err:
                    errors.append(f"{resource} {device}: {err}")

            async def waves() -> int:
                count = 0
                while not stop.is_set():
                    await asyncio.gather(*(one(*next(cycle)) for _ in range(CALLS)))
                    count += 1
                return count

            load = asyncio.create_task(waves())
            fault.inject(node.host)
            await fake_kubelet.wait_until(
                lambda: (
                    group.all_see(fault.resource, fault.affected, UNHEALTHY)
                    and all(
                        fake_kubelet.health(fault.resource)[d] == UNHEALTHY for d in fault.affected
                    )
                ),
                timeout=30,
                what=f"Unhealthy on the kubelet's and {STREAMS} other streams under load",
            )
            unhealthy_while_loaded = not load.done()
            fault.heal(node.host)
            await fake_kubelet.wait_until(
                lambda: (
                    group.all_see(fault.resource, fault.affected, HEALTHY)
                    and all(
                        fake_kubelet.health(fault.resource)[d] == HEALTHY for d in fault.affected
                    )
                ),
                timeout=30,
                what="Healthy again on every stream under load",
            )
            stop.set()
            waves_run = await load
            assert unhealthy_while_loaded
            assert not errors, errors[:5]
            assert done == waves_run * CALLS and waves_run >= 1
            assert not group.errors, group.errors[:5]
        for resource in case.resources:  # the kubelet's own streams never broke
            assert fake_kubelet.registration_count(resource) == 1
            assert not fake_kubelet.connections[resource].ended
        assert runtime._failed is None
