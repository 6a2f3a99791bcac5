"""Shared pieces of the fault suite: running a case in-process or as a ``devplugin run``
subprocess, and what the kubelet and the process look like from outside."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devplugin_core._runtime import PluginRuntime
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .cases import Case

HEALTHY, UNHEALTHY = "Healthy", "Unhealthy"


@dataclass
class Node:
    """A case's node built on a fake host, with its scratch directory and config document."""

    case: Case
    host: FakeHost
    scratch: Path
    config: dict[str, Any]

    def options(self, **overrides: Any) -> dict[str, Any]:
        return {**self.case.options(self.host, self.scratch), **overrides}


@contextlib.asynccontextmanager
async def serve(
    node: Node,
    kubelet: FakeKubelet,
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    plugin_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[PluginRuntime[Any]]:
    """Run the case's plugin in-process against ``kubelet`` until the block exits."""
    async with run_plugin(
        node.case.spec,
        node.host,
        kubelet,
        config=node.config if config is None else config,
        plugin_options={**node.options(), **(plugin_options or {})},
        **options,
    ) as runtime:
        yield runtime


async def wait_registered(
    kubelet: FakeKubelet, case: Case, count: int = 1, timeout: float = 20.0
) -> None:
    """Every resource registered ``count`` times and its latest stream shows every device."""
    for resource, devices in case.expected.items():
        await kubelet.wait_for_registration(resource, count, timeout)
        await kubelet.wait_for_devices(resource, lambda d, n=devices: len(d) == n, timeout)


def health_of(kubelet: FakeKubelet, resource: str, ids: tuple[str, ...]) -> set[str]:
    seen = kubelet.health(resource)
    return {seen.get(i, "missing") for i in ids}


def our_sockets(directory: str) -> list[str]:
    """Socket files in ``directory`` other than ``kubelet.sock``."""
    out = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError):
            if name != "kubelet.sock" and stat.S_ISSOCK(os.lstat(path).st_mode):
                out.append(name)
    return out


#: Worker-thread name prefixes of bounded pools (they start threads lazily, up to their size).
POOL_THREADS = ("asyncio_", "devplugin-alloc_", "devplugin-bg_", "ThreadPoolExecutor-")


@dataclass(frozen=True, order=True)
class Usage:
    """What a leak would grow: open fds, threads that are not pool workers, asyncio tasks."""

    fds: int
    threads: int
    tasks: int


def usage() -> Usage:
    threads = [t for t in threading.enumerate() if not t.name.startswith(POOL_THREADS)]
    return Usage(len(os.listdir("/proc/self/fd")), len(threads), len(asyncio.all_tasks()))


def within(now: Usage, limit: Usage) -> bool:
    return now.fds <= limit.fds and now.threads <= limit.threads and now.tasks <= limit.tasks


def floor(samples: list[Usage]) -> Usage:
    """The lowest value of each count over ``samples`` (a transient fd or task, such as a
    channel being closed, must not raise the baseline)."""
    return Usage(
        min(s.fds for s in samples), min(s.threads for s in samples), min(s.tasks for s in samples)
    )


# -- devplugin run subprocesses ---------------------------------------------------------------
class PluginProcess:
    """``devplugin run`` for a case, as the DaemonSet would start it; logs go to a file."""

    def __init__(self, node: Node, kubelet_dir: str, log: Path, config: Path) -> None:
        self.node = node
        self.log = log
        write_json(config, node.config)
        self.command = [
            sys.executable,
            "-m",
            "devplugin_core",
            "run",
            node.case.name,
            "--host-root",
            str(node.host.root),
            "--kubelet-dir",
            kubelet_dir,
            "--config-file",
            str(config),
            "--metrics-address",
            "",
            "--pod-resources-socket",
            "",
            *node.case.flags(node.host, node.scratch),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PluginProcess:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def processes(*procs: PluginProcess) -> Iterator[None]:
    """Kill whatever is still running when the block exits (a failed test must not leak)."""
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()


def write_json(path: Path | str, document: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(document, fh)
    os.replace(tmp, path)
