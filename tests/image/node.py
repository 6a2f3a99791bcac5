"""A fake node for the image: the plugin's demo host as the node's ``/``, a fake kubelet and
PodResources server on this machine, and the rendered DaemonSet's container run with podman.

Layout under one short temp directory (unix socket paths must stay under ~107 bytes)::

    n/                      the node's "/" (FakeHost root, filled by the plugin's demo hook)
      sys/ dev/ usr/bin/    what hostPath /sys, /dev, /usr/bin mount
      var/run -> ../run     as on Debian nodes
      var/lib/kubelet/device-plugins/kubelet.sock   FakeKubelet, outside the container
      var/lib/kubelet/pod-resources/kubelet.sock    FakePodResources
    s/                      ConfigMap volumes, emptyDirs, the fake rbln-smi's "kernel" side

The container sees the node only through the manifest's mounts, so the plugin runs in real
mode: the FakeHost marker file at the node root is not mounted, and the demo's stand-in device
files under /dev are made real character devices first (``mknod``, as root).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devplugin_core.testing import FakeHost

from .conftest import Image, podman, podman_command
from .podrun import PodmanRun

#: What the fake rbln-smi needs in the container beyond the manifest: its state and the writable
#: view of /dev that stands in for the NPU kernel driver creating /dev/rsdK (rbln-smi itself
#: asks the driver through the device nodes of the privileged container; the plugin only ever
#: reads /host/dev). Mounted for the fake tool only, at a path the plugin never uses.
FAKE_KERNEL = "/fake-kernel"

_SMI_SHIM = f"""\
import os, runpy, stat, sys
DEV = "{FAKE_KERNEL}/dev"
sys.argv = ["rbln-smi", "--state", "{FAKE_KERNEL}/state.json", *sys.argv[1:]]
try:
    runpy.run_path("{FAKE_KERNEL}/fakesmi.py", run_name="__main__")
finally:
    # the "driver": group device nodes are character devices
    for name in os.listdir(DEV):
        path = os.path.join(DEV, name)
        if name.startswith("rsd") and stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
"""

_HTTP_GET = """\
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
except OSError as e:
    print(json.dumps([0, str(e)]))
"""


def make_char_devices(directory: Path) -> int:
    """Replace every regular file under ``directory`` by a character device (1:3, like
    /dev/null); returns how many."""
    count = 0
    for dirpath, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
                count += 1
    return count


def to_node_paths(document: Any, root: Path) -> Any:
    """The demo's config names files of the fake host by their path on this machine; in the
    container they are the node's paths."""
    prefix = str(root)
    if isinstance(document, dict):
        return {k: to_node_paths(v, root) for k, v in document.items()}
    if isinstance(document, list):
        return [to_node_paths(v, root) for v in document]
    if isinstance(document, str) and document.startswith(prefix + "/"):
        return document[len(prefix) :]
    return document


def install_container_smi(host: FakeHost, scratch: Path) -> Path:
    """Point the demo's fake rbln-smi (host ``/usr/bin/rbln-smi``) at the image's python3 and a
    state directory mounted at :data:`FAKE_KERNEL`; returns that directory."""
    import devplugin_plugins.rebel_npu.fakesmi as fakesmi

    kernel = scratch / "kernel"
    kernel.mkdir()
    launcher = host.path("/usr/bin/rbln-smi")
    state_file = launcher.parent / f".{launcher.name}-state.json"
    state = json.loads(state_file.read_text())
    state["dev_dir"] = f"{FAKE_KERNEL}/dev"
    (kernel / "state.json").write_text(json.dumps(state, indent=1))
    state_file.unlink()
    shutil.copy(fakesmi.__file__, kernel / "fakesmi.py")
    (kernel / "smi.py").write_text(_SMI_SHIM)
    launcher.write_text(f'#!/bin/sh\nexec /usr/bin/python3 -S -E {FAKE_KERNEL}/smi.py "$@"\n')
    launcher.chmod(0o755)
    return kernel


@dataclass
class Container:
    """One running ``podman run`` of the DaemonSet's container."""

    image: Image
    run: PodmanRun
    name: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, image: Image, run: PodmanRun, scratch: Path, extra: list[str]) -> Container:
        name = f"devplugin-test-{uuid.uuid4().hex[:10]}"
        container = cls(image, run, name, scratch / f"{name}.log", extra)
        args = ["run", "--rm", "--pull=never", "--ulimit", "host", "--name", name]
        args += [*run.args, *extra, image.name, *run.image_args]
        with open(container.log_path, "wb") as log:
            container.process = subprocess.Popen(
                podman_command(args),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return container

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def exited(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def pid(self) -> int | None:
        result = podman(["inspect", "--format", "{{.State.Pid}}", self.name], timeout=30)
        try:
            pid = int(result.stdout.strip())
        except ValueError:
            return None
        return pid or None

    def http_get(self, address: str, port: int, path: str) -> tuple[int, str]:
        """GET from the pod's network: the node's for hostNetwork, else the container's own
        namespace, entered from this machine as the kubelet's probes reach a pod IP."""
        url = f"http://{address}:{port}{path}"
        command = [sys.executable, "-c", _HTTP_GET, url]
        if not self.run.host_network:
            pid = self.pid()
            if pid is None:
                return 0, "container not running"
            command = ["nsenter", f"--net=/proc/{pid}/ns/net", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            return 0, result.stderr
        status, body = json.loads(result.stdout)
        return int(status), str(body)

    async def wait_http(self, address: str, port: int, path: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise AssertionError(f"container exited with {code}:\n{self.log()[-4000:]}")
            last = await asyncio.to_thread(self.http_get, address, port, path)
            if last[0] == 200:
                return last[1]
            await asyncio.sleep(0.3)
        raise AssertionError(
            f"{path} on {address}:{port} never answered 200 (last: {last[0]} {last[1][:300]})\n"
            f"{self.log()[-4000:]}"
        )

    def terminate(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM to the container's process, as the kubelet's runtime sends it; returns the
        exit code (None if it did not exit within ``timeout``) and the seconds it took."""
        assert self.process is not None
        start = time.monotonic()
        podman(["kill", "--signal", "TERM", self.name], timeout=30)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - start
        return code, time.monotonic() - start

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            podman(["rm", "--force", "--time", "0", self.name], timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)


def metric(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text format (None when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if labels and any(found.get(k) != v for k, v in labels.items()):
            continue
        return float(match[3])
    return None


@contextlib.contextmanager
def cleanup(path: str) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)
