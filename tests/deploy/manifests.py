"""Rendering deploy/ with the real kustomize (``kubectl kustomize``) and reading the result."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from .harness import OVERLAYS, PLUGINS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPONENTS = ("servicemonitor", "plugin-watcher", "cdi", "metrics-tls")
#: components of one plugin, applied on top of its rendered overlay (render_on_top)
PLUGIN_COMPONENTS = {"rebel-npu": ("rebel-npu-vm-passthrough",)}
#: metrics port of each plugin (PluginSpec.default_metrics_port)
PORTS = {"rdma-shared": 9461, "sriov-net": 9462, "rebel-npu": 9463}
MONITORING = "monitoring.coreos.com/v1"
HOST_ROOT = "/host"

Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not installed: cannot render deploy/ with kustomize (needs 1.27+)")
    return path


def kustomize(directory: Path) -> list[Doc]:
    """``kubectl kustomize <directory>`` (offline), parsed."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kustomize {directory} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@cache
def _render(overlay: str) -> tuple[Doc, ...]:
    return tuple(kustomize(DEPLOY / overlay))


def render(overlay: str) -> tuple[Doc, ...]:
    """The rendered overlay (rendered once per test session; callers get their own copy)."""
    return copy.deepcopy(_render(overlay))


def render_with_components(tmp: Path, overlay: str, components: Sequence[str]) -> list[Doc]:
    """Render ``overlay`` with ``components`` enabled, as a user enabling them would."""
    copy = tmp / "deploy"
    if not copy.exists():
        shutil.copytree(DEPLOY, copy)
    variant = copy / f"{overlay}-{'-'.join(components)}"
    shutil.copytree(copy / overlay, variant)
    kustomization = variant / "kustomization.yaml"
    text = kustomization.read_text()
    text += "components:\n" + "".join(f"  - ../components/{c}\n" for c in components)
    kustomization.write_text(text)
    return kustomize(variant)


def render_on_top(
    tmp: Path, overlay: str, components: Sequence[str], inside: Sequence[str] = ()
) -> list[Doc]:
    """Render a kustomization of the user's own that takes ``overlay`` (with the generic
    ``inside`` components enabled in it) as a resource and adds ``components`` on top."""
    copy = tmp / "deploy"
    if not copy.exists():
        shutil.copytree(DEPLOY, copy)
    base = overlay
    if inside:
        base = f"{overlay}-{'-'.join(inside)}"
        shutil.copytree(copy / overlay, copy / base)
        kustomization = copy / base / "kustomization.yaml"
        text = kustomization.read_text()
        text += "components:\n" + "".join(f"  - ../components/{c}\n" for c in inside)
        kustomization.write_text(text)
    user = tmp / f"user-{base}-{'-'.join(components)}"
    user.mkdir()
    (user / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - ../deploy/{base}\n"
        "components:\n" + "".join(f"  - ../deploy/components/{c}\n" for c in components)
    )
    return kustomize(user)


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: Iterable[Doc], kind: str) -> Doc:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(daemonset: Doc) -> Doc:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "devplugin")


def env_map(c: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in c.get("env", [])}


def plugin_of(overlay: str) -> str:
    return {v: k for k, v in OVERLAYS.items()}[overlay]


@cache
def run_flags(plugin: str) -> frozenset[str]:
    """Every flag ``devplugin run <plugin>`` accepts, from its --help."""
    result = subprocess.run(
        [sys.executable, "-m", "devplugin_core", "run", plugin, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return frozenset(re.findall(r"\[(--[a-z0-9-]+)", result.stdout))


def env_flag(name: str) -> str:
    """DEVPLUGIN_CONFIG_FILE -> --config-file."""
    return "--" + name.removeprefix("DEVPLUGIN_").lower().replace("_", "-")


__all__ = [
    "COMPONENTS",
    "DEPLOY",
    "HOST_ROOT",
    "MONITORING",
    "OVERLAYS",
    "PLUGINS",
    "PLUGIN_COMPONENTS",
    "PORTS",
    "ROOT",
    "container",
    "env_flag",
    "env_map",
    "kustomize",
    "of_kind",
    "one",
    "plugin_of",
    "render",
    "render_on_top",
    "render_with_components",
    "run_flags",
]
