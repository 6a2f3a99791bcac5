"""``devplugin demo``: every installed plugin on a simulated node, end to end.

Builds a fake host with the testing kit (each plugin's ``demo`` hook adds its devices and
returns its config), starts a fake kubelet and a fake PodResources API, runs every plugin as a
real ``devplugin run`` subprocess against them, and prints what the kubelet sees per resource and
one example allocation per resource. The metrics endpoints stay up until Ctrl-C; with
``--once`` everything is printed once and the command exits 0 (for scripts and CI).
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
import urllib.request
from dataclasses import dataclass
from typing import Any

from ._api import PluginSpec
from ._plugins import installed_plugins
from .testing import FakeHost, FakeKubelet, FakePodResources, PodAssignment, short_tempdir

__all__ = ["run_demo"]

BOLD, DIM, GREEN, RED, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m")
    if (sys.stdout.isatty())
    else ("", "", "", "", "")
)


@dataclass
class DemoPlugin:
    spec: PluginSpec[Any]
    port: int
    config: str | None
    log: str
    process: subprocess.Popen[bytes] | None = None


_FRAMEWORK_SHOWN = (
    "devplugin_registered{",
    "devplugin_devices{",
    "devplugin_device_allocation_info{",
)
_FRAMEWORK_ALL = (
    "devplugin_allocate",
    "devplugin_allocated",
    "devplugin_build",
    "devplugin_config",
    "devplugin_device",
    "devplugin_discovery",
    "devplugin_health",
    "devplugin_kubelet",
    "devplugin_last",
    "devplugin_listandwatch",
    "devplugin_podresources",
    "devplugin_preferred",
    "devplugin_prestart",
    "devplugin_registered",
    "devplugin_registrations",
    "devplugin_server",
)


def _free_port(preferred: int | None) -> int:
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free TCP port")


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def _short(text: str, limit: int = 110) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_devices(resource: str, devices: list[Any]) -> None:
    healthy = sum(1 for d in devices if d.health == "Healthy")
    numa: dict[str, int] = {}
    for d in devices:
        key = ",".join(str(n.ID) for n in d.topology.nodes) if d.HasField("topology") else "-"
        numa[key] = numa.get(key, 0) + 1
    spread = ", ".join(f"node {k}: {v}" for k, v in sorted(numa.items()))
    print(f"  {BOLD}{resource}{RESET}: {len(devices)} devices, {healthy} healthy (NUMA {spread})")
    ids = [d.ID for d in devices]
    shown = ", ".join(ids[:6]) + (f", ... (+{len(ids) - 6})" if len(ids) > 6 else "")
    print(f"    IDs: {shown}")


def _print_allocation(resource: str, ids: list[str], reply: Any) -> None:
    print(f"  {BOLD}{resource}{RESET} <- Allocate({', '.join(ids)})")
    for spec in reply.devices:
        print(f"    device  {spec.host_path} -> {spec.container_path} ({spec.permissions})")
    for mount in reply.mounts:
        mode = "ro" if mount.read_only else "rw"
        print(f"    mount   {mount.host_path} -> {mount.container_path} ({mode})")
    for key in sorted(reply.envs):
        print(f"    env     {_short(f'{key}={reply.envs[key]}')}")
    for key in sorted(reply.annotations):
        print(f"    annot.  {_short(f'{key}={reply.annotations[key]}')}")
    for cdi in reply.cdi_devices:
        print(f"    cdi     {cdi.name}")
    if not (reply.devices or reply.mounts or reply.envs or reply.annotations):
        print(f"    {DIM}(no container edits){RESET}")


async def _wait_ready(plugin: DemoPlugin, timeout: float = 40.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if plugin.process is not None and plugin.process.poll() is not None:
            return False
        status, _ = await asyncio.to_thread(_http_get, f"http://127.0.0.1:{plugin.port}/readyz")
        if status == 200:
            return True
        await asyncio.sleep(0.2)
    return False


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


async def _demo(once: bool, names: list[str], port_base: int | None) -> int:
    specs = {n: s for n, s in installed_plugins().items() if s.demo is not None}
    if names:
        missing = [n for n in names if n.replace("_", "-") not in specs]
        if missing:
            print(f"no demo for: {', '.join(missing)} (installed: {', '.join(specs) or 'none'})")
            return 2
        specs = {n: s for n, s in specs.items() if n in {m.replace("_", "-") for m in names}}
    if not specs:
        print("no installed plugin has a demo")
        return 1
    base = short_tempdir("devplugin-demo-")
    host = FakeHost(os.path.join(base, "host"))
    kubelet_dir = os.path.join(base, "kubelet", "device-plugins")
    pod_socket = os.path.join(base, "kubelet", "pod-resources", "kubelet.sock")
    plugins: list[DemoPlugin] = []
    print(f"{BOLD}devplugin demo{RESET}: simulated node under {base}")
    for index, (name, spec) in enumerate(specs.items()):
        assert spec.demo is not None
        document = spec.demo(host)
        config = None
        if document is not None:
            config = os.path.join(base, f"{name}.json")
            with open(config, "w") as fh:
                json.dump(document, fh, indent=2)
        preferred = (
            (port_base + index) if port_base else (None if once else spec.default_metrics_port)
        )
        plugins.append(
            DemoPlugin(spec, _free_port(preferred), config, os.path.join(base, f"{name}.log"))
        )
    kubelet = FakeKubelet(kubelet_dir)
    pods = FakePodResources(pod_socket)
    await kubelet.start()
    await pods.start()
    try:
        for plugin in plugins:
            cmd = [
                sys.executable,
                "-m",
                "devplugin_core",
                "run",
                plugin.spec.name,
                "--host-root",
                host.root.as_posix(),
                "--kubelet-dir",
                kubelet_dir,
                "--metrics-address",
                f"127.0.0.1:{plugin.port}",
                "--pod-resources-socket",
                pod_socket,
                "--pod-resources-interval",
                "1",
                "--log-level",
                "info",
            ]
            if plugin.config:
                cmd += ["--config-file", plugin.config]
            log = open(plugin.log, "wb")  # noqa: SIM115 - closed with the process
            plugin.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        ready = await asyncio.gather(*(_wait_ready(p) for p in plugins))
        failed = [p for p, ok in zip(plugins, ready, strict=True) if not ok]
        for p in failed:
            print(f"{RED}{p.spec.name} did not become ready; its log:{RESET}\n{_tail(p.log)}")
        if failed:
            return 1
        for resource in list(kubelet.connections):  # /readyz can beat the first device list
            await kubelet.wait_for_registration(resource)
        print(f"\n{BOLD}What the kubelet sees{RESET} (ListAndWatch, per resource)")
        for resource in sorted(kubelet.connections):
            _print_devices(resource, kubelet.devices(resource))
        print(f"\n{BOLD}One allocation per resource{RESET} (GetPreferredAllocation, then Allocate)")
        for n, resource in enumerate(sorted(kubelet.connections)):
            healthy = [d.ID for d in kubelet.devices(resource) if d.health == "Healthy"]
            if not healthy:
                print(f"  {resource}: no healthy device to allocate")
                continue
            conn = kubelet.connections[resource]
            size = 2 if len(healthy) >= 2 and conn.options.get_preferred_allocation_available else 1
            ids = await kubelet.preferred(resource, healthy, [], size) or healthy[:size]
            reply = await kubelet.allocate(resource, ids)
            _print_allocation(resource, ids, reply)
            pods.assignments.append(
                PodAssignment("demo", f"workload-{n}", "main", resource, tuple(ids))
            )
        print(f"\n{BOLD}Metrics{RESET} (Prometheus text format; pod attribution from PodResources)")
        for plugin in plugins:
            url = f"http://127.0.0.1:{plugin.port}/metrics"
            text = ""
            for _ in range(40):
                _, text = await asyncio.to_thread(_http_get, url)
                if "devplugin_device_allocation_info{" in text:
                    break
                await asyncio.sleep(0.25)
            samples = [ln for ln in text.splitlines() if ln.startswith("devplugin_")]
            framework = [ln for ln in samples if ln.startswith(_FRAMEWORK_SHOWN)]
            own = [ln for ln in samples if not ln.startswith(_FRAMEWORK_ALL)]
            print(f"  {plugin.spec.name}: {GREEN}{url}{RESET}")
            for line in framework[:8] + own[:5]:
                print(f"    {_short(line)}")
            hidden = len(samples) - len(framework[:8]) - len(own[:5])
            print(f"    {DIM}... {hidden} more samples{RESET}")
        if once:
            return 0
        print(f"\nPlugins keep running; logs in {base}/*.log. Press Ctrl-C to stop.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        for plugin in plugins:
            if plugin.process is not None and plugin.process.poll() is None:
                plugin.process.send_signal(signal.SIGTERM)
        for plugin in plugins:
            if plugin.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(plugin.process.wait, 10)
                if plugin.process.poll() is None:
                    plugin.process.kill()
        await kubelet.stop()
        await pods.stop()
        shutil.rmtree(base, ignore_errors=True)


def run_demo(
    once: bool = False, plugins: list[str] | None = None, metrics_port_base: int | None = None
) -> int:
    """Run the demo; returns the process exit code."""
    try:
        return asyncio.run(_demo(once, plugins or [], metrics_port_base))
    except KeyboardInterrupt:
        return 0
