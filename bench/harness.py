"""Benchmark plumbing: plugin processes, the fake kubelet side, statistics, the machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devplugin_core.testing import FakeKubelet

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- statistics -------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


@dataclass
class Series:
    """Repeated measurements of one quantity (one value per run)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.values}


# -- the machine ------------------------------------------------------------------------------
def compile_bytecode(root: Path) -> str:
    """Compile the project's modules to ``__pycache__`` as ``pip install`` does for the image.

    An editable install runs from the source tree; with ``PYTHONDONTWRITEBYTECODE`` set (this
    machine's environment sets it) Python writes no cache there, so every plugin process would
    compile ~70 modules from source at start (50-80 ms here), which no installed plugin does.
    Returns how the benchmark ran, for the report."""
    import compileall

    ok = all(
        compileall.compile_dir(str(root / d), quiet=1, workers=1)
        for d in ("devplugin_core", "plugins")
    )
    if not ok:
        raise RuntimeError("compileall failed for the project's modules")
    return "compiled to __pycache__ first (as pip install does for the image)"


def machine() -> dict[str, str]:
    import google.protobuf
    import grpc

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
    }


# -- process accounting -----------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own user+system CPU, waited-for children's user+system CPU) in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def run_seconds(pid: int) -> float:
    """CPU time the scheduler ran ``pid``'s live threads, in seconds (``/proc/PID/task/*/
    schedstat``, nanosecond resolution). ``cpu_seconds`` comes from tick sampling (10 ms at
    HZ=100), which over- or under-charges a process whose short wake-ups line up with the tick;
    threads that exit inside a window are not counted here (an idle plugin starts none)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited between listing and reading
    return total / 1e9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- plugin processes -------------------------------------------------------------------------
@dataclass
class Plugin:
    """How to run one plugin on the benchmark node."""

    name: str
    config: dict[str, Any]
    resources: dict[str, int]  # resource -> devices it must advertise
    flags: list[str] = field(default_factory=list)


class PluginProcess:
    """``python -m devplugin_core run PLUGIN`` with default settings (metrics on a free port,
    PodResources polled from the bench's fake API)."""

    def __init__(
        self,
        plugin: Plugin,
        host_root: Path,
        kubelet_dir: str,
        pod_socket: str,
        workdir: Path,
        tag: str = "",
    ) -> None:
        self.plugin = plugin
        self.workdir = workdir
        name = plugin.name + (f"-{tag}" if tag else "")
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(json.dumps(plugin.config))
        self.log = workdir / f"{name}.log"
        self.command = [
            sys.executable,
            "-m",
            "devplugin_core",
            "run",
            plugin.name,
            "--host-root",
            str(host_root),
            "--kubelet-dir",
            kubelet_dir,
            "--config-file",
            str(self.config_path),
            "--metrics-address",
            f"127.0.0.1:{free_port()}",
            "--pod-resources-socket",
            pod_socket,
            *plugin.flags,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> PluginProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, 20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return await asyncio.to_thread(self.process.wait, 10)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


async def wait_all_registered(
    kubelet: FakeKubelet,
    plugin: Plugin,
    count: int = 1,
    timeout: float = 60.0,
    process: PluginProcess | None = None,
) -> None:
    """Every resource of ``plugin`` registered ``count`` times and streaming all its devices."""

    def done() -> bool:
        proc = process.process if process is not None else None
        if process is not None and proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{plugin.name} exited:\n{process.tail()}")
        for resource, devices in plugin.resources.items():
            conn = kubelet.connections.get(resource)
            if kubelet.registration_count(resource) < count or conn is None:
                return False
            if len(conn.devices) != devices:
                return False
        return True

    await kubelet.wait_until(done, timeout, f"{plugin.name} registered")


async def wait_for(
    kubelet: FakeKubelet, predicate: Callable[[], bool], timeout: float = 30.0, what: str = ""
) -> float:
    """Wait (event-driven, on kubelet updates) and return when it held (perf_counter)."""
    await kubelet.wait_until(predicate, timeout, what)
    return time.perf_counter()
