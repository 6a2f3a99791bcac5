"""Host-path rules for what a container gets: canonical, allow-listed, verified cheaply.

Every device node and mount source in :class:`~devplugin_core.ContainerEdits` is canonicalised
inside the host root and checked against the resource's allow-lists, at every scan (a refused
device is advertised Unhealthy with the reason) and at every Allocate (a refused path fails
the request). :class:`VerifiedPaths` makes the Allocate-time check one ``stat`` per path.
:func:`live_parts` applies the rule for devices backed by several host devices: parts whose
paths vanished are left out while others remain.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

from ._api import Resource
from ._errors import HostPathError
from ._hostfs import HostFS
from ._model import ContainerEdits, Device, DeviceNode, Mount, Part

__all__ = ["EditsValidator", "VerifiedPaths", "check_container_path", "live_parts", "scan_checked"]


def check_container_path(path: str) -> None:
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

    def get(self, host: HostFS, kind: str, path: str) -> tuple[str, int, int] | None:
        """(canonical path, st_dev, st_ino) when ``path`` still leads to that inode."""
        entry = self._entries.get((kind, path))
        if entry is None:
            return None
        try:
            st = os.stat(host.local(path))
        except OSError:
            return None
        return entry if (st.st_dev, st.st_ino) == entry[1:] else None

    def put(
        self, host: HostFS, kind: str, path: str, canonical: str
    ) -> tuple[str, int, int] | None:
        """Remember that ``path`` passed as ``canonical``; returns the entry (None when the
        target is gone already)."""
        try:
            st = os.stat(host.local(canonical))
        except OSError:
            return None
        if len(self._entries) > 65536:
            self._entries.clear()
        entry = (canonical, st.st_dev, st.st_ino)
        self._entries[(kind, path)] = entry
        return entry


#: (local path as the edits name it, st_dev, st_ino of its canonical target)
Check = tuple[str, int, int]


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
        self._passed: dict[tuple[str, str], Check] = {}  # what a cached answer re-checks
        self._unproven = False  # a path passed without an inode to re-check it by
        self._dirs: set[str] = set()  # real directories met during this validator's pass

    def _check(self, kind: str, path: str) -> str:
        hit = self._seen.get((kind, path))
        if hit is None:
            entry = self.verified.get(self.host, kind, path) if self.verified else None
            if entry is None:
                try:
                    if kind == "node":
                        canonical = self.host.check_device_node(
                            path, self.resource.device_allowlist, dirs=self._dirs
                        )
                    else:
                        canonical = self.host.check_mount_source(
                            path, self.resource.mount_allowlist, dirs=self._dirs
                        )
                    if self.verified is not None:
                        entry = self.verified.put(self.host, kind, path, canonical)
                    hit = canonical
                except HostPathError as err:
                    hit = err
            else:
                hit = entry[0]
            if entry is not None:
                self._passed[(kind, path)] = (self.host.local(path), entry[1], entry[2])
            elif not isinstance(hit, HostPathError):
                self._unproven = True
            self._seen[(kind, path)] = hit
        if isinstance(hit, HostPathError):
            raise hit
        return hit

    def checks(self) -> list[Check] | None:
        """Every path that passed, with the inode it led to, for
        :class:`~devplugin_core._answers.AnswerCache` (no I/O); None when some path has no
        such proof (no ``verified`` cache, or its target vanished meanwhile)."""
        if self._unproven or self.verified is None:
            return None
        return list(self._passed.values())

    def validate(self, edits: ContainerEdits) -> ContainerEdits:
        """Edits with canonical host paths; raises HostPathError for anything not allowed."""
        if not edits.device_nodes and not edits.mounts:
            return edits
        nodes = []
        for n in edits.device_nodes:
            host_path = self._check("node", n.host_path)
            check_container_path(n.container_path)
            nodes.append(DeviceNode(host_path, n.container_path, n.permissions))
        mounts = []
        for m in edits.mounts:
            host_path = self._check("mount", m.host_path)
            check_container_path(m.container_path)
            mounts.append(Mount(host_path, m.container_path, m.read_only))
        return dataclasses.replace(edits, device_nodes=tuple(nodes), mounts=tuple(mounts))


def scan_checked(
    host: HostFS, resource: Resource, devices: Sequence[Device]
) -> tuple[list[Device], dict[str, str], dict[str, list[str]]]:
    """Scan-time check of every device's edits and parts (in the scan thread).

    Returns the devices (refused ones turned Unhealthy), device ID -> why it was refused, and
    problem -> refused device IDs (one log line per problem, not per device).
    """
    validator = EditsValidator(host, resource)
    verdicts: dict[int, HostPathError | None] = {}
    kept: dict[int, tuple[tuple[Part, ...] | None, HostPathError | None]] = {}
    invalid: dict[str, str] = {}
    refused: dict[str, list[str]] = {}
    out = []

    def verdict(edits: ContainerEdits) -> HostPathError | None:
        key = id(edits)
        if key not in verdicts:
            try:
                validator.validate(edits)
                verdicts[key] = None
            except HostPathError as err:
                verdicts[key] = err
        return verdicts[key]

    for device in devices:
        problem = (
            verdict(device.edits) if device.edits.device_nodes or device.edits.mounts else None
        )
        if problem is None and device.parts:
            # devices sharing one parts tuple (shared slots) share one verdict on it
            key = id(device.parts)
            if key not in kept:
                try:
                    left, gone = _without_vanished(device, verdict)
                    kept[key] = (left.parts if gone else None, None)
                except HostPathError as err:
                    kept[key] = (None, err)
            parts, problem = kept[key]
            if parts is not None:  # some parts vanished: the device without them
                device = device.with_parts(parts)
        if problem is not None:
            refused.setdefault(str(problem), []).append(device.id)
            invalid[device.id] = str(problem)
            device = dataclasses.replace(device, healthy=False)
        out.append(device)
    return out, invalid, refused


def live_parts(
    validator: EditsValidator, device: Device
) -> tuple[Device, list[tuple[Part, HostPathError]]]:
    """``device`` with the parts whose host paths vanished left out, and those parts.

    A refused path (allow-list, symlink escape) raises; so does a device none of whose parts
    is left (the error names the missing path).
    """

    def verdict(edits: ContainerEdits) -> HostPathError | None:
        try:
            validator.validate(edits)
        except HostPathError as err:
            return err
        return None

    return _without_vanished(device, verdict)


def _without_vanished(
    device: Device, verdict: Callable[[ContainerEdits], HostPathError | None]
) -> tuple[Device, list[tuple[Part, HostPathError]]]:
    """The one rule for devices with parts, at scan time and at Allocate: parts whose paths
    vanished are left out while one remains; a refused part, or none left, raises."""
    if not device.parts:
        return device, []
    kept: list[Part] = []
    gone: list[tuple[Part, HostPathError]] = []
    for part in device.parts:
        err = verdict(part.edits)
        if err is None:
            kept.append(part)
        elif not err.missing:
            raise err
        else:
            gone.append((part, err))
    if not kept:
        raise gone[0][1]
    if not gone:
        return device, []
    return device.with_parts(tuple(kept)), gone
