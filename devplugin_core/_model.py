"""Immutable values shared by plugins and the framework: devices and container edits."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from ._errors import ConfigError

T = TypeVar("T")

__all__ = [
    "MAX_DEVICE_ID_LENGTH",
    "ContainerEdits",
    "Device",
    "DeviceNode",
    "Health",
    "Mount",
    "Part",
    "check_device_id",
    "extended_resource_name_error",
    "natural_key",
    "validate_resource_name",
]

MAX_DEVICE_ID_LENGTH = 63
_DEVICE_ID = re.compile(r"^[!-~]+$")  # printable ASCII, no spaces
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_PERMISSIONS = re.compile(r"^(?=.)r?w?m?$")


class Health(enum.Enum):
    """Device health as the kubelet understands it (the exact wire strings)."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"

    def __bool__(self) -> bool:  # pragma: no cover - guard against `if health:` mistakes
        raise TypeError("compare Health with Health.HEALTHY explicitly")


def _frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(sorted((value or {}).items())))


@dataclass(frozen=True, slots=True)
class DeviceNode:
    """A device node to create in the container.

    ``container_path`` defaults to ``host_path``; ``permissions`` is a subset of ``rwm`` and
    defaults to ``rw`` (``m`` lets the container mknod; plugins must ask for it explicitly).
    """

    host_path: str
    container_path: str = ""
    permissions: str = "rw"

    def __post_init__(self) -> None:
        if not self.container_path:
            object.__setattr__(self, "container_path", self.host_path)
        if not _PERMISSIONS.match(self.permissions):
            raise ValueError(
                f"device permissions must be a subset of 'rwm', got {self.permissions!r}"
            )
        for name in ("host_path", "container_path"):
            if not getattr(self, name).startswith("/"):
                raise ValueError(
                    f"device node {name} must be absolute, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount into the container; read-only unless a plugin explicitly says otherwise."""

    host_path: str
    container_path: str = ""
    read_only: bool = True

    def __post_init__(self) -> None:
        if not self.container_path:
            object.__setattr__(self, "container_path", self.host_path)
        for name in ("host_path", "container_path"):
            if not getattr(self, name).startswith("/"):
                raise ValueError(f"mount {name} must be absolute, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class ContainerEdits:
    """What a container gets: device nodes, mounts, env, annotations and CDI device names.

    One value renders both to a kubelet ``ContainerAllocateResponse`` and to the
    ``containerEdits`` of a CDI spec. Combine values with :meth:`merge`.
    """

    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    cdi_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "device_nodes", tuple(self.device_nodes))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "cdi_devices", tuple(self.cdi_devices))
        object.__setattr__(self, "env", _frozen_mapping(self.env))
        object.__setattr__(self, "annotations", _frozen_mapping(self.annotations))
        for key, value in self.env.items():
            if not _ENV_NAME.match(key) or "\0" in value:
                raise ValueError(f"invalid environment variable name {key!r}")

    def __bool__(self) -> bool:
        return bool(
            self.device_nodes or self.mounts or self.env or self.annotations or self.cdi_devices
        )

    def merge(self, *others: ContainerEdits) -> ContainerEdits:
        """Combine edits: device nodes deduplicated by host path and mounts by container path
        (first wins), env and annotations later-wins, CDI names deduplicated in order."""
        parts = (self, *others)
        nodes: dict[str, DeviceNode] = {}
        mounts: dict[str, Mount] = {}
        env: dict[str, str] = {}
        annotations: dict[str, str] = {}
        cdi: dict[str, None] = {}
        for part in parts:
            for node in part.device_nodes:
                nodes.setdefault(node.host_path, node)
            for mount in part.mounts:
                mounts.setdefault(mount.container_path, mount)
            env.update(part.env)
            annotations.update(part.annotations)
            cdi.update(dict.fromkeys(part.cdi_devices))
        return ContainerEdits(
            device_nodes=tuple(nodes.values()),
            mounts=tuple(mounts.values()),
            env=env,
            annotations=annotations,
            cdi_devices=tuple(cdi),
        )

    def without(self, covered: ContainerEdits) -> ContainerEdits:
        """These edits minus the device nodes and mounts that ``covered`` already provides."""
        hosts = {n.host_path for n in covered.device_nodes}
        targets = {m.container_path for m in covered.mounts}
        return ContainerEdits(
            device_nodes=tuple(n for n in self.device_nodes if n.host_path not in hosts),
            mounts=tuple(m for m in self.mounts if m.container_path not in targets),
            env=self.env,
            annotations=self.annotations,
            cdi_devices=self.cdi_devices,
        )

    def to_cdi(self) -> dict[str, Any]:
        """The CDI ``containerEdits`` object for these edits (CDI spec 0.5.0 fields only)."""
        out: dict[str, Any] = {}
        if self.env:
            out["env"] = [f"{k}={v}" for k, v in self.env.items()]
        if self.device_nodes:
            out["deviceNodes"] = [
                {"path": n.container_path, "hostPath": n.host_path, "permissions": n.permissions}
                for n in self.device_nodes
            ]
        if self.mounts:
            out["mounts"] = [
                {
                    "hostPath": m.host_path,
                    "containerPath": m.container_path,
                    "options": (["ro"] if m.read_only else ["rw"]) + ["nosuid", "nodev", "bind"],
                }
                for m in self.mounts
            ]
        return out


EMPTY_EDITS = ContainerEdits()


@dataclass(frozen=True, slots=True)
class Part:
    """One host device behind a device ID that spans several (an rdma-shared slot stands for
    every HCA of its resource): a name for logs and metrics, its container edits, and its CDI
    device name (default: the name, made CDI-safe).

    At Allocate, a part whose host paths vanished (hot removal) is left out of the response
    while at least one part of the device remains; the framework logs it, counts it and
    rescans at once.
    """

    name: str
    edits: ContainerEdits
    cdi_name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a device part needs a name")
        if not self.cdi_name:
            object.__setattr__(self, "cdi_name", self.name)


@dataclass(frozen=True, slots=True)
class Device:
    """One schedulable device of a resource, as advertised to the kubelet.

    ``id``: stable across restarts (PCI address, slot index...), at most 63 characters.
    ``numa_nodes``: NUMA affinity; empty when unknown (topology is then omitted on the wire).
    ``healthy``: what the scan saw (a HealthChecker can still mark it Unhealthy).
    ``edits``: what a container gets for this device (merged by the default Allocator).
    ``parts``: the host devices behind the ID when it spans several (see :class:`Part`); a
    container gets their edits and then ``edits`` (:attr:`all_edits`).
    ``payload``: an immutable value of the plugin's own type carrying what its allocator and
    health checker need (read it with :meth:`payload_as`); the framework never looks inside.
    ``attributes``: facts shown by ``devplugin discover`` (display only).
    ``health_key``: devices sharing a key share one health state (default: the device ID).
    ``cdi_name``: CDI device name of ``edits`` (default: the device ID); devices with identical
    edits may share one.
    """

    id: str
    numa_nodes: tuple[int, ...] = ()
    healthy: bool = True
    edits: ContainerEdits = EMPTY_EDITS
    parts: tuple[Part, ...] = ()
    payload: object = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    health_key: str = ""
    cdi_name: str = ""

    def __post_init__(self) -> None:
        check_device_id(self.id)
        object.__setattr__(self, "numa_nodes", tuple(sorted(set(self.numa_nodes))))
        if any(n < 0 for n in self.numa_nodes):
            raise ValueError(f"device {self.id}: NUMA node ids must be >= 0, got {self.numa_nodes}")
        object.__setattr__(self, "parts", tuple(self.parts))
        object.__setattr__(self, "attributes", _frozen_mapping(self.attributes))
        if not self.health_key:
            object.__setattr__(self, "health_key", self.id)
        if not self.cdi_name:
            object.__setattr__(self, "cdi_name", self.id)

    def payload_as(self, kind: type[T]) -> T:
        """The payload, checked to be a ``kind`` (TypeError naming the device otherwise)."""
        payload = self.payload
        if not isinstance(payload, kind):
            raise TypeError(
                f"device {self.id}: payload is {type(payload).__name__}, not {kind.__name__}"
            )
        return payload

    @property
    def all_edits(self) -> ContainerEdits:
        """Every part's edits (in order), then the device's own ``edits``."""
        if not self.parts:
            return self.edits
        return ContainerEdits().merge(*(p.edits for p in self.parts), self.edits)

    def with_id(self, device_id: str) -> Device:
        """This device under another ID (checked), everything else shared: a cheap way to
        build thousands of identical devices such as shared slots. ``health_key`` and
        ``cdi_name`` are kept as they are (set them explicitly on the template)."""
        return self.with_ids((device_id,))[0]

    def with_ids(self, device_ids: Iterable[str]) -> list[Device]:
        """:meth:`with_id` for many IDs at once (a template read once: ~1 us a device)."""
        shared = [
            (slot.__set__, slot.__get__(self)) for name, slot in _DEVICE_SLOTS if name != "id"
        ]
        set_id = Device.__dict__["id"].__set__
        out = []
        for device_id in device_ids:
            check_device_id(device_id)
            clone = object.__new__(Device)
            for put, value in shared:
                put(clone, value)
            set_id(clone, device_id)
            out.append(clone)
        return out

    def with_parts(self, parts: tuple[Part, ...]) -> Device:
        """This device with only ``parts`` (the framework's view at Allocate time)."""
        return self._copy(parts=tuple(parts))

    def _copy(self, **changes: Any) -> Device:
        clone = object.__new__(Device)
        for name, slot in _DEVICE_SLOTS:  # the slot descriptors: no frozen __setattr__ per field
            slot.__set__(clone, changes[name] if name in changes else slot.__get__(self))
        return clone


_DEVICE_SLOTS = tuple((name, Device.__dict__[name]) for name in Device.__slots__)


def check_device_id(device_id: str) -> None:
    """Raise ValueError unless ``device_id`` is a usable kubelet device ID."""
    if not device_id or len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise ValueError(f"device ID must be 1..{MAX_DEVICE_ID_LENGTH} characters: {device_id!r}")
    if not _DEVICE_ID.match(device_id) or "," in device_id:
        raise ValueError(
            f"device ID must be printable ASCII without spaces or commas: {device_id!r}"
        )


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def extended_resource_name_error(name: str) -> str | None:
    """Why the kubelet would reject ``name`` as an extended resource name (None if it is valid).

    Mirrors ``IsExtendedResourceName`` from kubernetes ``pkg/apis/core/v1/helper``: a
    ``prefix/name`` with a lower-case DNS subdomain prefix, not under ``kubernetes.io/``, and a
    name part of at most 63 characters; ``requests.`` is prepended before the length check.
    """
    if "/" not in name:
        return "must have the form <domain>/<name>"
    if "kubernetes.io/" in name:
        return "the kubernetes.io/ domain is reserved for native resources"
    if name.startswith("requests."):
        return "must not start with 'requests.'"
    prefix, _, part = ("requests." + name).partition("/")
    if "/" in part:
        return "must contain exactly one '/'"
    if not part:
        return "the name after '/' is empty"
    if len(part) > 63:
        return f"the name after '/' is {len(part)} characters, at most 63 are allowed"
    if not _QUALIFIED_NAME.match(part):
        return (
            "the name after '/' must consist of alphanumerics, '-', '_' or '.', "
            "and start and end with an alphanumeric"
        )
    if len(prefix) > 253:
        return "the domain is too long (at most 244 characters)"
    if not _DNS_SUBDOMAIN.match(prefix):
        return "the domain must be a lower-case DNS subdomain (a-z, 0-9, '-', '.')"
    return None


def validate_resource_name(name: str, field: str = "resourceName") -> str:
    """Return ``name`` or raise :class:`ConfigError` naming ``field`` and the kubelet's rule."""
    reason = extended_resource_name_error(name)
    if reason:
        raise ConfigError(field, f"invalid extended resource name: {reason}", name)
    return name


_DIGITS = re.compile(r"(\d+)")


_FIXED_WIDTH = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers numerically ("rbln2" < "rbln10"); PCI addresses
    (fixed-width hex) sort as plain strings ("0000:09:00.0" < "0000:0a:00.0")."""
    if _FIXED_WIDTH.match(text):
        return ("", text)
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(text))
