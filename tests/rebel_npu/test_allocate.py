"""Allocate as the kubelet receives it: device nodes, tool mounts, env, RSD group device."""

from __future__ import annotations

import json
import logging
import os

import grpc
import pytest
from devplugin_plugins.rebel_npu import SPEC
from devplugin_plugins.rebel_npu.testing import FakeSmi

from devplugin_core import AllocationRequest
from devplugin_core.testing import FakeHost, FakeKubelet, run_plugin

from .helpers import ATOM, CA22, built, config, discover, resource


async def test_allocate_contents(
    ca22: FakeHost, smi: FakeSmi, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(SPEC, ca22, fake_kubelet, config=config(lock_file)):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        reply = await fake_kubelet.allocate(ATOM, [CA22[3], CA22[0]])  # unsorted on purpose
    assert [(d.host_path, d.container_path, d.permissions) for d in reply.devices] == [
        ("/dev/rbln0", "/dev/rbln0", "rw"),
        ("/dev/rbln3", "/dev/rbln3", "rw"),
        ("/dev/rsd1", "/dev/rsd0", "rw"),
    ]
    assert [(m.host_path, m.container_path, m.read_only) for m in reply.mounts] == [
        ("/usr/bin/rbln-stat", "/usr/bin/rbln-stat", True),
        ("/usr/bin/rbln-smi", "/usr/bin/rbln-smi", True),
    ]
    ids = f"{CA22[0]},{CA22[3]}"
    assert dict(reply.envs) == {
        "PCIDEVICE_REBELLIONS_AI_ATOM": ids,
        "PCI_RESOURCE_REBELLIONS_AI_ATOM": ids,
        "PCIDEVICE_REBELLIONS_AI_ATOM_INFO": (
            '{"0000:13:00.0":{"rebellions":{"mount":"/dev/rbln0"}},'
            '"0000:24:00.0":{"rebellions":{"mount":"/dev/rbln3"}}}'
        ),
        "RBLN_DEVICES": "0,3",
    }
    assert smi.groups()[CA22[0]] == smi.groups()[CA22[3]] == "1"


async def test_missing_tool_is_logged_and_not_mounted(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    ca22.remove("/usr/bin/rbln-stat")
    ca22.write("/opt/rbln/rbln-smi", "binary")
    os.symlink("/opt/rbln/rbln-smi", ca22.path("/usr/bin/rbln-smi"))  # escapes the allow-list
    caplog.set_level(logging.WARNING)
    document = config(lock_file, rsdGroups="off")
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document) as runtime:
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        reply = await fake_kubelet.allocate(ATOM, [CA22[1]])
        assert list(reply.mounts) == []
        assert [d.host_path for d in reply.devices] == ["/dev/rbln1"]  # RSD off: no group
        logged = [r.getMessage() for r in caplog.records]
        assert any(
            "rbln-stat will not be mounted" in m and "/usr/bin/rbln-stat" in m for m in logged
        )
        assert any(
            "rbln-smi will not be mounted" in m and "/opt/rbln/rbln-smi" in m for m in logged
        )
        ca22.write("/usr/bin/rbln-stat", "tool")  # installed later: the next pass mounts it
        await runtime.discover_once()
        reply = await fake_kubelet.allocate(ATOM, [CA22[1]])
        assert [m.host_path for m in reply.mounts] == ["/usr/bin/rbln-stat"]


async def test_additional_info_goes_under_extra(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    document = config(
        lock_file,
        rsdGroups="off",
        resourceList=[
            {
                "resourceName": "ATOM",
                "selectors": {"vendors": ["1eff"]},
                "additionalInfo": {"*": {"rack": "r1"}, CA22[0]: {"rack": "r9", "slot": "2"}},
            }
        ],
    )
    async with run_plugin(SPEC, ca22, fake_kubelet, config=document):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        reply = await fake_kubelet.allocate(ATOM, [CA22[0], CA22[1]])
    info = json.loads(reply.envs["PCIDEVICE_REBELLIONS_AI_ATOM_INFO"])
    assert info[CA22[0]] == {
        "extra": {"rack": "r9", "slot": "2"},
        "rebellions": {"mount": "/dev/rbln0"},
    }
    assert info[CA22[1]]["extra"] == {"rack": "r1"}


async def test_unknown_ids_are_refused(
    ca22: FakeHost, lock_file: str, fake_kubelet: FakeKubelet
) -> None:
    async with run_plugin(SPEC, ca22, fake_kubelet, config=config(lock_file, rsdGroups="off")):
        await fake_kubelet.wait_for_devices(ATOM, lambda d: len(d) == 4)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(ATOM, ["0000:99:00.0"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_devices_are_sorted_by_address_not_naturally(fake_host: FakeHost) -> None:
    fake_host.add_npu("0000:0a:00.0", numa_node=0, index=0)
    fake_host.add_npu("0000:09:00.0", numa_node=0, index=1)
    plugin = built(fake_host, {"rsdGroups": "off"})
    devices, _ = discover(fake_host, plugin)
    atom = resource(plugin, ATOM)
    edits = atom.allocator.allocate(AllocationRequest(ATOM, tuple(devices[ATOM])))
    assert [n.host_path for n in edits.device_nodes] == ["/dev/rbln1", "/dev/rbln0"]
    assert edits.env["PCIDEVICE_REBELLIONS_AI_ATOM"] == "0000:09:00.0,0000:0a:00.0"
    assert edits.env["RBLN_DEVICES"] == "1,0"
