"""docs/framework.md §4 walks a vendor from nothing to a tested plugin: run its code as written.

The files are cut out of the page (``<!-- walkthrough: NAME -->`` before a python block),
written to a fresh directory outside this repository and tested there in pytest-asyncio's
*strict* mode, the way a vendor's own project would run them; then ``devplugin discover``
loads the plugin straight from its file path.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from devplugin_core.testing import FakeHost

DOC = Path(__file__).resolve().parents[2] / "docs" / "framework.md"
BLOCK = re.compile(r"<!-- walkthrough: (\S+) -->\n```python\n(.*?)```", re.S)


def _files() -> dict[str, str]:
    found = dict(BLOCK.findall(DOC.read_text()))
    assert set(found) == {"acme_plugin.py", "test_acme_plugin.py"}, sorted(found)
    return found


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    project = tmp_path / "acme"
    project.mkdir()
    for name, text in _files().items():
        (project / name).write_text(text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=strict",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout

    host = FakeHost(tmp_path / "host")
    host.add_pci("0000:3b:00.0", vendor="abcd", device="0001", class_code=0x12, driver="widget")
    host.write("/sys/bus/pci/devices/0000:3b:00.0/widget_id", "0\n")
    host.add_dev("/dev/widget0")
    host.add_pci("0000:3b:00.1", vendor="abcd", device="0001", class_code=0x12, driver="vfio-pci")
    host.write("/lib/firmware/acme/widget.bin", "firmware")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "devplugin_core",
            "discover",
            "./acme_plugin.py",
            "--host-root",
            str(host.root),
            "--json",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    (resource,) = report["resources"]
    assert resource["name"] == "acme.com/widget"
    assert [d["id"] for d in resource["devices"]] == ["0000:3b:00.0"]
    assert report["not_advertised"] == [
        {"device": "0000:3b:00.1", "resource": "acme.com/widget", "reason": "bound to vfio-pci"}
    ]
