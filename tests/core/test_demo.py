"""`devplugin demo --once` runs every installed plugin end to end and exits 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_once_shows_every_plugin():
    proc = subprocess.run(
        [sys.executable, "-m", "devplugin_core", "demo", "--once"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "What the kubelet sees" in out and "One allocation per resource" in out
    for plugin in ("rdma-shared", "sriov-net", "rebel-npu"):
        assert f"  {plugin}: " in out, f"{plugin} missing from the demo"
    assert "devplugin_device_allocation_info{" in out
    assert "/usr/bin/rbln-stat" in out
