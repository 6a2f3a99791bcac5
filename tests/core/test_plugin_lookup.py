"""``devplugin run NAME`` finds the plugin without importing importlib.metadata (start-up time,
issue 14); the quick lookup must find what importlib.metadata finds."""

from __future__ import annotations

import sys
from importlib import metadata

from devplugin_core._plugins import ENTRY_POINT_GROUP, _quick_entry_point, normalise_name


def test_the_quick_lookup_finds_what_importlib_metadata_finds() -> None:
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(normalise_name(ep.name), ep.value)
    assert {"rdma-shared", "sriov-net", "rebel-npu"} <= set(found)
    for name, value in found.items():
        assert _quick_entry_point(name) == value
    assert _quick_entry_point("no-such-plugin") is None


def test_the_first_distribution_on_sys_path_wins(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    dist = tmp_path / "acme_widget-1.0.dist-info"
    dist.mkdir()
    (dist / "entry_points.txt").write_text(
        "[console_scripts]\nrebel-npu = elsewhere:main\n\n"
        "[devplugin.plugins]\nrebel_npu = acme_widget:SPEC [extra]\n"
    )
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert _quick_entry_point("rebel-npu") == "acme_widget:SPEC"
