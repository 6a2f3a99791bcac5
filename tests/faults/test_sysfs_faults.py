"""Broken sysfs and /dev on each plugin's node: files missing, empty, garbage or not UTF-8,
dangling symlinks, and a device vanishing between being listed and being read.

Each fault is applied before the plugin starts and, separately, while it serves (then one
rediscovery and one health check run). Either way the plugin must not crash, must keep serving
every resource, must skip the device or advertise it Unhealthy — never hand it out as Healthy —
and must log a line naming the broken path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from devplugin_core._hostfs import HostFS
from devplugin_core.testing import FakeHost, FakeKubelet

from .cases import ATOM, CASES, CX5_VFS, IB, NPU_ATOMS, RDMA_IB, SRIOV_RDMA, Case
from .helpers import HEALTHY, UNHEALTHY, Node, serve

DEVICES = "/sys/bus/pci/devices"


@dataclass(frozen=True)
class SysfsFault:
    plugin: str
    kind: str  # missing, empty, garbage, non-utf8, dangling, vanish
    apply: Callable[[FakeHost], None]
    logged: str  # a log line must contain this host path
    resource: str
    devices: tuple[str, ...]  # these IDs must be absent or Unhealthy
    vanish: str = ""  # "vanish": this PCI function disappears once it has been listed

    @property
    def id(self) -> str:
        return f"{self.plugin}:{self.kind}"


def _remove(*paths: str) -> Callable[[FakeHost], None]:
    def apply(host: FakeHost) -> None:
        for path in paths:
            host.remove(path)

    return apply


def _write(content: str | bytes, *paths: str) -> Callable[[FakeHost], None]:
    def apply(host: FakeHost) -> None:
        for path in paths:
            host.write(path, content)

    return apply


def _dangle(link: str) -> Callable[[FakeHost], None]:
    def apply(host: FakeHost) -> None:
        host.remove(link)
        host.path(link).symlink_to("nonexistent-target")

    return apply


def _nothing(host: FakeHost) -> None:
    return None


IB_PORT = f"{DEVICES}/{IB}/infiniband/mlx5_2/ports/1/state"
RDMA_SLOTS = tuple(str(i) for i in range(20))
VF = CX5_VFS[0]
VF_IDENTITY = tuple(f"{DEVICES}/{VF}/{f}" for f in ("vendor", "device", "class", "modalias"))
NPU = NPU_ATOMS[0]
POOLS = f"/sys/bus/pci/drivers/rebellions/{NPU}/pools"

FAULTS = [
    # rdma-shared: the InfiniBand HCA, the only one behind rdma/ib_shared
    SysfsFault("rdma-shared", "missing", _remove(IB_PORT), IB_PORT, RDMA_IB, RDMA_SLOTS),
    SysfsFault("rdma-shared", "empty", _write("", IB_PORT), IB_PORT, RDMA_IB, RDMA_SLOTS),
    SysfsFault("rdma-shared", "garbage", _write("banana\n", IB_PORT), IB_PORT, RDMA_IB, RDMA_SLOTS),
    SysfsFault(
        "rdma-shared", "non-utf8", _write(b"\xff\xfe4\n", IB_PORT), IB_PORT, RDMA_IB, RDMA_SLOTS
    ),
    SysfsFault(
        "rdma-shared",
        "dangling",
        _dangle("/sys/class/infiniband_verbs/uverbs2"),
        "/sys/class/infiniband_verbs/uverbs2",
        RDMA_IB,
        RDMA_SLOTS,
    ),
    SysfsFault(
        "rdma-shared", "vanish", _nothing, f"{DEVICES}/{IB}", RDMA_IB, RDMA_SLOTS, vanish=IB
    ),
    # sriov-net: an RDMA-capable ConnectX-5 VF
    SysfsFault("sriov-net", "missing", _remove(*VF_IDENTITY), f"{DEVICES}/{VF}", SRIOV_RDMA, (VF,)),
    SysfsFault(
        "sriov-net", "empty", _write("", *VF_IDENTITY), f"{DEVICES}/{VF}", SRIOV_RDMA, (VF,)
    ),
    SysfsFault(
        "sriov-net", "garbage", _write("junk\n", *VF_IDENTITY), f"{DEVICES}/{VF}", SRIOV_RDMA, (VF,)
    ),
    SysfsFault(
        "sriov-net",
        "non-utf8",
        _write(b"\xc3\x28\n", *VF_IDENTITY),
        f"{DEVICES}/{VF}/vendor",
        SRIOV_RDMA,
        (VF,),
    ),
    SysfsFault(
        "sriov-net", "dangling", _dangle(f"{DEVICES}/{VF}"), f"{DEVICES}/{VF}", SRIOV_RDMA, (VF,)
    ),
    SysfsFault("sriov-net", "vanish", _nothing, f"{DEVICES}/{VF}", SRIOV_RDMA, (VF,), vanish=VF),
    # rebel-npu: the first CA22 (rbln0)
    SysfsFault("rebel-npu", "missing", _remove(POOLS), POOLS, ATOM, (NPU,)),
    SysfsFault("rebel-npu", "empty", _write("", POOLS), POOLS, ATOM, (NPU,)),
    SysfsFault(
        "rebel-npu",
        "garbage",
        _write("poolinfo\n../../etc/shadow 0 4\n", POOLS),
        POOLS,
        ATOM,
        (NPU,),
    ),
    SysfsFault(
        "rebel-npu", "non-utf8", _write(b"poolinfo\n\xffrbln0\xfe\n", POOLS), POOLS, ATOM, (NPU,)
    ),
    SysfsFault("rebel-npu", "dangling", _dangle("/dev/rbln0"), "/dev/rbln0", ATOM, (NPU,)),
    SysfsFault("rebel-npu", "vanish", _nothing, f"{DEVICES}/{NPU}", ATOM, (NPU,), vanish=NPU),
]


@contextlib.contextmanager
def vanishing(host: FakeHost, address: str) -> Iterator[None]:
    """``address`` disappears right after discovery resolved its sysfs directory (it was
    listed; every read after that finds nothing), once."""
    original = HostFS.realpath
    root = str(host.root.resolve())
    target = f"{DEVICES}/{address}"
    done = False

    def realpath(
        self: HostFS, host_path: str, *, strict: bool = True, dirs: set[str] | None = None
    ) -> str:
        nonlocal done
        result = original(self, host_path, strict=strict, dirs=dirs)
        if not done and self.root == root and host_path == target:
            done = True
            host.remove_pci(address)
        return result

    HostFS.realpath = realpath  # type: ignore[method-assign]
    try:
        yield
    finally:
        HostFS.realpath = original  # type: ignore[method-assign]


PARAMS = [pytest.param(next(c for c in CASES if c.name == f.plugin), f, id=f.id) for f in FAULTS]


def _not_healthy(kubelet: FakeKubelet, fault: SysfsFault) -> bool:
    seen = kubelet.health(fault.resource)
    return all(seen.get(device, UNHEALTHY) == UNHEALTHY for device in fault.devices)


async def _still_serving(kubelet: FakeKubelet, case: Case, fault: SysfsFault) -> None:
    """Every resource still registered once and streaming; another resource allocates."""
    for resource in case.resources:
        assert kubelet.registration_count(resource) == 1, resource
        assert not kubelet.connections[resource].ended, resource
    for resource, device in case.stable.items():
        if resource != fault.resource and kubelet.health(resource).get(device) == HEALTHY:
            await kubelet.allocate(resource, [device])
            return
    raise AssertionError("no healthy device left on the unaffected resources")


def _logged(caplog: pytest.LogCaptureFixture, path: str) -> bool:
    return any(
        path in record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING
    )


@pytest.mark.parametrize(("case", "fault"), PARAMS)
async def test_fault_before_start(
    fault: SysfsFault, node: Node, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fault.apply(node.host)
    with vanishing(node.host, fault.vanish) if fault.vanish else contextlib.nullcontext():
        async with serve(node, fake_kubelet) as runtime:
            for resource in node.case.resources:
                await fake_kubelet.wait_for_registration(resource, 1, timeout=20)
            await fake_kubelet.wait_until(
                lambda: _not_healthy(fake_kubelet, fault), what=f"{fault.devices} skipped/Unhealthy"
            )
            await _still_serving(fake_kubelet, node.case, fault)
            assert runtime._failed is None
    assert _logged(caplog, fault.logged), f"no warning names {fault.logged}"


@pytest.mark.parametrize(("case", "fault"), PARAMS)
async def test_fault_while_serving(
    fault: SysfsFault, node: Node, fake_kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serve(node, fake_kubelet) as runtime:
        for resource, count in node.case.expected.items():
            await fake_kubelet.wait_for_devices(resource, lambda d, n=count: len(d) == n)
        caplog.clear()
        fault.apply(node.host)
        with vanishing(node.host, fault.vanish) if fault.vanish else contextlib.nullcontext():
            assert await runtime.discover_once()
        for resource in node.case.resources:
            await runtime.check_health_once(resource)
        await fake_kubelet.wait_until(
            lambda: _not_healthy(fake_kubelet, fault), what=f"{fault.devices} skipped/Unhealthy"
        )
        await _still_serving(fake_kubelet, node.case, fault)
        assert runtime._failed is None
    assert _logged(caplog, fault.logged), f"no warning names {fault.logged}"
