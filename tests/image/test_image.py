"""The built image's hygiene, size budget and versions (deploy/README.md, "Image")."""

from __future__ import annotations

import re

import pytest
from deploy.manifests import DEPLOY, ROOT

from .conftest import Image

pytestmark = pytest.mark.timeout(900)


def project_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert match
    return match[1]


def budget_mb() -> tuple[int, int]:
    """(recorded size, budget) in MB from deploy/README.md's image size line."""
    text = (DEPLOY / "README.md").read_text()
    match = re.search(r"image size: \*\*(\d+) MB\*\*.*?budget \*\*(\d+) MB\*\*", text, re.S)
    assert match, "deploy/README.md must record the image size and its budget"
    return int(match[1]), int(match[2])


def test_devplugin_version_answers_inside(image: Image) -> None:
    result = image.run(["--version"])
    assert result.stdout.startswith(f"devplugin {project_version()} "), result.stdout
    assert "Python 3.11" in result.stdout


def test_the_version_label_and_tag_follow_pyproject(image: Image) -> None:
    assert image.name.endswith(f"/devplugin:{project_version()}")
    label = image.podman(
        [
            "image",
            "inspect",
            "--format",
            '{{index .Labels "org.opencontainers.image.version"}}',
            image.name,
        ]
    ).stdout.strip()
    assert label == project_version()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG VERSION={project_version()}" in dockerfile  # what `docker build` gets


def test_size_within_the_budget_recorded_in_deploy_readme(image: Image) -> None:
    size = int(image.podman(["image", "inspect", "--format", "{{.Size}}", image.name]).stdout)
    recorded, budget = budget_mb()
    assert recorded <= budget
    assert size <= budget * 1_000_000, (
        f"image is {size / 1e6:.0f} MB, over the {budget} MB budget in deploy/README.md"
    )


def test_no_compiler_pip_cache_or_apt_lists(image: Image) -> None:
    script = r"""
set -u
for tool in gcc cc c++ g++ clang make ld as cython; do
  command -v "$tool" && echo "compiler: $tool"
done
for d in /root/.cache /root/.cache/pip /tmp/pip* /var/cache/pip /mnt/wheels; do
  [ -e "$d" ] && echo "cache: $d"
done
find /var/lib/apt/lists -mindepth 1 -not -name lock -not -name partial | sed 's/^/apt list: /'
find /var/cache/apt -name '*.deb' -o -name '*.bin' | sed 's/^/apt cache: /'
/opt/devplugin/bin/python -c 'import pip' 2>/dev/null && echo "pip: importable in the venv"
/opt/devplugin/bin/python -c 'import setuptools' 2>/dev/null && echo "setuptools: in the venv"
ls /etc/pip.conf /mnt/* 2>/dev/null | sed 's/^/build leftover: /'
dpkg-query -W -f '${Package}\n' \
  | grep -E '^(gcc|g\+\+|cpp|clang)(-[0-9]+)?$|^(libc6-dev|python3(\.[0-9.]+)?-dev)$' \
  | sed 's/^/package: /'
dpkg-query -W -f '${Package}\n' | grep -E '^(python3-pip|build-essential)$' | sed 's/^/package: /'
true
"""
    result = image.run(["-c", script], entrypoint="sh")
    assert result.stdout.strip() == "", result.stdout


def test_pyverbs_and_the_plugins_import_in_the_venv(image: Image) -> None:
    result = image.run(["list"])
    for plugin in ("rdma-shared", "sriov-net", "rebel-npu"):
        assert plugin in result.stdout
    check = image.run(["-c", "import pyverbs, grpc; print('ok')"], entrypoint="python3")
    assert check.stdout.strip() == "ok"


def test_every_module_of_the_plugins_is_byte_compiled(image: Image) -> None:
    """A plugin's start reads bytecode and compiles nothing: the image sets
    PYTHONDONTWRITEBYTECODE (its root file system is read-only anyway), so a module pip did not
    compile at install would be compiled from source on every start (issue 14's start-up)."""
    script = r"""
import importlib.util, pathlib, devplugin_core, devplugin_plugins
sources = [
    source
    for package in (devplugin_core, devplugin_plugins)
    for source in sorted(pathlib.Path(package.__path__[0]).rglob("*.py"))
]
for source in sources:
    if not pathlib.Path(importlib.util.cache_from_source(str(source))).is_file():
        print("no bytecode:", source)
print("checked", len(sources))
"""
    result = image.run(["-c", script], entrypoint="python3")
    *missing, checked = result.stdout.strip().splitlines()
    assert not missing, missing
    assert checked.startswith("checked ") and int(checked.split()[1]) > 50, checked
