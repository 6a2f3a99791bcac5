"""Model values -> v1beta1 protobuf messages. The only place (with the servers) that builds them."""

from __future__ import annotations

from ._model import ContainerEdits, Device, Health
from ._proto import deviceplugin_v1beta1_pb2 as pb
from ._store import Snapshot

__all__ = ["DeviceListEncoder", "container_response", "device_message", "list_and_watch_response"]

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
    """The full device list of a snapshot (reference implementation; see DeviceListEncoder)."""
    health = snapshot.health
    return pb.ListAndWatchResponse(
        devices=[device_message(d, health.get(d.id, Health.UNHEALTHY)) for d in snapshot.devices]
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_TOPOLOGY: dict[tuple[int, ...], bytes] = {}
_HEALTH_FIELD = {h: b"\x12" + _varint(len(v)) + v.encode() for h, v in _HEALTH.items()}


def _device_bytes(device: Device, health: Health) -> bytes:
    """``device_message(device, health).SerializeToString()``, written directly (field 1 ID,
    2 health, 3 topology only when known): a 10 000-slot health flip re-encodes every device."""
    ident = device.id.encode()
    body = b"\x0a" + _varint(len(ident)) + ident + _HEALTH_FIELD[health]
    if device.numa_nodes:
        topology = _TOPOLOGY.get(device.numa_nodes)
        if topology is None:
            info = pb.TopologyInfo(nodes=[pb.NUMANode(ID=n) for n in device.numa_nodes])
            encoded = info.SerializeToString()
            topology = _TOPOLOGY[device.numa_nodes] = b"\x1a" + _varint(len(encoded)) + encoded
        body += topology
    return body


class DeviceListEncoder:
    """Builds ListAndWatch messages from per-device wire encodings cached across snapshots.

    Each device is serialised once per (ID, health, NUMA nodes) and framed as field 1 of
    ``ListAndWatchResponse``; a snapshot becomes one ``bytes.join`` plus one C-level parse.
    The cache keeps only the entries used by the latest snapshot.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool, tuple[int, ...]], bytes] = {}

    def encode(self, snapshot: Snapshot) -> pb.ListAndWatchResponse:
        old, new = self._cache, {}
        health = snapshot.health
        parts = []
        for device in snapshot.devices:
            h = health.get(device.id, Health.UNHEALTHY)
            key = (device.id, h is Health.HEALTHY, device.numa_nodes)  # no Python-level hash
            framed = old.get(key)
            if framed is None:
                body = _device_bytes(device, h)
                framed = b"\x0a" + _varint(len(body)) + body
            new[key] = framed
            parts.append(framed)
        self._cache = new
        return pb.ListAndWatchResponse.FromString(b"".join(parts))


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
