"""Allocate answers kept for allocators that declare them reusable (``Allocator.reusable``).

An answer is valid for one snapshot version of one Resource object: a scan, a health change or
a reload starts a new cache. Before an answer is reused, every host path it grants and every
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
from ._proto import deviceplugin_v1beta1_pb2 as pb

__all__ = ["AnswerCache"]

MAX_ANSWERS = 4096


class _Entry:
    __slots__ = ("answer", "checks", "data", "devices")

    def __init__(
        self, answer: pb.AllocateResponse, checks: tuple[Check, ...], devices: int
    ) -> None:
        self.answer = answer
        self.data = answer.SerializeToString()
        self.checks = checks
        self.devices = devices


class AnswerCache:
    """Prebuilt AllocateResponses of one resource, by reuse key and by request bytes."""

    def __init__(self) -> None:
        self._owner: tuple[object, int] = (None, -1)
        self._answers: dict[Hashable, _Entry] = {}
        self._requests: dict[bytes, Hashable] = {}

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

    def get(self, resource: object, version: int, key: Hashable) -> pb.AllocateResponse | None:
        owner = self._owner
        if owner[0] is not resource or owner[1] != version:
            return None
        entry = self._valid(key)
        return None if entry is None else entry.answer

    def get_bytes(self, resource: object, version: int, request: bytes) -> tuple[bytes, int] | None:
        """The serialized answer to these exact request bytes and its device count."""
        owner = self._owner
        if owner[0] is not resource or owner[1] != version:
            return None
        key = self._requests.get(request)
        if key is None:
            return None
        entry = self._valid(key)
        return None if entry is None else (entry.data, entry.devices)

    def put(
        self,
        resource: object,
        version: int,
        key: Hashable,
        answer: pb.AllocateResponse,
        checks: Sequence[Check],
        devices: int,
    ) -> None:
        if self._owner[0] is not resource or self._owner[1] != version:
            self._owner = (resource, version)
            self._answers = {}
            self._requests = {}
        if len(self._answers) >= MAX_ANSWERS:
            self._answers.clear()
            self._requests.clear()
        self._answers[key] = _Entry(answer, tuple(checks), devices)

    def remember(self, resource: object, version: int, request: bytes, key: Hashable) -> None:
        """Let ``request`` (its bytes) find the answer kept under ``key``."""
        owner = self._owner
        if owner[0] is resource and owner[1] == version and key in self._answers:
            if len(self._requests) >= MAX_ANSWERS:
                self._requests.clear()
            self._requests[request] = key
