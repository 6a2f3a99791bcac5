"""The devplugin CLI: exit codes, env fallbacks, discover/validate output, SIGTERM cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devplugin_core import _plugins as plugins
from devplugin_core import cli
from devplugin_core.testing import write_config

from .gadget import SPEC, add_gadgets, config

ROOT = Path(__file__).resolve().parents[2]
RES = "example.com/gadget"


@pytest.fixture
def gadget_installed(monkeypatch):
    monkeypatch.setattr(plugins, "installed_plugins", lambda: {"gadget": SPEC})


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert "devplugin 0.2.0 (device plugin API v1beta1" in capsys.readouterr().out


def test_list(gadget_installed, capsys):
    assert cli.main(["list"]) == 0
    assert "gadget  test plugin" in capsys.readouterr().out


def test_unknown_plugin(gadget_installed, capsys):
    assert cli.main(["run", "nope"]) == 2
    assert "installed: gadget" in capsys.readouterr().err


def test_validate_ok_and_invalid(gadget_installed, tmp_path, capsys):
    good = write_config(tmp_path / "good.json", {**config(RES), "surprise": 1})
    assert cli.main(["validate", "gadget", "--config-file", good]) == 0
    out = capsys.readouterr()
    assert f"valid: {good}: 1 resources: {RES}" in out.out
    assert "warning: surprise: unknown key, ignored" in out.err
    bad = write_config(tmp_path / "bad.json", {"resources": [{"name": "UPPER.case/x"}]})
    assert cli.main(["validate", "gadget", "--config-file", bad]) == 2
    err = capsys.readouterr().err
    assert f"invalid: {bad}: resource name: invalid extended resource name" in err
    assert "'UPPER.case/x'" in err


def test_env_fallback_and_flag_precedence(gadget_installed, tmp_path, capsys, monkeypatch):
    good = write_config(tmp_path / "good.json", config(RES))
    monkeypatch.setenv("DEVPLUGIN_CONFIG_FILE", good)
    assert cli.main(["validate", "gadget"]) == 0
    assert str(good) in capsys.readouterr().out
    other = write_config(tmp_path / "other.json", config("example.com/other"))
    assert cli.main(["validate", "gadget", "--config-file", other]) == 0
    assert "example.com/other" in capsys.readouterr().out
    monkeypatch.setenv("DEVPLUGIN_REGISTRATION_MODE", "sideways")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["validate", "gadget"])
    assert exit_.value.code == 2


def test_discover_explains(gadget_installed, fake_host, tmp_path, capsys):
    add_gadgets(fake_host, 2)
    fake_host.add_pci("0000:01:00.0", vendor="8086", device="1593", driver="ice")
    cfg = write_config(tmp_path / "c.json", config(RES))
    args = ["discover", "gadget", "--config-file", cfg, "--host-root", str(fake_host.root)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"{RES}: 2 devices (2 healthy)" in out
    assert "0000:5e:00.0     Healthy   numa=0   driver=gadget" in out
    assert f"0000:01:00.0 [{RES}]: vendor 8086 is not abcd" in out
    assert cli.main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resources"][0]["devices"][1] == {
        "id": "0000:5e:00.1",
        "health": "Healthy",
        "numa": [1],
        "attributes": {"driver": "gadget"},
    }
    assert report["not_advertised"] == [
        {"device": "0000:01:00.0", "resource": RES, "reason": "vendor 8086 is not abcd"}
    ]


def _spawn(
    *args: str, env: dict[str, str] | None = None, cwd: str | Path = ROOT
) -> subprocess.Popen[str]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.core.run_gadget", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": pythonpath, **(env or {})},
    )


async def test_run_config_error_exits_2(fake_host, tmp_path):
    cfg = write_config(tmp_path / "c.json", {"resources": [{"name": 5}]})
    proc = _spawn(
        "run",
        "gadget",
        "--config-file",
        cfg,
        "--host-root",
        str(fake_host.root),
        "--metrics-address",
        "",
    )
    _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 2
    assert "resources[0].name: must be a string, not a integer (got 5)" in err


async def test_run_serves_then_leaves_cleanly_on_sigterm(fake_host, fake_kubelet, tmp_path):
    add_gadgets(fake_host, 2)
    cfg = write_config(tmp_path / "c.json", config(RES))
    proc = _spawn(
        "run",
        "gadget",
        "--config-file",
        cfg,
        "--host-root",
        str(fake_host.root),
        "--metrics-address",
        "",
        "--log-format",
        "json",
        env={"DEVPLUGIN_KUBELET_DIR": fake_kubelet.directory},
    )
    try:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2, timeout=30)
        assert len(os.listdir(fake_kubelet.directory)) == 2
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert os.listdir(fake_kubelet.directory) == ["kubelet.sock"]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    assert any(m.startswith("effective config: ") for m in messages)
    assert "received SIGTERM, shutting down" in messages


def test_run_help_without_a_plugin_lists_the_framework_flags(capsys):
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--kubelet-dir", "--registration-mode", "--pod-resources-socket", "--cdi-dir"):
        assert flag in out


def test_relative_path_flags_are_resolved_against_the_working_directory(
    gadget_installed, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVPLUGIN_CDI_DIR", "cdi")
    args = cli._plugin_parser("run", SPEC).parse_args(
        [
            "--kubelet-dir",
            "kubelet/device-plugins",
            "--pod-resources-socket",
            "pr/kubelet.sock",
            "--config-file",
            "c.json",
            "--host-root",
            ".",
            "--metrics-tls-cert",
            "",
        ]
    )
    cli._resolve_paths(args, SPEC)
    assert args.kubelet_dir == str(tmp_path / "kubelet/device-plugins")
    assert args.pod_resources_socket == str(tmp_path / "pr/kubelet.sock")
    assert args.config_file == str(tmp_path / "c.json")
    assert args.host_root == str(tmp_path)
    assert args.cdi_dir == str(tmp_path / "cdi")
    assert args.metrics_tls_cert == ""  # "" stays: it means off
    # watcher mode's directory sits beside --kubelet-dir unless given
    assert args.plugins_registry_dir == str(tmp_path / "kubelet/plugins_registry")
    defaults = cli._plugin_parser("run", SPEC).parse_args([])
    cli._resolve_paths(defaults, SPEC)
    assert defaults.plugins_registry_dir == "/var/lib/kubelet/plugins_registry"


async def test_run_with_a_relative_kubelet_dir_registers(fake_host, fake_kubelet, tmp_path):
    add_gadgets(fake_host, 1)
    cfg = write_config(tmp_path / "c.json", config(RES))
    base = os.path.dirname(fake_kubelet.directory)
    proc = _spawn(
        "run",
        "gadget",
        "--config-file",
        cfg,
        "--host-root",
        str(fake_host.root),
        "--metrics-address",
        "",
        "--kubelet-dir",
        os.path.basename(fake_kubelet.directory),
        "--pod-resources-socket",
        "",
        cwd=base,
    )
    try:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1, timeout=30)
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
