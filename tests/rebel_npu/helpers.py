"""Constants and small helpers shared by the rebel_npu tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devplugin_core import Device, DiscoveryPass, PluginContext, ResourceSet, decode
from devplugin_core.testing import FakeHost
from plugins.rebel_npu import RebelNpuConfig, build

ATOM = "rebellions.ai/ATOM"
REBEL = "rebellions.ai/REBEL"
CA22 = ["0000:13:00.0", "0000:14:00.0", "0000:23:00.0", "0000:24:00.0"]
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rebel_npu"


def config(lock_file: str, **extra: Any) -> dict[str, Any]:
    """A config document for tests: private lock file, quick rbln-smi limits."""
    doc: dict[str, Any] = {"rsdLockFile": lock_file, "rblnSmiTimeout": 3.0, "rsdTimeout": 5.0}
    doc.update(extra)
    return doc


def built(host: FakeHost, document: dict[str, Any] | None = None) -> ResourceSet:
    """The plugin's resources for ``document`` on ``host`` (no kubelet involved)."""
    cfg = decode(RebelNpuConfig, document or {}).value
    return build(cfg, PluginContext(host=host.host))


def discover(
    host: FakeHost, resources: ResourceSet
) -> tuple[dict[str, list[Device]], DiscoveryPass]:
    """One discovery pass: devices per resource and the pass (for its rejections)."""
    scan = DiscoveryPass(host.host)
    return {r.name: list(r.discoverer.discover(scan)) for r in resources.resources}, scan
