"""Constants and small helpers shared by the rebel_npu tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devplugin_plugins.rebel_npu import RebelNpuConfig, build
from devplugin_plugins.rebel_npu.discovery import NpuScanner

from devplugin_core import Device, Plugin, PluginContext, Resource, Scan
from devplugin_core.testing import FakeHost
from devplugin_core.toolkit import decode

ATOM = "rebellions.ai/ATOM"
REBEL = "rebellions.ai/REBEL"
CA22 = ["0000:13:00.0", "0000:14:00.0", "0000:23:00.0", "0000:24:00.0"]
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rebel_npu"


def config(lock_file: str, **extra: Any) -> dict[str, Any]:
    """A config document for tests: private lock file, quick rbln-smi limits."""
    doc: dict[str, Any] = {"rsdLockFile": lock_file, "rblnSmiTimeout": 3.0, "rsdTimeout": 5.0}
    doc.update(extra)
    return doc


def built(host: FakeHost, document: dict[str, Any] | None = None) -> Plugin:
    """The plugin built for ``document`` on ``host`` (no kubelet involved)."""
    cfg = decode(RebelNpuConfig, document or {}).value
    return build(cfg, PluginContext(host=host.host))


def scanner(plugin: Plugin) -> NpuScanner:
    assert isinstance(plugin.scanner, NpuScanner)
    return plugin.scanner


def resource(plugin: Plugin, name: str) -> Resource:
    """A pool's Resource, configured or not (zero-config families are served while present)."""
    return next(p.resource for p in scanner(plugin).pools if p.resource.name == name)


def discover(host: FakeHost, plugin: Plugin) -> tuple[dict[str, list[Device]], Scan]:
    """One scan: devices per resource it reports (configured pools always, zero-config families
    only with devices) and the scan (for its rejections)."""
    scan = Scan(host.host, plugin.resources)
    plugin.scanner.scan(scan)
    return {name: list(devices) for name, (_, devices) in scan.tree.items()}, scan
