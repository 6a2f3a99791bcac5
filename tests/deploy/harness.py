"""Run a real ``devplugin run <plugin>`` process against a simulated node.

The node is what ``devplugin demo`` builds: a :class:`FakeHost` filled by the plugin's own
``SPEC.demo(host)`` hook (which also returns the config), a :class:`FakeKubelet` and a
:class:`FakePodResources` server, all in one short temp directory (unix socket paths must stay
under 107 bytes). The plugin is a separate process, started exactly as the DaemonSet starts it
(``devplugin run <plugin> --host-root ...``), so what we measure and scrape is what a node runs.

Used by the deploy tests (real Prometheus, promtool, PodResources attribution) and by
``measure.py`` (the RSS/CPU numbers behind the DaemonSet's resources).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devplugin_core._plugins import get_plugin
from devplugin_core.testing import FakeHost, FakeKubelet, FakePodResources, short_tempdir

PLUGINS = ("rdma-shared", "sriov-net", "rebel-npu")
#: overlay folder (Python package name) of each plugin
OVERLAYS = {name: name.replace("-", "_") for name in PLUGINS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


async def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll a (blocking, cheap) predicate off the loop until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Node:
    """A simulated node: fake host, fake kubelet and PodResources sockets, one config per
    plugin."""

    base: str
    host: FakeHost
    kubelet_dir: str
    pod_socket: str
    configs: dict[str, str | None] = field(default_factory=dict)
    #: per-plugin flags that keep the process inside the temp dir (never the real /var/run)
    extra_args: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def create(cls, plugins: Sequence[str]) -> Node:
        base = short_tempdir("dpd-")
        host = FakeHost(os.path.join(base, "h"))
        node = cls(base, host, os.path.join(base, "k", "dp"), os.path.join(base, "pr", "k.sock"))
        os.makedirs(node.kubelet_dir)
        for name in plugins:
            spec = get_plugin(name)
            assert spec.demo is not None, f"{name} has no demo hook"
            document = spec.demo(host)
            path = None
            if document is not None:
                path = os.path.join(base, f"{name}.json")
                Path(path).write_text(json.dumps(document, indent=2))
            node.configs[name] = path
        devinfo = os.path.join(base, "devinfo")
        os.makedirs(devinfo)
        node.extra_args["sriov-net"] = ["--device-info-dir", devinfo]
        return node

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class PluginProcess:
    """One ``devplugin run`` subprocess with its metrics port and log file."""

    name: str
    port: int
    log_path: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def metrics(self) -> str:
        status, body = http_get(self.url + "/metrics")
        assert status == 200, f"{self.name}: /metrics answered {status}\n{self.log()[-3000:]}"
        return body

    async def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            return http_get(self.url + "/readyz", 1.0)[0] == 200

        try:
            await wait_for(ready, timeout, f"{self.name} /readyz")
        except TimeoutError as err:
            raise AssertionError(f"{err}\n{self.name} log:\n{self.log()[-3000:]}") from None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def plugin_command(
    name: str,
    node: Node,
    port: int,
    *,
    pod_socket: str | None = None,
    pod_interval: float = 0.2,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line the DaemonSet runs, pointed at the simulated node."""
    cmd = [
        sys.executable,
        "-m",
        "devplugin_core",
        "run",
        name,
        "--host-root",
        node.host.root.as_posix(),
        "--kubelet-dir",
        node.kubelet_dir,
        "--metrics-address",
        f"127.0.0.1:{port}",
        "--pod-resources-socket",
        pod_socket if pod_socket is not None else node.pod_socket,
        "--pod-resources-interval",
        str(pod_interval),
        "--log-level",
        "info",
    ]
    config = node.configs.get(name)
    if config:
        cmd += ["--config-file", config]
    return [*cmd, *node.extra_args.get(name, ()), *extra]


def start_plugin(name: str, node: Node, **kwargs: Any) -> PluginProcess:
    port = free_port()
    log_path = os.path.join(node.base, f"{name}.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPLUGIN_")}
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            plugin_command(name, node, port, **kwargs),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return PluginProcess(name, port, log_path, process)


@contextlib.asynccontextmanager
async def simulated_node(
    plugins: Sequence[str], *, pod_resources: bool = True, **kwargs: Any
) -> AsyncIterator[tuple[Node, FakeKubelet, FakePodResources | None, dict[str, PluginProcess]]]:
    """Start a fake kubelet (and PodResources server) and every plugin in ``plugins``; yield
    once all of them answer ``/readyz`` 200 and the kubelet holds every resource's first
    device list (``/readyz`` turns 200 when Register returns, which can beat that list)."""
    node = Node.create(plugins)
    kubelet = FakeKubelet(node.kubelet_dir)
    pods = FakePodResources(node.pod_socket) if pod_resources else None
    processes: dict[str, PluginProcess] = {}
    await kubelet.start()
    try:
        if pods is not None:
            await pods.start()
        for name in plugins:
            processes[name] = start_plugin(name, node, **kwargs)
        await asyncio.gather(*(p.wait_ready() for p in processes.values()))
        for resource in list(kubelet.connections):
            await kubelet.wait_for_registration(resource)
        yield node, kubelet, pods, processes
    finally:
        await asyncio.gather(
            *(asyncio.to_thread(p.stop) for p in processes.values()), return_exceptions=True
        )
        if pods is not None:
            await pods.stop()
        await kubelet.stop()
        node.remove()
