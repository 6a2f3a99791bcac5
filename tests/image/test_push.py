"""``make image-push REGISTRY=...`` pushes the built image: tried against a real registry on
this machine (Debian's ``docker-registry``, the CNCF distribution registry, on a loopback port,
plain HTTP), then the registry's own API lists the tag. Skips, saying why, when the registry
package is not installed (``.ci/run`` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, Image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_make_image_push_reaches_a_registry(image: Image, tmp_path: Path) -> None:
    registry = shutil.which("docker-registry")
    if registry is None:
        pytest.skip("docker-registry is not installed (Debian package 'docker-registry')")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        "log:\n  level: error\n"
    )
    server = subprocess.Popen(
        [registry, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the registry did not start"
                time.sleep(0.2)
        target = f"127.0.0.1:{port}/tests"
        env = dict(os.environ, DEVPLUGIN_PUSH_FLAGS="--tls-verify=false")
        push = subprocess.run(
            ["make", "-s", "image-push", f"REGISTRY={target}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert push.returncode == 0, push.stdout + push.stderr
        version = image.name.rsplit(":", 1)[1]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v2/tests/devplugin/tags/list", timeout=10
        ) as reply:
            tags = json.load(reply)["tags"]
        assert version in tags
    finally:
        server.terminate()
        server.wait(10)
        image.podman(
            ["rmi", "--ignore", f"127.0.0.1:{port}/tests/devplugin:{image.name.rsplit(':', 1)[1]}"],
            check=False,
        )
