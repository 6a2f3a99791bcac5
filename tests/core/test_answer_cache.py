"""Issue 14: reusable allocators are answered from a cache, with every rule still applied.

What the kubelet receives must not change: the same response, unknown IDs still
INVALID_ARGUMENT, unhealthy ones still FAILED_PRECONDITION, and a host path that changed since
the answer was built is checked again (a swapped symlink is refused, a vanished node fails).
"""

from __future__ import annotations

import os

import grpc
import pytest

from .gadget import SPEC, GadgetAllocator, add_gadgets, config

RES = "example.com/gadget"


@pytest.fixture
def reusable(monkeypatch):  # type: ignore[no-untyped-def]
    calls: list[tuple[str, ...]] = []
    original = GadgetAllocator.allocate

    def counting(self, request):  # type: ignore[no-untyped-def]
        calls.append(request.ids)
        return original(self, request)

    monkeypatch.setattr(GadgetAllocator, "reusable", True)
    monkeypatch.setattr(GadgetAllocator, "allocate", counting)
    return calls


async def test_a_repeated_request_is_answered_from_the_cache(fake_host, fake_kubelet, reusable):
    from devplugin_core.testing import run_plugin

    ids = add_gadgets(fake_host, 2)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        first = await fake_kubelet.allocate(RES, ids[:1])
        again = await fake_kubelet.allocate(RES, ids[:1])
        assert again == first and reusable == [tuple(ids[:1])]
        other = await fake_kubelet.allocate(RES, ids[1:])  # another key: built once
        assert [d.host_path for d in other.devices] == ["/dev/gadget1"]
        assert len(reusable) == 2
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ["0000:99:00.0"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # a health change publishes a new snapshot: unhealthy is refused, and answers rebuilt
        fake_host.write(f"/sys/bus/pci/devices/{ids[0]}/gadget_ok", "0\n")
        assert await runtime.check_health_once(RES)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ids[:1])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_changed_host_path_is_checked_again(fake_host, fake_kubelet, reusable):
    from devplugin_core.testing import run_plugin

    ids = add_gadgets(fake_host, 2)
    fake_host.write("/etc/shadow", "secret\n")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        for _ in range(2):
            await fake_kubelet.allocate(RES, ids[:1])
            await fake_kubelet.allocate(RES, ids[1:])
        assert len(reusable) == 2  # both answers cached
        fake_host.remove("/dev/gadget0")
        fake_host.symlink("/dev/gadget0", "/etc/shadow")  # swapped for an escape
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ids[:1])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "/etc/shadow" in (err.value.details() or "")
        fake_host.remove("/dev/gadget1")  # vanished: a full Allocate names the path
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ids[1:])
        assert "/dev/gadget1" in (err.value.details() or "")


async def test_an_answer_built_from_already_verified_paths_still_rechecks_them(
    fake_host, fake_kubelet, reusable
):
    """After the device list changes, the next answer is built from paths VerifiedPaths
    already knows; that answer must carry their inodes too, or a later swap would be served
    from the cache."""
    from devplugin_core.testing import run_plugin

    ids = add_gadgets(fake_host, 2)
    fake_host.write("/etc/shadow", "secret\n")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        await fake_kubelet.allocate(RES, ids[:1])  # paths verified, answer cached
        fake_host.remove_pci(ids[1])
        assert await runtime.discover_once()  # another device list: the cache starts again
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1)
        for _ in range(2):
            await fake_kubelet.allocate(RES, ids[:1])  # built from VerifiedPaths, then cached
        assert len(reusable) == 2
        fake_host.remove("/dev/gadget0")
        fake_host.symlink("/dev/gadget0", "/etc/shadow")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ids[:1])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "/etc/shadow" in (err.value.details() or "")


async def test_files_named_with_depends_on_decide_whether_an_answer_is_reused(
    fake_host, fake_kubelet, monkeypatch
):
    """``AllocationRequest.depends_on``: the answer is kept while each named file is the same
    file; replaced or removed, the next Allocate is built afresh; missing when named, the
    answer is not kept at all."""
    from devplugin_core.testing import run_plugin

    ids = add_gadgets(fake_host, 1)
    fake_host.write("/run/gadget-state", "v1\n")
    calls: list[tuple[str, ...]] = []
    original = GadgetAllocator.allocate

    def naming(self, request):  # type: ignore[no-untyped-def]
        calls.append(request.ids)
        request.depends_on(str(fake_host.path("/run/gadget-state")))
        return original(self, request)

    monkeypatch.setattr(GadgetAllocator, "reusable", True)
    monkeypatch.setattr(GadgetAllocator, "allocate", naming)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1)
        for _ in range(2):
            await fake_kubelet.allocate(RES, ids)
        assert len(calls) == 1
        fake_host.write("/run/gadget-state.new", "v2\n")
        os.replace(fake_host.path("/run/gadget-state.new"), fake_host.path("/run/gadget-state"))
        for _ in range(2):
            await fake_kubelet.allocate(RES, ids)
        assert len(calls) == 2
        fake_host.remove("/run/gadget-state")  # gone: built afresh, and not kept
        for _ in range(2):
            await fake_kubelet.allocate(RES, ids)
        assert len(calls) == 4


async def test_build_ahead_answers_the_first_allocate_of_a_device_from_the_cache(
    fake_host, fake_kubelet, reusable, monkeypatch
):
    """``Allocator.build_ahead``: every healthy device's answer is built a second after the
    device list changes; the first Allocate then gets exactly what a fresh one would."""
    from devplugin_core.testing import run_plugin

    monkeypatch.setattr(GadgetAllocator, "build_ahead", True)
    ids = add_gadgets(fake_host, 3)
    fake_host.write(f"/sys/bus/pci/devices/{ids[2]}/gadget_ok", "0\n")  # unhealthy: skipped
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 3)
        await fake_kubelet.wait_until(lambda: len(reusable) == 2, 10, "answers built ahead")
        assert sorted(reusable) == [(ids[0],), (ids[1],)]
        first = await fake_kubelet.allocate(RES, ids[:1])
        assert len(reusable) == 2  # served from the cache
        assert [d.host_path for d in first.devices] == ["/dev/gadget0"]
