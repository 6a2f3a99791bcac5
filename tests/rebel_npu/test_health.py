"""Health: sysfs and /dev signals, rbln-smi signals, both directions, as the kubelet sees it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest
from devplugin_plugins.rebel_npu import SPEC
from devplugin_plugins.rebel_npu.health import NpuHealth
from devplugin_plugins.rebel_npu.testing import FakeSmi

from devplugin_core._runtime import PluginRuntime
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, CA22, config


def state(device: str, health: str) -> Callable[[Sequence[Any]], bool]:
    return lambda devices: any((d.ID, d.health) == (device, health) for d in devices)


def checker(runtime: PluginRuntime[object]) -> NpuHealth:
    health = runtime.resources[ATOM].resource.health
    assert isinstance(health, NpuHealth)
    return health


def reason(runtime: PluginRuntime[object], device: str) -> str:
    """Why ``device`` is Unhealthy, as the framework keeps it (what ``discover`` shows)."""
    return runtime.resources[ATOM].tracker.reason(device)


async def test_driver_unbind_and_rebind(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    document = config(lock_file, rsdGroups="off")
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document) as runtime:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        ca22.unbind(CA22[1])
        await fake_kubelet.wait_for_devices(ATOM, state(CA22[1], "Unhealthy"))
        assert fake_kubelet.health(ATOM)[CA22[0]] == "Healthy"
        assert await runtime.discover_once()  # a rescan keeps the unbound device advertised
        assert fake_kubelet.health(ATOM)[CA22[1]] == "Unhealthy"
        assert reason(runtime, CA22[1]) == "driver unbound (now none)"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(ATOM, [CA22[1]])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        ca22.bind(CA22[1], "rebellions")
        await fake_kubelet.wait_for_devices(ATOM, state(CA22[1], "Healthy"))


async def test_char_device_and_pci_function_vanishing(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    document = config(lock_file, rsdGroups="off", health={"recoverAfter": 1})
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document) as runtime:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        ca22.remove("/dev/rbln2")
        await fake_kubelet.wait_for_devices(ATOM, state(CA22[2], "Unhealthy"))
        assert reason(runtime, CA22[2]) == "/dev/rbln2 is missing"
        ca22.add_dev("/dev/rbln2")
        await fake_kubelet.wait_for_devices(ATOM, state(CA22[2], "Healthy"))
        device = runtime.resources[ATOM].snapshot.by_id[CA22[3]]
        ca22.remove_pci(CA22[3])
        # the check sees the function gone and asks for a rescan at once, which drops it
        await fake_kubelet.wait_for_devices(
            ATOM, lambda d: [x.ID for x in d] == CA22[:3], timeout=3.0
        )
        observation = checker(runtime).check([device])[CA22[3]]
        assert not observation.healthy and observation.rescan
        assert observation.reason == f"PCI function {CA22[3]} vanished"


async def test_rbln_smi_status_and_temperature(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    document = config(lock_file, rsdGroups="off", health={"maxTemperatureCelsius": 90})
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document) as runtime:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        monitor = checker(runtime).monitor
        smi.set_device(CA22[0], status="abnormal")
        smi.set_device(CA22[3], temperature="95C")
        assert monitor.refresh(force=True)
        await fake_kubelet.wait_for_devices(
            ATOM, lambda d: state(CA22[0], "Unhealthy")(d) and state(CA22[3], "Unhealthy")(d)
        )
        reasons = {i: reason(runtime, i) for i in (CA22[0], CA22[3])}
        assert "status 'abnormal'" in reasons[CA22[0]] and "95 C" in reasons[CA22[3]]
        smi.set_device(CA22[0], status="normal")
        smi.set_device(CA22[3], temperature="60C")
        assert monitor.refresh(force=True)
        await fake_kubelet.wait_for_devices(
            ATOM, lambda d: state(CA22[0], "Healthy")(d) and state(CA22[3], "Healthy")(d)
        )


async def test_broken_rbln_smi_is_not_a_device_fault(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(
        SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="off")
    ) as runtime:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        monitor = checker(runtime).monitor
        smi.update(fail=["query"])
        assert not monitor.refresh(force=True)
        assert monitor.polls["error"] >= 1 and "simulated failure" in monitor.error
        smi.set_device(CA22[0], status="abnormal")  # unseen while rbln-smi fails
        observations = checker(runtime).check(runtime.resources[ATOM].devices)
        assert all(o.healthy for o in observations.values())


async def test_smi_signals_can_be_switched_off(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    document = config(lock_file, rsdGroups="off", health={"useRblnSmi": False})
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document) as runtime:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        smi.set_device(CA22[0], status="abnormal")
        assert checker(runtime).monitor.refresh(force=True)  # still polled (for metrics)
        assert checker(runtime).check(runtime.resources[ATOM].devices)[CA22[0]].healthy
