"""Model values -> v1beta1 protobuf messages. The only place (with the servers) that builds them."""

from __future__ import annotations

from ._proto import deviceplugin_v1beta1_pb2 as pb
from .model import ContainerEdits, Device, Health
from .store import Snapshot

__all__ = ["container_response", "device_message", "list_and_watch_response"]

_HEALTH = {Health.HEALTHY: "Healthy", Health.UNHEALTHY: "Unhealthy"}


def device_message(device: Device, health: Health) -> pb.Device:
    """A wire Device; topology only when the NUMA affinity is known (never present-but-empty)."""
    if device.numa_nodes:
        return pb.Device(
            ID=device.id,
            health=_HEALTH[health],
            topology=pb.TopologyInfo(nodes=[pb.NUMANode(ID=n) for n in device.numa_nodes]),
        )
    return pb.Device(ID=device.id, health=_HEALTH[health])


def list_and_watch_response(snapshot: Snapshot) -> pb.ListAndWatchResponse:
    """The full device list of a snapshot."""
    health = snapshot.health
    return pb.ListAndWatchResponse(
        devices=[device_message(d, health.get(d.id, Health.UNHEALTHY)) for d in snapshot.devices]
    )


def container_response(edits: ContainerEdits) -> pb.ContainerAllocateResponse:
    """One ContainerAllocateResponse carrying ``edits``."""
    return pb.ContainerAllocateResponse(
        envs=dict(edits.env),
        mounts=[
            pb.Mount(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
            for m in edits.mounts
        ],
        devices=[
            pb.DeviceSpec(
                container_path=n.container_path, host_path=n.host_path, permissions=n.permissions
            )
            for n in edits.device_nodes
        ],
        annotations=dict(edits.annotations),
        cdi_devices=[pb.CDIDevice(name=name) for name in edits.cdi_devices],
    )
