"""Allocate answers kept for allocators that declare them reusable (``Allocator.reusable``).

An answer is valid for one device list of one Resource object: a scan that changed the
devices or a reload starts a new cache (a health change does not: the kubelet only gets answers
for devices that are healthy now). Before an answer is reused, every host path it grants and every
file the allocator named (``AllocationRequest.depends_on``) is checked with one ``stat``: the
path must still lead to the inode that passed canonicalisation and the allow-list (a swapped
symlink, a replaced or vanished node falls back to a full Allocate). These stats run on the
event loop: they touch only ``/dev`` nodes, mount sources and sysfs entries already resolved,
and cost microseconds.

Answers are found two ways: by the allocator's reuse key (any request for those devices), and
by the exact bytes of a request already answered, which serves the serialized answer without
decoding the request at all (the kubelet repeats the same bytes for the same devices).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence

from ._paths import Check

__all__ = ["AnswerCache"]

MAX_ANSWERS = 4096


class _Entry:
    __slots__ = ("checks", "data", "devices")

    def __init__(self, data: bytes, checks: tuple[Check, ...], devices: int) -> None:
        self.data = data
        self.checks = checks
        self.devices = devices


class AnswerCache:
    """Serialized AllocateResponses of one resource, by reuse key and by request bytes.

    Answers belong to one Resource object and one device list (``Snapshot.devices``, the same
    tuple across health changes: an answer depends on the device, not on its health, which
    every lookup by key checks first). The request-bytes index skips that check, so it belongs
    to one snapshot version and starts empty after any change.
    """

    def __init__(self) -> None:
        self._owner: tuple[object, object] = (None, None)
        self._answers: dict[Hashable, _Entry] = {}
        self._version = -1
        self._requests: dict[bytes, Hashable] = {}

    def _holds(self, resource: object, devices: object) -> bool:
        owner = self._owner
        return owner[0] is resource and owner[1] is devices

    def has(self, resource: object, devices: object, key: Hashable) -> bool:
        """Whether an answer is kept under ``key`` for this Resource and device list (its
        paths are not checked)."""
        return self._holds(resource, devices) and key in self._answers

    def _valid(self, key: Hashable) -> _Entry | None:
        entry = self._answers.get(key)
        if entry is None:
            return None
        stat = os.stat
        for local, dev, ino in entry.checks:
            try:
                st = stat(local)
            except OSError:
                del self._answers[key]
                return None
            if st.st_ino != ino or st.st_dev != dev:
                del self._answers[key]
                return None
        return entry

    def get(self, resource: object, devices: object, key: Hashable) -> bytes | None:
        """The serialized answer kept under ``key``, if its paths still check out."""
        if not self._holds(resource, devices):
            return None
        entry = self._valid(key)
        return None if entry is None else entry.data

    def get_bytes(
        self, resource: object, devices: object, version: int, request: bytes
    ) -> tuple[bytes, int] | None:
        """The serialized answer to these exact request bytes and its device count."""
        if self._version != version or not self._holds(resource, devices):
            return None
        key = self._requests.get(request)
        if key is None:
            return None
        entry = self._valid(key)
        return None if entry is None else (entry.data, entry.devices)

    def put(
        self,
        resource: object,
        devices: object,
        key: Hashable,
        data: bytes,
        checks: Sequence[Check],
        count: int,
    ) -> None:
        """Keep the serialized answer ``data`` for ``count`` devices under ``key``."""
        if not self._holds(resource, devices):
            self._owner = (resource, devices)
            self._answers = {}
            self._requests = {}
        if len(self._answers) >= MAX_ANSWERS:
            self._answers.clear()
            self._requests.clear()
        self._answers[key] = _Entry(data, tuple(checks), count)

    def remember(
        self, resource: object, devices: object, version: int, request: bytes, key: Hashable
    ) -> None:
        """Let ``request`` (its bytes) find the answer kept under ``key`` in this version."""
        if not self.has(resource, devices, key):
            return
        if self._version != version:
            self._version = version
            self._requests = {}
        if len(self._requests) >= MAX_ANSWERS:
            self._requests.clear()
        self._requests[request] = key
