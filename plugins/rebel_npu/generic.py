"""Vendor-neutral helpers used by rebel_npu; candidates to lift into ``devplugin_core``.

Nothing here knows about Rebellions:

* :func:`run_bounded`: run a tool with a hard deadline, killing its whole process group;
* :class:`DeadlineLock`: an in-process lock plus an ``flock`` on a file (so two plugin
  processes serialise too), both acquired within a deadline;
* :func:`pci_bridges`: the PCI-to-PCI bridges (class 0x0604) above a function, root port first,
  from the resolved sysfs path;
* :func:`prefer_nested`: :func:`devplugin_core.prefer_packed` plus a look-ahead that prefers a
  single group at any level over several when one can hold the request.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

from devplugin_core import Device, HostFS, PciDevice, PreferredRequest, prefer_packed
from devplugin_core.allocation import KeyFn
from devplugin_core.pci import pci_class

__all__ = [
    "CommandResult",
    "DeadlineLock",
    "LockTimeout",
    "pci_bridges",
    "prefer_nested",
    "run_bounded",
]

MAX_OUTPUT = 4 * 1024 * 1024


@dataclass(frozen=True)
class CommandResult:
    """How a bounded command ended: exit code (None when killed on timeout) and its output."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for logs and error messages."""
        cmd = " ".join(self.argv)
        if self.timed_out:
            return f"{cmd} timed out"
        detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
        tail = f": {detail[-1][:300]}" if detail else ""
        return f"{cmd} exited with {self.returncode}{tail}"


def run_bounded(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run ``argv`` (no shell) for at most ``timeout`` seconds.

    The child gets its own session; on timeout the whole process group is killed, so helper
    processes holding the pipes cannot keep us waiting. Raises OSError when it cannot start.
    """
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, close_fds=True,
    )
    try:
        out, err = proc.communicate(timeout=max(timeout, 0.01))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=1.0)
        return CommandResult(tuple(argv), None, "", "", timed_out=True)
    text = out[:MAX_OUTPUT].decode("utf-8", "replace")
    return CommandResult(tuple(argv), proc.returncode, text, err[:65536].decode("utf-8", "replace"))


class LockTimeout(TimeoutError):
    """The lock could not be acquired before the deadline."""


class DeadlineLock:
    """A lock shared by the threads of this process and, through ``flock(path)``, by every
    process using the same file. Acquire it with :meth:`hold` and a deadline."""

    def __init__(self, path: str, poll: float = 0.02) -> None:
        self.path = path
        self.poll = poll
        self._local = threading.Lock()

    @contextlib.contextmanager
    def hold(self, deadline: float) -> Iterator[None]:
        """Hold both locks; raise :class:`LockTimeout` if ``deadline`` (monotonic) passes."""
        if not self._local.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise LockTimeout(f"another allocation in this process holds the lock on {self.path}")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as err:
                        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                            raise
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"another process holds the lock on {self.path}")
                    time.sleep(self.poll)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            self._local.release()


def pci_bridges(host: HostFS, dev: PciDevice, classes: dict[str, int | None]) -> tuple[str, ...]:
    """PCI-to-PCI bridges above ``dev``, root port first (``classes`` caches class codes)."""
    out = []
    for address in dev.upstream:
        if address not in classes:
            classes[address] = pci_class(host, address)
        code = classes[address]
        if code is not None and code >> 8 == 0x0604:
            out.append(address)
    return tuple(out)


def _score(devices: Sequence[Device], levels: Sequence[KeyFn]) -> tuple[int, ...]:
    return tuple(len({level(d) for d in devices}) for level in levels)


def prefer_nested(request: PreferredRequest, levels: Sequence[KeyFn]) -> list[str]:
    """Preferred IDs packed level by level, honouring must-include.

    Candidates: :func:`prefer_packed` over everything, and :func:`prefer_packed` restricted to
    each group (at any level) that can hold the whole request. The winner uses the fewest
    groups at the outermost level, then the next level, and so on (ties: the first candidate,
    the unrestricted one first). So 4 devices go to one switch in another NUMA node rather
    than to two switches in a smaller node, which a greedy "smallest group that fits" misses.
    """
    by_id = {d.id: d for d in (*request.available, *request.must_include)}
    must = [d for d in request.must_include if d.id in by_id]
    best = prefer_packed(request, levels)
    if len(must) >= request.size:
        return best
    best_score = _score([by_id[i] for i in best if i in by_id], levels)
    pool = list(request.available)
    seen: set[tuple[int, Hashable]] = set()
    for depth, level in enumerate(levels):
        groups: dict[Hashable, list[Device]] = {}
        for device in pool:
            key = level(device)
            if key is not None:
                groups.setdefault(key, []).append(device)
        for key in sorted(groups, key=str):
            members = groups[key]
            extra = [d for d in must if d not in members]
            if len(members) + len(extra) < request.size or (depth, key) in seen:
                continue
            seen.add((depth, key))
            sub = PreferredRequest(request.resource, tuple(members), tuple(must), request.size)
            picked = prefer_packed(sub, levels)
            if len(picked) != len(best):
                continue
            score = _score([by_id[i] for i in picked], levels)
            if score < best_score:
                best, best_score = picked, score
    return best
