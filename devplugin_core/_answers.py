"""Allocate answers kept for allocators that declare them reusable (``Allocator.reusable``).

An answer is valid for one snapshot version of one Resource object: a scan, a health change or
a reload starts a new cache. Before an answer is reused, every host path it grants is checked
with one ``stat``: the path must still lead to the inode that passed canonicalisation and the
allow-list (a swapped symlink, a replaced or vanished node falls back to a full Allocate).
These stats run on the event loop: they touch only ``/dev`` nodes and mount sources already
resolved, never sysfs, and cost microseconds.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence

from ._paths import Check
from ._proto import deviceplugin_v1beta1_pb2 as pb

__all__ = ["AnswerCache"]

MAX_ANSWERS = 4096


class AnswerCache:
    """Prebuilt AllocateResponses of one resource, by the allocator's reuse key."""

    def __init__(self) -> None:
        self._owner: tuple[object, int] = (None, -1)
        self._answers: dict[Hashable, tuple[pb.AllocateResponse, tuple[Check, ...]]] = {}

    def get(self, resource: object, version: int, key: Hashable) -> pb.AllocateResponse | None:
        owner = self._owner
        if owner[0] is not resource or owner[1] != version:
            return None
        entry = self._answers.get(key)
        if entry is None:
            return None
        answer, checks = entry
        stat = os.stat
        for local, dev, ino in checks:
            try:
                st = stat(local)
            except OSError:
                del self._answers[key]
                return None
            if st.st_ino != ino or st.st_dev != dev:
                del self._answers[key]
                return None
        return answer

    def put(
        self,
        resource: object,
        version: int,
        key: Hashable,
        answer: pb.AllocateResponse,
        checks: Sequence[Check],
    ) -> None:
        if self._owner[0] is not resource or self._owner[1] != version:
            self._owner = (resource, version)
            self._answers = {}
        if len(self._answers) >= MAX_ANSWERS:
            self._answers.clear()
        self._answers[key] = (answer, tuple(checks))
