"""RSD group policy with the fake rbln-smi: create, reuse, clean, fail, time out, lock, modes."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path

import grpc
import pytest
from devplugin_plugins.rebel_npu import SPEC
from devplugin_plugins.rebel_npu.rsd import RsdGroups
from devplugin_plugins.rebel_npu.smi import RblnSmi
from devplugin_plugins.rebel_npu.testing import FakeSmi
from prometheus_client import CollectorRegistry

from devplugin_core import AllocationError, DevicePluginError
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, CA22, config


def groups(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, *, timeout: float = 5.0, smi_timeout: float = 3.0
) -> RsdGroups:
    return RsdGroups("create", RblnSmi(smi.executable, smi_timeout), ca22.host, lock_file, timeout)


def group_calls(smi: FakeSmi) -> list[list[str]]:
    return [c for c in smi.calls() if c[0] == "group"]


def test_each_allocation_gets_its_own_group(ca22: FakeHost, smi: FakeSmi, lock_file: str) -> None:
    rsd = groups(ca22, smi, lock_file)
    first = rsd.node_for([CA22[1], CA22[0]])
    second = rsd.node_for([CA22[2]])
    assert first is not None and second is not None
    assert (first.host_path, first.container_path) == ("/dev/rsd1", "/dev/rsd0")
    assert second.host_path == "/dev/rsd2"
    assert smi.groups() == {CA22[0]: "1", CA22[1]: "1", CA22[2]: "2", CA22[3]: "0"}
    assert group_calls(smi) == [["group", "-c", "1", "-a", "0,1"], ["group", "-c", "2", "-a", "2"]]
    assert ca22.path("/dev/rsd1").exists() and ca22.path("/dev/rsd2").exists()
    assert rsd.results == {"created": 2, "reused": 0, "failed": 0}


def test_stale_groups_are_reused_or_cleaned(ca22: FakeHost, smi: FakeSmi, lock_file: str) -> None:
    rsd = groups(ca22, smi, lock_file)
    rsd.node_for([CA22[0], CA22[3]])  # a pod gets rbln0+rbln3, then is deleted
    rsd.node_for([CA22[1]])  # another pod, still running
    node = rsd.node_for([CA22[3], CA22[0]])  # the same NPUs again: the stale group fits
    assert node is not None and node.host_path == "/dev/rsd1"
    assert rsd.results["reused"] == 1
    assert len(group_calls(smi)) == 2
    node = rsd.node_for([CA22[0], CA22[2]])  # overlaps the stale group: destroyed first
    assert node is not None
    calls = group_calls(smi)
    assert calls[-2:] == [["group", "-d", "1"], ["group", "-c", "1", "-a", "0,2"]]
    assert smi.groups() == {CA22[0]: "1", CA22[1]: "2", CA22[2]: "1", CA22[3]: "0"}
    assert not ca22.path("/dev/rsd0").exists()  # the shared group is never touched


def test_failure_is_an_allocation_error_without_fallback(
    ca22: FakeHost, smi: FakeSmi, lock_file: str
) -> None:
    rsd = groups(ca22, smi, lock_file)
    smi.update(fail=["create"])
    with pytest.raises(AllocationError) as err:
        rsd.node_for([CA22[0], CA22[1]])
    message = str(err.value)
    assert "simulated failure of create" in message and "not falling back" in message
    assert err.value.device_ids == (CA22[0], CA22[1])
    assert rsd.results["failed"] == 1
    smi.update(fail=[], create_noop=True)  # exits 0 but creates nothing: caught by the check
    with pytest.raises(AllocationError, match="holding nothing"):
        rsd.node_for([CA22[0]])


def test_timeout_is_bounded(ca22: FakeHost, smi: FakeSmi, lock_file: str) -> None:
    rsd = groups(ca22, smi, lock_file, timeout=2.0, smi_timeout=0.5)
    smi.update(hang=["create"])
    with pytest.raises(AllocationError, match="timed out"):
        rsd.node_for([CA22[0]])
    smi.update(hang=["group-query"])
    with pytest.raises(AllocationError, match="timed out"):
        rsd.node_for([CA22[0]])


def test_unlisted_device_fails_clearly(ca22: FakeHost, smi: FakeSmi, lock_file: str) -> None:
    smi.update(devices=[d for d in smi.state()["devices"] if d["pci"]["bus_id"] != CA22[2]])
    with pytest.raises(AllocationError, match=r"does not list 0000:23:00\.0"):
        groups(ca22, smi, lock_file).node_for([CA22[2]])


def test_lock_serialises_two_plugin_processes(ca22: FakeHost, smi: FakeSmi, lock_file: str) -> None:
    # Two RsdGroups with their own in-process locks stand for two plugin processes; only the
    # flock on the shared file keeps them from both picking group 1.
    a, b = groups(ca22, smi, lock_file), groups(ca22, smi, lock_file)
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def allocate(name: str, rsd: RsdGroups, ids: list[str]) -> None:
        try:
            node = rsd.node_for(ids)
            assert node is not None
            results[name] = node.host_path
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [
        threading.Thread(target=allocate, args=("a", a, CA22[:2])),
        threading.Thread(target=allocate, args=("b", b, CA22[2:])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sorted(results.values()) == ["/dev/rsd1", "/dev/rsd2"]


def test_lock_held_elsewhere_times_out(ca22: FakeHost, smi: FakeSmi, lock_file: str) -> None:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(AllocationError, match="another process holds the lock"):
            groups(ca22, smi, lock_file, timeout=0.3).node_for([CA22[0]])
    finally:
        os.close(fd)
    assert group_calls(smi) == []


async def test_create_failure_reaches_the_kubelet(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="create")):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        smi.update(fail=["create"])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(ATOM, [CA22[0]])
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "not falling back to the shared /dev/rsd0" in (err.value.details() or "")
        smi.update(fail=[])
        reply = await fake_kubelet.allocate(ATOM, [CA22[0]])
        assert [d.container_path for d in reply.devices] == ["/dev/rbln0", "/dev/rsd0"]


async def test_create_without_usable_smi_refuses_to_start(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    with pytest.raises(DevicePluginError, match=r"rsdGroups is 'create' but .* does not exist"):
        async with run_plugin(
            SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="create")
        ):
            pass
    assert fake_kubelet.registrations == []


async def test_create_with_broken_smi_refuses_to_start(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    smi.update(fail=["group-query"])
    with pytest.raises(DevicePluginError, match="simulated failure"):
        async with run_plugin(
            SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="create")
        ):
            pass


async def test_auto_without_smi_is_off_loudly(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    registry = CollectorRegistry()
    async with run_plugin(SPEC, ca22, fake_kubelet, config=config(lock_file), registry=registry):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        reply = await fake_kubelet.allocate(ATOM, CA22[:2])
        assert [d.host_path for d in reply.devices] == ["/dev/rbln0", "/dev/rbln1"]
        enabled = registry.get_sample_value(
            "devplugin_npu_rsd_groups_enabled", {"configured": "auto", "effective": "off"}
        )
        assert enabled == 0
    assert any("RSD GROUPS DISABLED" in r.getMessage() for r in caplog.records)


async def test_auto_with_smi_creates(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    registry = CollectorRegistry()
    async with run_plugin(SPEC, ca22, fake_kubelet, config=config(lock_file), registry=registry):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        reply = await fake_kubelet.allocate(ATOM, CA22[2:])
        assert reply.devices[-1].host_path == "/dev/rsd1"
        assert (
            registry.get_sample_value(
                "devplugin_npu_rsd_groups_enabled", {"configured": "auto", "effective": "create"}
            )
            == 1
        )
        assert (
            registry.get_sample_value("devplugin_npu_rsd_groups_total", {"result": "created"}) == 1
        )


def test_auto_needs_the_lock_directory_too(ca22: FakeHost, smi: FakeSmi, tmp_path: Path) -> None:
    rsd = RsdGroups(
        "auto", RblnSmi(smi.executable, 3), ca22.host, str(tmp_path / "missing" / "rsd.lock"), 5
    )
    assert rsd.peek() == "auto"
    assert rsd.node_for([CA22[0]]) is None
    assert rsd.peek() == "off" and "rsdLockFile" in rsd.reason
