"""rbln-smi JSON in base units, the polled cache, and the devplugin_npu_* metrics."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from devplugin_plugins.rebel_npu import SPEC
from devplugin_plugins.rebel_npu.smi import (
    RblnSmi,
    SmiError,
    SmiMonitor,
    byte_count,
    celsius,
    parse_report,
    ratio,
    watts,
)
from devplugin_plugins.rebel_npu.testing import FakeSmi, install_fake_smi
from devplugin_plugins.rebel_npu.tools import run_bounded
from prometheus_client import CollectorRegistry

from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, CA22, FIXTURES, config

CANNED = json.loads((FIXTURES / "rbln-smi-j.json").read_text())


def test_units() -> None:
    assert celsius("41C") == 41 and celsius(52) == 52 and celsius("40.5 °C") == 40.5
    assert celsius("N/A") is None and celsius(True) is None and celsius("41F") is None
    assert watts("35500000uW") == pytest.approx(35.5)
    assert watts("18000mW") == pytest.approx(18) and watts("47.5W") == 47.5 and watts(30) == 30
    assert watts("1 horsepower") is None
    assert byte_count("17179869184") == 16 * 1024**3
    assert byte_count("3.5GiB") == 3.5 * 1024**3 and byte_count("72.0MiB") == 72 * 1024**2
    assert byte_count("-1") is None
    assert ratio("25.0") == 0.25 and ratio("12.5%") == 0.125 and ratio("250") == 1.0
    assert ratio(float("nan")) is None


def test_parse_canned_report() -> None:
    report = parse_report(json.dumps(CANNED))
    assert report.kmd_version == "1.3.73"
    assert [d.bus_id for d in report.devices] == CA22
    third = report.by_bus[CA22[2]]
    assert third.npu == 2 and third.name == "rbln2" and third.card == "RBLN-CA22"
    assert third.temperature == 52 and third.power == 47.5 and third.utilization == 0.125
    assert report.by_bus[CA22[3]].temperature is None


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"devices": 3}', "{" * 100000])
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(SmiError):
        parse_report(text)


def test_parse_skips_bad_entries() -> None:
    report = parse_report(
        json.dumps(
            {
                "devices": [
                    {"pci": {"bus_id": "../../etc"}},
                    {"pci": "x"},
                    7,
                    {"npu": -1, "pci": {"bus_id": "0000:0A:00.0"}, "memory": "lots"},
                ]
            }
        )
    )
    assert [(d.bus_id, d.npu, d.memory_used) for d in report.devices] == [
        ("0000:0a:00.0", None, None)
    ]


def test_run_bounded_kills_the_process_group(tmp_path: Path) -> None:
    script = tmp_path / "slow.sh"
    script.write_text("#!/bin/sh\nsleep 30 &\nsleep 30\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    start = time.monotonic()
    result = run_bounded([str(script)], 0.3)
    assert result.timed_out and not result.ok and "timed out" in result.describe()
    assert time.monotonic() - start < 10  # generous: only proves nobody waited for sleep 30
    fail = run_bounded(["/bin/sh", "-c", "echo oops >&2; exit 3"], 5)
    assert fail.returncode == 3 and fail.describe().endswith("exited with 3: oops")


def test_smi_reports_why_it_cannot_run(tmp_path: Path) -> None:
    assert "does not exist" in (RblnSmi(str(tmp_path / "none"), 1).probe() or "")
    plain = tmp_path / "rbln-smi"
    plain.write_text("x")
    assert "not executable" in (RblnSmi(str(plain), 1).probe() or "")


def test_monitor_rate_limits_and_expires(fake_host: FakeHost) -> None:
    smi = install_fake_smi(fake_host, devices=CANNED["devices"])
    now = [100.0]
    monitor = SmiMonitor(RblnSmi(smi.executable, 3), 10, clock=lambda: now[0])
    assert monitor.refresh() and monitor.fresh() is not None
    now[0] += 5
    assert not monitor.refresh()  # polled 5 s ago
    assert len(smi.calls()) == 1
    now[0] += 6
    assert monitor.refresh()
    now[0] += 40  # three intervals plus the timeout have passed: too old to act on
    assert monitor.fresh() is None and monitor.report is not None


async def test_metrics_from_canned_output(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    smi: FakeSmi = install_fake_smi(ca22, devices=CANNED["devices"])
    registry = CollectorRegistry()
    async with run_plugin(
        SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="off"), registry=registry
    ) as runtime:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        health = runtime.resources[ATOM].resource.health
        assert health is not None
        health.monitor.refresh(force=True)  # type: ignore[attr-defined]

        def value(name: str, device: str) -> float | None:
            npu = f"rbln{CA22.index(device)}"
            return registry.get_sample_value(
                name, {"resource": ATOM, "device": device, "npu": npu, "card": "RBLN-CA22"}
            )

        first = CA22[0]
        assert value("devplugin_npu_temperature_celsius", first) == 41
        assert value("devplugin_npu_power_watts", first) == pytest.approx(35.5)
        assert value("devplugin_npu_memory_used_bytes", first) == 1024**3
        assert value("devplugin_npu_memory_total_bytes", first) == 16 * 1024**3
        assert value("devplugin_npu_utilization_ratio", first) == 0.25
        assert value("devplugin_npu_healthy", first) == 1
        assert value("devplugin_npu_power_watts", CA22[2]) == 47.5
        assert value("devplugin_npu_memory_used_bytes", CA22[2]) == 3.5 * 1024**3
        assert value("devplugin_npu_power_watts", CA22[3]) == pytest.approx(18)
        assert value("devplugin_npu_utilization_ratio", CA22[3]) == 1.0
        assert value("devplugin_npu_temperature_celsius", CA22[3]) is None  # "N/A"
        info = registry.get_sample_value(
            "devplugin_npu_info",
            {
                "resource": ATOM,
                "device": first,
                "npu": "rbln0",
                "card": "RBLN-CA22",
                "uuid": CANNED["devices"][0]["uuid"],
                "firmware_version": "1.3.73",
                "driver_version": "1.3.73",
            },
        )
        assert info == 1
        assert (
            registry.get_sample_value("devplugin_npu_rbln_smi_polls_total", {"result": "ok"}) or 0
        ) >= 1
        ca22.remove("/dev/rbln1")
        await fake_kubelet.wait_for_devices(
            ATOM, lambda d: any((x.ID, x.health) == (CA22[1], "Unhealthy") for x in d)
        )
        assert value("devplugin_npu_healthy", CA22[1]) == 0
        assert smi.calls()[0] == ["-j"]


async def test_no_metrics_without_smi(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    registry = CollectorRegistry()
    document = config(lock_file, rsdGroups="off", rblnSmiInterval=0)
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document, registry=registry):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        labels = {"resource": ATOM, "device": CA22[0], "npu": "rbln0", "card": "RBLN-CA22"}
        assert registry.get_sample_value("devplugin_npu_healthy", labels) == 1
        assert registry.get_sample_value("devplugin_npu_temperature_celsius", labels) is None
    assert not os.path.exists(ca22.path("/usr/bin/rbln-smi"))
