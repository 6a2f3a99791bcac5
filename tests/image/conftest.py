"""The image under test: built once per session from this tree with ``scripts/image.sh build``
(what ``make image`` runs; podman's layer cache outside the clone makes a rebuild of an
unchanged tree take seconds).

The tests skip, saying why, only when this machine cannot run podman at all (not installed, not
root, or ``scripts/image.sh check`` failing to start a plain container from the base image); a
build that fails, a container that does not do its job, fails them. ``DEVPLUGIN_IMAGE_SKIP_BUILD=1``
tests the image that is already there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "image.sh"


@dataclass(frozen=True)
class Image:
    name: str
    build_log: str

    def podman(
        self, args: Sequence[str], *, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = podman(args, timeout=timeout)
        if check:
            assert result.returncode == 0, (
                f"podman {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def run(
        self, args: Sequence[str], *, entrypoint: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """A locked-down one-shot container of the image (no network, read-only, no caps)."""
        flags = ["run", "--rm", "--pull=never", "--ulimit", "host", "--network", "none"]
        flags += ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        if entrypoint is not None:
            flags += ["--entrypoint", entrypoint]
        return self.podman([*flags, self.name, *args], timeout=timeout)


def podman_command(args: Sequence[str]) -> list[str]:
    return ["bash", str(SCRIPT), "podman", *args]


def podman(args: Sequence[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        podman_command(args), capture_output=True, text=True, timeout=timeout, check=False
    )


def _unusable_reason() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (Debian: apt-get install podman buildah runc mmdebstrap)"
    if os.geteuid() != 0:
        return "not root: scripts/image.sh builds and runs rootful podman containers"
    check = subprocess.run(
        ["bash", str(SCRIPT), "check"], capture_output=True, text=True, timeout=600, check=False
    )
    if check.returncode == 3:  # a missing tool (mmdebstrap) or no apt sources: said on stderr
        return check.stderr.strip().splitlines()[-1]
    if check.returncode != 0:
        return (
            "podman cannot start even a plain container from the base image on this machine:\n"
            + (check.stderr or check.stdout).strip()[-2000:]
        )
    return None


@pytest.fixture(scope="session")
def image() -> Image:
    reason = _unusable_reason()
    if reason is not None:
        pytest.skip(f"no container runtime here: {reason}")
    name = subprocess.run(
        ["bash", str(SCRIPT), "image-name"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if os.environ.get("DEVPLUGIN_IMAGE_SKIP_BUILD") == "1":
        return Image(name, "")
    env = dict(os.environ, PYTHON=os.environ.get("DEVPLUGIN_IMAGE_BUILD_PYTHON", "python3"))
    if shutil.which(env["PYTHON"]) is None:
        env["PYTHON"] = sys.executable
    build = subprocess.run(
        ["bash", str(SCRIPT), "build"],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
        check=False,
    )
    assert build.returncode == 0, f"make image failed:\n{build.stdout}\n{build.stderr[-6000:]}"
    return Image(name, build.stdout + build.stderr)
