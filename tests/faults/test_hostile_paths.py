"""Hostile paths: device nodes swapped for symlinks that escape ``/dev`` (absolute targets, and
relative ones climbing past the host root), config paths outside the allow-list or with ``..``,
and path-traversal strings in selectors.

None of them may reach the kubelet: Allocate refuses with FAILED_PRECONDITION naming the path
(at once, before any rediscovery), the device is then advertised Unhealthy, and every host path
in any Allocate answer stays under ``/dev`` (device nodes) or is one of the configured tool
files (mounts). Config paths with ``..`` are refused at load and at reload with an error that
names the field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc
import pytest

from devplugin_core import ConfigError
from devplugin_core.testing import FakeHost, FakeKubelet

from .cases import ATOM, CASES, NPU, NPU_ATOMS, RDMA, RDMA_IB, SRIOV, SRIOV_DPDK, X710_VFS, Case
from .helpers import HEALTHY, UNHEALTHY, Node, serve, wait_registered, write_json

SECRET = "/etc/shadow"
TOOLS = {"/usr/bin/rbln-stat", "/usr/bin/rbln-smi"}

#: (case, a device node one of its devices is handed, the resource, that device's IDs)
NODES = [
    (RDMA, "/dev/infiniband/uverbs2", RDMA_IB, tuple(str(i) for i in range(20))),
    (SRIOV, "/dev/vfio/104", SRIOV_DPDK, (X710_VFS[4],)),
    (NPU, "/dev/rbln0", ATOM, (NPU_ATOMS[0],)),
]
ESCAPES = {
    "absolute": SECRET,  # re-rooted under the host root: still /etc/shadow, outside /dev
    "climbing": "../" * 12 + "etc/shadow",  # '..' stops at the host root
}


def _secret(host: FakeHost) -> None:
    host.write(SECRET, "root:$6$secret:19000:0:99999:7:::\n")


def _swap_for_symlink(host: FakeHost, node: str, target: str) -> None:
    path = host.path(node)
    path.unlink()
    path.symlink_to(target)


def assert_safe(replies: Iterable[object]) -> None:
    """Every host path handed out: device nodes canonical under /dev, mounts the tools."""
    for reply in replies:
        for spec in reply.devices:  # type: ignore[attr-defined]
            assert spec.host_path.startswith("/dev/"), spec.host_path
            assert ".." not in spec.host_path.split("/"), spec.host_path
        for mount in reply.mounts:  # type: ignore[attr-defined]
            assert mount.host_path in TOOLS and mount.read_only, mount.host_path


async def _allocate_everything(kubelet: FakeKubelet, case: Case) -> list[object]:
    replies = []
    for resource in case.resources:
        healthy = [d.ID for d in kubelet.devices(resource) if d.health == HEALTHY]
        for device in healthy[:8]:
            replies.append(await kubelet.allocate(resource, [device]))
    return replies


@pytest.mark.parametrize("escape", sorted(ESCAPES))
@pytest.mark.parametrize(
    ("case", "node_path", "resource", "ids"), [pytest.param(*n, id=n[0].name) for n in NODES]
)
async def test_device_node_symlink_escaping_dev_is_never_handed_out(
    node: Node,
    fake_kubelet: FakeKubelet,
    caplog: pytest.LogCaptureFixture,
    escape: str,
    node_path: str,
    resource: str,
    ids: tuple[str, ...],
) -> None:
    caplog.set_level(logging.INFO)
    _secret(node.host)
    async with serve(node, fake_kubelet) as runtime:
        await wait_registered(fake_kubelet, node.case, 1)
        assert_safe(await _allocate_everything(fake_kubelet, node.case))

        _swap_for_symlink(node.host, node_path, ESCAPES[escape])
        # refused at Allocate time already, before any rediscovery notices
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await fake_kubelet.allocate(resource, [ids[0]])
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert node_path in (refused.value.details() or "")
        details = refused.value.details() or ""
        # the path check refuses it, unless a health tick saw the swap first ("missing")
        assert "outside the allowed prefixes /dev" in details or (
            details.startswith("unhealthy devices") and "is missing" in details
        ), details

        await runtime.discover_once()
        await fake_kubelet.wait_until(
            lambda: all(fake_kubelet.health(resource).get(i, UNHEALTHY) == UNHEALTHY for i in ids),
            what=f"{resource} {ids[:2]}... advertised Unhealthy",
        )
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await fake_kubelet.allocate(resource, [ids[0]])
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert_safe(await _allocate_everything(fake_kubelet, node.case))
        assert runtime._failed is None
    named = [
        r for r in caplog.records if node_path in r.getMessage() and r.levelno >= logging.ERROR
    ]
    assert named, "no log line names the refused path"
    # one line per resource and problem, not one per device (rdma-shared has 100s of slots)
    assert sum("advertised Unhealthy" in r.getMessage() for r in named) <= len(node.case.resources)


# -- rebel-npu: the tool paths its config names ------------------------------------------------
HOSTILE_TOOLS = {
    "deny-listed": ({"rblnStatHostPath": SECRET}, None),
    "kubelet-dir": ({"rblnStatHostPath": "/var/lib/kubelet/device-plugins/kubelet.sock"}, None),
    "absolute-symlink": ({}, SECRET),
    "climbing-symlink": ({}, "../" * 12 + "etc/shadow"),
}


@pytest.mark.parametrize("case", [NPU], ids=["rebel-npu"])
@pytest.mark.parametrize("hostile", sorted(HOSTILE_TOOLS))
async def test_tool_mounts_outside_the_allow_list_are_refused(
    node: Node, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture, hostile: str
) -> None:
    caplog.set_level(logging.INFO)
    _secret(node.host)
    overrides, link = HOSTILE_TOOLS[hostile]
    if link is not None:  # the configured path is fine; on the host it escapes
        _swap_for_symlink(node.host, "/usr/bin/rbln-stat", link)
    refused = overrides.get("rblnStatHostPath", "/usr/bin/rbln-stat")
    document = {**node.config, **overrides}
    async with serve(node, fake_kubelet, config=document):
        await wait_registered(fake_kubelet, node.case, 1)
        replies = await _allocate_everything(fake_kubelet, node.case)
        for reply in replies:
            sources = [m.host_path for m in reply.mounts]  # type: ignore[attr-defined]
            assert sources == ["/usr/bin/rbln-smi"], sources  # rbln-stat left out
            for spec in reply.devices:  # type: ignore[attr-defined]
                assert spec.host_path.startswith("/dev/")
    assert any(
        refused in r.getMessage() and "will not be mounted" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ), "no warning names the refused tool path"


DOTTED = {
    "rblnStatHostPath": "/usr/bin/../../etc/shadow",
    "rblnSmiHostPath": "/usr/bin/../../../root/.ssh/id_rsa",
    "rblnSmiPath": "/opt/rbln/../../bin/sh",
    "rsdLockFile": "/var/run/../../etc/lock",
}


@pytest.mark.parametrize("case", [NPU], ids=["rebel-npu"])
@pytest.mark.parametrize("key", sorted(DOTTED))
async def test_config_paths_with_dotdot_are_refused_at_start_and_reload(
    node: Node, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    hostile = {**node.config, key: DOTTED[key]}
    with pytest.raises(ConfigError) as err:
        async with serve(node, fake_kubelet, config=hostile):
            pass
    assert err.value.field == key and "'..'" in str(err.value)
    assert not fake_kubelet.registrations  # nothing was served

    config = node.scratch / "config.json"
    write_json(config, node.config)
    async with serve(node, fake_kubelet, config=config) as runtime:
        await wait_registered(fake_kubelet, node.case, 1)
        applied = runtime.loaded
        write_json(config, hostile)
        assert not await runtime.reload("test")
        assert runtime.loaded is applied
        assert any(key in r.getMessage() and "'..'" in r.getMessage() for r in caplog.records)
        assert_safe(await _allocate_everything(fake_kubelet, node.case))


# -- traversal strings where configs name devices, not paths ----------------------------------
TRAVERSAL_SELECTORS = {
    "rdma-shared": {
        "configList": [
            {
                "resourceName": "evil",
                "rdmaHcaMax": 5,
                "selectors": {"ifNames": ["../../../etc/shadow", "/dev/../etc"]},
            }
        ]
    },
    "sriov-net": {
        "resourceList": [
            {"resourceName": "evil", "selectors": {"pfNames": ["../../etc#0-3"], "drivers": [".."]}}
        ]
    },
    "rebel-npu": {
        "resourceList": [
            {"resourceName": "evil", "selectors": {"pciAddresses": ["../../../etc/shadow"]}}
        ]
    },
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_traversal_strings_in_selectors_never_become_paths(
    node: Node, fake_kubelet: FakeKubelet
) -> None:
    _secret(node.host)
    document = {**node.config, **TRAVERSAL_SELECTORS[node.case.name]}
    document.pop("configList" if node.case.name != "rdma-shared" else "resourceList", None)
    async with serve(node, fake_kubelet, config=document) as runtime:
        resource = next(iter(runtime.resources))
        await fake_kubelet.wait_for_registration(resource, 1, timeout=20)
        assert fake_kubelet.devices(resource) == []  # matched nothing, serves nothing
        assert runtime._failed is None
