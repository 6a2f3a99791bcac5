"""The live state of one resource: devices, health, snapshot, and the Allocate logic."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence

from ._aio import Exclusive, Signal, in_thread
from ._render import DeviceListEncoder
from .api import AllocationRequest, Observation, PreferredRequest, Resource
from .cdi import CdiKind, annotate, cdi_kind
from .errors import AllocationError, HostPathError, UnhealthyDeviceError, UnknownDeviceError
from .health import HealthTracker
from .hostfs import HostFS
from .metrics import Metrics
from .model import ContainerEdits, Device, DeviceNode, Health, Mount
from .store import ResourceState, Snapshot

log = logging.getLogger("devplugin.resource")

__all__ = ["ResourceRuntime", "validate_edits"]


def _check_container_path(path: str) -> None:
    if not path.startswith("/") or ".." in path.split("/") or path.rstrip("/") == "":
        raise HostPathError(path, "container path must be absolute, without '..', and not '/'")


class VerifiedPaths:
    """Host paths that passed the full check, with the inode they resolved to.

    On the Allocate path a path is re-verified with one ``stat``: if it still leads to the very
    inode that passed canonicalisation and the allow-list, the cached canonical path stands;
    anything else (a swapped symlink, a replaced node) goes through the full check again. A
    cache belongs to one :class:`Resource` (its allow-lists) and is dropped with it.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[str, int, int]] = {}

    def get(self, host: HostFS, kind: str, path: str) -> str | None:
        entry = self._entries.get((kind, path))
        if entry is None:
            return None
        try:
            st = os.stat(host.local(path))
        except OSError:
            return None
        return entry[0] if (st.st_dev, st.st_ino) == entry[1:] else None

    def put(self, host: HostFS, kind: str, path: str, canonical: str) -> None:
        try:
            st = os.stat(host.local(canonical))
        except OSError:
            return
        if len(self._entries) > 65536:
            self._entries.clear()
        self._entries[(kind, path)] = (canonical, st.st_dev, st.st_ino)


class EditsValidator:
    """Canonicalises and allow-lists the host paths of container edits, caching per path
    within one validation run (and across runs through ``verified``, see VerifiedPaths)."""

    def __init__(
        self, host: HostFS, resource: Resource, verified: VerifiedPaths | None = None
    ) -> None:
        self.host = host
        self.resource = resource
        self.verified = verified
        self._seen: dict[tuple[str, str], str | HostPathError] = {}

    def _check(self, kind: str, path: str) -> str:
        hit = self._seen.get((kind, path))
        if hit is None and self.verified is not None:
            hit = self.verified.get(self.host, kind, path)
        if hit is None:
            try:
                if kind == "node":
                    hit = self.host.check_device_node(path, self.resource.device_allowlist)
                else:
                    hit = self.host.check_mount_source(path, self.resource.mount_allowlist)
                if self.verified is not None:
                    self.verified.put(self.host, kind, path, hit)
            except HostPathError as err:
                hit = err
            self._seen[(kind, path)] = hit
        if isinstance(hit, HostPathError):
            raise hit
        return hit

    def _node(self, path: str) -> str:
        return self._check("node", path)

    def _mount(self, path: str) -> str:
        return self._check("mount", path)

    def validate(self, edits: ContainerEdits) -> ContainerEdits:
        """Edits with canonical host paths; raises HostPathError for anything not allowed."""
        if not edits.device_nodes and not edits.mounts:
            return edits
        nodes = []
        for n in edits.device_nodes:
            host_path = self._node(n.host_path)
            _check_container_path(n.container_path)
            nodes.append(DeviceNode(host_path, n.container_path, n.permissions))
        mounts = []
        for m in edits.mounts:
            host_path = self._mount(m.host_path)
            _check_container_path(m.container_path)
            mounts.append(Mount(host_path, m.container_path, m.read_only))
        return dataclasses.replace(edits, device_nodes=tuple(nodes), mounts=tuple(mounts))


def validate_edits(host: HostFS, resource: Resource, edits: ContainerEdits) -> ContainerEdits:
    """Validate ``edits`` against ``resource``'s allow-lists (no caching)."""
    return EditsValidator(host, resource).validate(edits)


class ResourceRuntime:
    """Everything the framework keeps for one resource while it is served."""

    def __init__(
        self,
        resource: Resource,
        host: HostFS,
        metrics: Metrics,
        alloc_pool: concurrent.futures.Executor,
        cdi: bool,
    ) -> None:
        self.resource = resource
        self.name = resource.name
        self.host = host
        self.metrics = metrics
        self.alloc_pool = alloc_pool
        self.verified = VerifiedPaths()
        self.state = ResourceState(resource.name)
        self.tracker = HealthTracker(resource.health.recover_after if resource.health else 2)
        self.devices: tuple[Device, ...] = ()
        self.health_keys: frozenset[str] = frozenset()
        self.invalid: dict[str, str] = {}  # device ID -> why its edits were refused
        self.cdi: CdiKind | None = cdi_kind(resource.name) if cdi else None
        self.streams = 0
        self.streams_changed = Signal()
        self.health_job = Exclusive()
        self._check_lock = threading.Lock()
        self.registered = False
        self._wire: tuple[int, object] | None = None
        self._encoder = DeviceListEncoder()

    def run_check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        """One health check of ``devices`` (blocking; for worker threads). Checks of one
        resource never overlap, whichever thread runs them."""
        checker = self.resource.health
        if checker is None or not devices:
            return {}
        with self._check_lock:
            return checker.check(devices)

    # -- state ---------------------------------------------------------------------------------
    def replace_resource(self, resource: Resource) -> None:
        """Swap in a rebuilt Resource (config reload) without touching the endpoint."""
        self.resource = resource
        self.verified = VerifiedPaths()  # allow-lists may have changed
        recover = resource.health.recover_after if resource.health else 2
        if recover != self.tracker.recover_after:
            self.tracker.recover_after = recover

    def set_devices(self, devices: Sequence[Device]) -> bool:
        """Adopt a discovery result; returns True if the advertised snapshot changed."""
        seen: dict[str, Device] = {}
        for device in devices:
            if device.id in seen:
                log.error(
                    "%s: duplicate device ID %s from discovery; keeping the first",
                    self.name,
                    device.id,
                )
                continue
            seen[device.id] = device
        self.devices = tuple(seen.values())
        self.health_keys = frozenset(d.health_key for d in self.devices)
        self.tracker.forget(self.health_keys)
        return self.publish()

    def observe(self, observations: Mapping[str, Observation]) -> bool:
        """Apply one health check round; returns True if the snapshot changed."""
        transitions = self.tracker.observe(observations, self.health_keys)
        for t in transitions:
            to = "healthy" if t.healthy else "unhealthy"
            self.metrics.transitions.labels(self.name, t.key, to).inc()
            if t.healthy:
                log.info("%s: %s is Healthy again", self.name, t.key)
            else:
                log.warning("%s: %s is Unhealthy: %s", self.name, t.key, t.reason or "check failed")
        return self.publish() if transitions else False

    def publish(self) -> bool:
        by_key = {k: self.tracker.is_healthy(k) for k in self.health_keys}
        good, bad = Health.HEALTHY, Health.UNHEALTHY
        health = {d.id: good if d.healthy and by_key[d.health_key] else bad for d in self.devices}
        return self.state.publish(self.devices, health)

    @property
    def snapshot(self) -> Snapshot:
        return self.state.snapshot

    def wire(self, snapshot: Snapshot) -> object:
        """The ListAndWatch message of ``snapshot``, built once per version."""
        cached = self._wire
        if cached is not None and cached[0] == snapshot.version:
            return cached[1]
        message = self._encoder.encode(snapshot)
        self._wire = (snapshot.version, message)
        return message

    # -- requests ------------------------------------------------------------------------------
    def resolve(self, ids: Sequence[str], *, require_healthy: bool = True) -> tuple[Device, ...]:
        snapshot = self.snapshot
        unknown = [i for i in ids if i not in snapshot.by_id]
        if unknown:
            raise UnknownDeviceError(self.name, unknown)
        if require_healthy:
            sick = [i for i in ids if not snapshot.healthy(i)]
            if sick:
                reasons = []
                for i in sick:
                    device = snapshot.by_id[i]
                    why = self.invalid.get(i) or self.tracker.reason(device.health_key)
                    reasons.append(f"{i}: {why}" if why else i)
                raise UnhealthyDeviceError(self.name, sick, reasons)
        return tuple(snapshot.by_id[i] for i in ids)

    def _allocate_blocking(self, resource: Resource, devices: tuple[Device, ...]) -> ContainerEdits:
        edits = resource.allocator.allocate(AllocationRequest(resource.name, devices))
        if not isinstance(edits, ContainerEdits):
            raise AllocationError(
                f"{type(resource.allocator).__name__}.allocate returned "
                f"{type(edits).__name__}, not ContainerEdits"
            )
        validator = EditsValidator(self.host, resource, self.verified)
        edits = validator.validate(edits)
        if self.cdi is None:
            return edits
        with_cdi = [d for d in devices if d.edits.device_nodes or d.edits.mounts]
        covered = ContainerEdits().merge(*(d.edits for d in with_cdi))
        covered = validator.validate(
            ContainerEdits(device_nodes=covered.device_nodes, mounts=covered.mounts)
        )
        return edits.without(covered).merge(annotate(self.cdi, [d.cdi_name for d in with_cdi]))

    async def allocate(self, ids: Sequence[str]) -> ContainerEdits:
        """Container edits for one container request (raises AllocationError/HostPathError)."""
        resource = self.resource
        devices = self.resolve(ids)
        start = time.monotonic()
        try:
            edits = await in_thread(
                self.alloc_pool,
                resource.allocate_timeout,
                self._allocate_blocking,
                resource,
                devices,
            )
        except TimeoutError:
            raise AllocationError(
                f"allocation for {self.name} did not finish within {resource.allocate_timeout:g}s",
                ids,
            ) from None
        finally:
            self.metrics.allocate_duration.labels(self.name).observe(time.monotonic() - start)
        self.metrics.allocated_devices.labels(self.name).inc(len(devices))
        return edits

    async def preferred(
        self, available: Sequence[str], must: Sequence[str], size: int
    ) -> list[str]:
        """Preferred IDs, always a valid answer: only IDs from the request, ``must`` kept, at
        most ``size``; raises only on allocator failure (callers answer empty then)."""
        resource = self.resource
        snapshot = self.snapshot
        avail = tuple(snapshot.by_id[i] for i in dict.fromkeys(available) if i in snapshot.by_id)
        must_devs = tuple(snapshot.by_id[i] for i in dict.fromkeys(must) if i in snapshot.by_id)
        request = PreferredRequest(self.name, avail, must_devs, size)
        chosen = await in_thread(self.alloc_pool, 5.0, resource.allocator.preferred, request)
        allowed = set(available) | set(must)
        result = list(dict.fromkeys(m for m in must))
        for device_id in chosen:
            if len(result) >= size:
                break
            if device_id in allowed and device_id not in result:
                result.append(device_id)
        return result

    async def pre_start(self, ids: Sequence[str]) -> None:
        resource = self.resource
        devices = self.resolve(ids, require_healthy=False)
        try:
            await in_thread(self.alloc_pool, 25.0, resource.allocator.pre_start, devices)
        except TimeoutError:
            raise AllocationError(
                f"PreStartContainer for {self.name} took longer than 25s", ids
            ) from None

    def stream_opened(self) -> None:
        self.streams += 1
        self.metrics.streams.labels(self.name).set(self.streams)
        self.streams_changed.fire()

    def stream_closed(self) -> None:
        self.streams -= 1
        self.metrics.streams.labels(self.name).set(self.streams)
        self.streams_changed.fire()
