"""The devplugin testing kit: fake hosts, a fake kubelet, a fake PodResources API.

Vendors test their plugins the way we test ours::

    from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

    async def test_widget(tmp_path, kubelet_dir):
        host = FakeHost(tmp_path / "host")
        host.add_pci("0000:3b:00.0", vendor="abcd", device="0001", class_code=0x120000,
                     driver="widget", numa_node=0)
        host.add_dev("/dev/widget0")
        async with FakeKubelet(kubelet_dir) as kubelet, run_plugin(SPEC, host, kubelet):
            devices = await kubelet.wait_for_devices("acme.com/widget", lambda d: len(d) == 1)
            response = await kubelet.allocate("acme.com/widget", [devices[0].ID])

The pytest plugin (installed with the package) provides the ``fake_host``, ``kubelet_dir`` and
``fake_kubelet`` fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from .._api import Plugin, PluginSpec, Scan
from .._hostfs import HostFS
from .._model import Health
from .._runtime import PluginRuntime, RuntimeOptions
from .._store import Snapshot
from .fakehost import FakeHost, FakePci
from .fakekubelet import FakeKubelet, PluginConnection, Registration
from .fakepodresources import FakePodResources, PodAssignment

__all__ = [
    "FakeHost",
    "FakeKubelet",
    "FakePci",
    "FakePodResources",
    "PluginConnection",
    "PodAssignment",
    "Registration",
    "run_plugin",
    "scan_once",
    "short_tempdir",
    "snapshots_of",
    "write_config",
]


def scan_once(plugin: Plugin, host: FakeHost | HostFS) -> Scan:
    """One pass of ``plugin``'s scanner over ``host``, as the framework runs it (no kubelet):
    ``scan.tree`` holds every resource's devices, ``scan.rejections`` the reasons."""
    scan = Scan(host.host if isinstance(host, FakeHost) else host, plugin.resources)
    plugin.scanner.scan(scan)
    return scan


def snapshots_of(scan: Scan) -> dict[str, Snapshot]:
    """What a metrics collector is handed after ``scan`` (every device healthy as scanned)."""
    out = {}
    for name, (_, devices) in scan.tree.items():
        health = {d.id: Health.HEALTHY if d.healthy else Health.UNHEALTHY for d in devices}
        out[name] = Snapshot(1, tuple(devices), health)
    return out


def short_tempdir(prefix: str = "dp-") -> str:
    """A fresh directory under /tmp: unix socket paths must stay under ~107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def write_config(path: str | os.PathLike[str], document: Mapping[str, Any] | str) -> str:
    """Write a config document (JSON) to ``path`` atomically; returns the path."""
    path = os.fspath(path)
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    tmp = f"{path}.tmp"
    Path(tmp).write_text(text)
    os.replace(tmp, path)
    return path


@contextlib.asynccontextmanager
async def run_plugin(
    spec: PluginSpec[Any],
    host: FakeHost | str,
    kubelet: FakeKubelet | str,
    *,
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    registry: CollectorRegistry | None = None,
    **options: Any,
) -> AsyncIterator[PluginRuntime[Any]]:
    """Run ``spec`` in-process against a fake host and kubelet until the block exits.

    ``config`` may be a document (written next to the kubelet dir) or a path. Other keyword
    arguments set :class:`~devplugin_core.RuntimeOptions` fields; by default metrics HTTP,
    signal handling and the PodResources poller are off.
    """
    root = host.root if isinstance(host, FakeHost) else Path(host)
    kubelet_dir = kubelet.directory if isinstance(kubelet, FakeKubelet) else kubelet
    config_file: str | None = None
    if isinstance(config, Mapping):
        config_file = write_config(
            os.path.join(os.path.dirname(kubelet_dir), "config.json"), config
        )
    elif config is not None:
        config_file = os.fspath(config)
    defaults: dict[str, Any] = {
        "kubelet_dir": kubelet_dir,
        "host_root": str(root),
        "config_file": config_file,
        "metrics_address": "",
        "handle_signals": False,
        "pod_resources_socket": None,
    }
    if isinstance(kubelet, FakeKubelet):
        defaults["registry_dir"] = kubelet.registry_dir
        defaults["registration_mode"] = kubelet.mode
    defaults.update(options)
    runtime = PluginRuntime(spec, RuntimeOptions(**defaults), registry=registry)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
