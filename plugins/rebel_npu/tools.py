"""Running vendor tools and serialising side effects, from worker threads.

Allocators and health checkers often need a vendor CLI (``rbln-smi``, ``nvidia-smi``...) or an
exclusive section shared with other processes on the node. Both must be bounded in time:

* :func:`run_bounded` runs a command (no shell) with a hard deadline and kills its whole
  process group on timeout, so helpers holding the pipes cannot keep the caller waiting;
* :class:`DeadlineLock` is an in-process lock plus an ``flock`` on a file (two plugin processes
  serialise too), acquired within a deadline.

Both block: call them from ``Discoverer``/``Allocator``/``HealthChecker`` methods, which the
framework already runs in worker threads.
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["CommandResult", "DeadlineLock", "LockTimeout", "run_bounded"]

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
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
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
