"""The live state of one resource: devices, health, snapshot, and the Allocate logic.

A :class:`ResourceRuntime` is owned by the event loop. The scan hands it whole device lists
(:meth:`set_devices`), the health scheduler hands it observations (:meth:`observe`); both
publish a new immutable snapshot when something the kubelet sees changed. The gRPC servicer
reads the snapshot and calls :meth:`allocate`, :meth:`preferred` and :meth:`pre_start`, whose
plugin code runs in worker threads with deadlines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ._aio import Signal, in_thread
from ._answers import AnswerCache
from ._api import AllocationRequest, Observation, PreferredRequest, Resource
from ._cdi import CdiKind, annotate, cdi_kind
from ._errors import AllocationError, HostPathError, UnhealthyDeviceError, UnknownDeviceError
from ._hostfs import HostFS
from ._hysteresis import HealthTracker
from ._metrics import Metrics
from ._model import ContainerEdits, Device, Health
from ._paths import Check, EditsValidator, VerifiedPaths, live_parts
from ._proto import deviceplugin_v1beta1_pb2 as pb
from ._render import DeviceListEncoder, container_response
from ._store import ResourceState, Snapshot

log = logging.getLogger("devplugin.resource")

__all__ = ["ResourceRuntime"]

#: (part name, why it was left out) per Allocate, handed back to the loop
Omitted = list[tuple[str, str]]


def _with_witnesses(checks: list[Check], witnesses: Sequence[str]) -> list[Check] | None:
    """``checks`` plus the identity of every file the allocator named (None if one is gone:
    the answer is then not kept)."""
    for path in dict.fromkeys(witnesses):
        try:
            st = os.stat(path)
        except OSError:
            return None
        checks.append((path, st.st_dev, st.st_ino))
    return checks


class ResourceRuntime:
    """Everything the framework keeps for one resource while it is served."""

    def __init__(
        self,
        resource: Resource,
        host: HostFS,
        metrics: Metrics,
        alloc_pool: concurrent.futures.Executor,
        *,
        cdi: bool,
        rescan: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.resource = resource
        self.name = resource.name
        self.host = host
        self.metrics = metrics
        self.alloc_pool = alloc_pool
        self.rescan = rescan
        self.verified = VerifiedPaths()
        self.state = ResourceState(resource.name)
        self.tracker = HealthTracker(resource.health.recover_after if resource.health else 2)
        self.devices: tuple[Device, ...] = ()
        self.health_keys: frozenset[str] = frozenset()
        self.invalid: Mapping[str, str] = {}  # device ID -> why its edits were refused
        self.cdi: CdiKind | None = cdi_kind(resource.name) if cdi else None
        self.streams = 0
        self.streams_changed = Signal()
        self.registered = False
        self._wire: tuple[int, object] | None = None
        self._encoder = DeviceListEncoder()
        self._answers = AnswerCache()
        self._allocated_devices = metrics.allocated_devices.labels(self.name)
        self._allocations_ok = metrics.allocations.labels(self.name, "ok")

    # -- state ---------------------------------------------------------------------------------
    def replace_resource(self, resource: Resource) -> None:
        """Swap in a rebuilt Resource (config reload) without touching the endpoint."""
        self.resource = resource
        self.verified = VerifiedPaths()  # allow-lists may have changed
        self.tracker.recover_after = resource.health.recover_after if resource.health else 2

    def set_devices(self, devices: Sequence[Device], invalid: Mapping[str, str]) -> bool:
        """Adopt a scan result; returns True if the advertised snapshot changed."""
        seen: dict[str, Device] = {}
        for device in devices:
            if device.id in seen:
                log.error(
                    "%s: duplicate device ID %s from the scan; keeping the first",
                    self.name,
                    device.id,
                )
                continue
            seen[device.id] = device
        self.devices = tuple(seen.values())
        self.invalid = invalid
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
        tracker = self.tracker
        good, bad = Health.HEALTHY, Health.UNHEALTHY
        health = {
            d.id: good if d.healthy and tracker.is_healthy(d.health_key) else bad
            for d in self.devices
        }
        return self.state.publish(self.devices, health)

    def cdi_devices(self) -> list[Device]:
        """The devices whose edits go into the CDI spec (refused ones are left out)."""
        return [d for d in self.devices if d.id not in self.invalid]

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

    def _allocate_blocking(
        self, resource: Resource, devices: tuple[Device, ...]
    ) -> tuple[ContainerEdits, Omitted, list[Check] | None]:
        validator = EditsValidator(self.host, resource, self.verified)
        omitted: Omitted = []
        live = []
        for device in devices:
            kept, gone = live_parts(validator, device)
            live.append(kept)
            for part, err in gone:
                omitted.append((part.name, err.reason))
                self.metrics.parts_omitted.labels(self.name, part.name, "vanished").inc()
                log.warning(
                    "%s: Allocate of %s leaves out %s (vanished: %s)",
                    self.name,
                    device.id,
                    part.name,
                    err.reason,
                )
        request = AllocationRequest(resource.name, tuple(live))
        edits = resource.allocator.allocate(request)
        if not isinstance(edits, ContainerEdits):
            raise AllocationError(
                f"{type(resource.allocator).__name__}.allocate returned "
                f"{type(edits).__name__}, not ContainerEdits"
            )
        edits = validator.validate(edits)
        reusable = resource.allocator.reusable and not omitted
        if self.cdi is not None:
            edits = self._cdi_edits(validator, live, edits)
        checks = validator.checks() if reusable else None  # with the CDI-covered paths
        if checks is not None:
            checks = _with_witnesses(checks, request._witnesses)
        return edits, omitted, checks

    def _cdi_edits(
        self, validator: EditsValidator, live: Sequence[Device], edits: ContainerEdits
    ) -> ContainerEdits:
        """``edits`` without what the CDI devices cover, plus their annotation."""
        assert self.cdi is not None
        names: list[str] = []
        covered_parts: list[ContainerEdits] = []
        for device in live:
            if device.edits.device_nodes or device.edits.mounts:
                names.append(device.cdi_name)
                covered_parts.append(device.edits)
            for part in device.parts:
                if part.edits.device_nodes or part.edits.mounts:
                    names.append(part.cdi_name)
                    covered_parts.append(part.edits)
        covered = ContainerEdits().merge(*covered_parts)
        covered = validator.validate(
            ContainerEdits(device_nodes=covered.device_nodes, mounts=covered.mounts)
        )
        return edits.without(covered).merge(annotate(self.cdi, names))

    def count_allocation(self, result: str) -> None:
        """Count one Allocate call by its result (``ok``, ``unknown_device``, …)."""
        if result == "ok":
            self._allocations_ok.inc()
        else:
            self.metrics.allocations.labels(self.name, result).inc()

    def kept_answer(self, request: bytes) -> bytes | None:
        """The serialized answer to a request with exactly these bytes, if a reusable
        allocator's answer to it is kept for the current snapshot and its paths check out
        (no decoding, no thread hop); None otherwise."""
        resource = self.resource
        if not resource.allocator.reusable:
            return None
        snapshot = self.snapshot
        hit = self._answers.get_bytes(resource, snapshot.devices, snapshot.version, request)
        if hit is None:
            return None
        self._allocated_devices.inc(hit[1])
        return hit[0]

    async def answer(self, ids: Sequence[str], request: bytes | None = None) -> bytes:
        """The serialized AllocateResponse for a one-container request (the kubelet sends one
        container per call). A reusable allocator's answer is kept for the device list and
        served again on the loop, without a thread hop, while its paths still check out;
        ``request`` (the request's bytes) then finds it through :meth:`kept_answer`."""
        resource, snapshot = self.resource, self.snapshot
        devices = self.resolve(ids)
        allocator = resource.allocator
        reusable = allocator.reusable
        key = allocator.reuse_key(devices) if reusable else None
        answers = self._answers
        if reusable:
            kept = answers.get(resource, snapshot.devices, key)
            if kept is not None:
                self._allocated_devices.inc(len(devices))
                if request is not None:
                    answers.remember(resource, snapshot.devices, snapshot.version, request, key)
                return kept
        edits, checks = await self._allocate(resource, devices)
        data = self._keep(resource, snapshot, key, edits, checks, len(devices))
        if request is not None:
            answers.remember(resource, snapshot.devices, snapshot.version, request, key)
        return data

    def _keep(
        self,
        resource: Resource,
        snapshot: Snapshot,
        key: object,
        edits: ContainerEdits,
        checks: list[Check] | None,
        count: int,
    ) -> bytes:
        """The serialized response for ``edits``, kept under ``key`` when it has checks and
        the resource and its devices are still those it was built for."""
        response = pb.AllocateResponse(container_responses=[container_response(edits)])
        encoded: bytes = response.SerializeToString()
        if checks is not None and self._unchanged(resource, snapshot):
            self._answers.put(resource, snapshot.devices, key, encoded, checks, count)
        return encoded

    def _unchanged(self, resource: Resource, snapshot: Snapshot) -> bool:
        return self.resource is resource and self.snapshot.devices is snapshot.devices

    def _in_pool(
        self, resource: Resource, devices: tuple[Device, ...]
    ) -> Awaitable[tuple[ContainerEdits, Omitted, list[Check] | None]]:
        """:meth:`_allocate_blocking` in the Allocate pool, bounded by the resource's timeout."""
        return in_thread(
            self.alloc_pool, resource.allocate_timeout, self._allocate_blocking, resource, devices
        )

    async def build_ahead(self) -> int:
        """Build the one-device answers of an allocator with ``build_ahead`` for every healthy
        device whose reuse key has none yet (one at a time, in the Allocate pool); stops when
        the devices change meanwhile. Returns how many were built."""
        resource, snapshot = self.resource, self.snapshot
        allocator = resource.allocator
        if not (allocator.reusable and allocator.build_ahead):
            return 0
        built = 0
        for n, device in enumerate(snapshot.devices):
            if n % 256 == 255:
                await asyncio.sleep(0)  # 10 000 slots: keep the loop answering
            if not self._unchanged(resource, snapshot):
                break
            if not self.snapshot.healthy(device.id):
                continue
            key = allocator.reuse_key((device,))
            if self._answers.has(resource, snapshot.devices, key):
                continue
            try:
                edits, _, checks = await self._in_pool(resource, (device,))
            except Exception as err:  # the Allocate that asks for it will say what is wrong
                log.debug("%s: no answer built ahead for %s: %s", self.name, device.id, err)
                continue
            self._keep(resource, snapshot, key, edits, checks, 1)
            if self._answers.has(resource, snapshot.devices, key):
                built += 1
        return built

    async def keep_answers_built(self, settle: float = 1.0) -> None:
        """Run :meth:`build_ahead` ``settle`` seconds after each new snapshot (and after
        start: never before Register), for as long as the resource is served."""
        built = 0  # the snapshot version last built for
        while True:
            version = self.snapshot.version
            if version != built and self.resource.allocator.build_ahead:
                await asyncio.sleep(settle)  # after Register, and after a burst of changes
                if self.snapshot.version == version:
                    started = time.monotonic()
                    count = await self.build_ahead()
                    built = version
                    if count:
                        log.debug(
                            "%s: %d answers built ahead in %.2fs",
                            self.name,
                            count,
                            time.monotonic() - started,
                        )
                continue
            await self.state.wait_newer(version)

    async def allocate(self, ids: Sequence[str]) -> ContainerEdits:
        """Container edits for one container request (raises AllocationError/HostPathError)."""
        return (await self._allocate(self.resource, self.resolve(ids)))[0]

    async def _allocate(
        self, resource: Resource, devices: tuple[Device, ...]
    ) -> tuple[ContainerEdits, list[Check] | None]:
        start = time.monotonic()
        try:
            edits, omitted, checks = await self._in_pool(resource, devices)
        except TimeoutError:
            raise AllocationError(
                f"allocation for {self.name} did not finish within {resource.allocate_timeout:g}s",
                [d.id for d in devices],
            ) from None
        except HostPathError as err:
            if err.missing:
                self.rescan(f"{self.name}: Allocate found {err.path} missing")
            raise
        finally:
            self.metrics.allocate_duration.labels(self.name).observe(time.monotonic() - start)
        if omitted:
            self.rescan(f"{self.name}: Allocate left out vanished {omitted[0][0]}")
        self._allocated_devices.inc(len(devices))
        return edits, checks

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
