"""Issue 11: one bad device or one slow host read never stops the others from being served.

Each rule is what the kubelet's device manager would see: ListAndWatch updates, Allocate
answers (``ManagerImpl.Allocate`` turns any error into an admission failure), and the
container's liveness probe (``/healthz``) that makes the kubelet restart a wedged plugin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.core import GaugeMetricFamily

from devplugin_core.testing import run_plugin

from .gadget import SPEC, GadgetHealth, add_gadgets, config

A, B = "example.com/a", "example.com/b"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_a_hung_check_marks_only_its_own_resource_and_fails_healthz_after_its_bound(
    fake_host, fake_kubelet, monkeypatch
):
    ids = add_gadgets(fake_host, 2)
    monkeypatch.setattr(GadgetHealth, "timeout", 0.3)
    doc = config(A, B, healthInterval=0.05)
    async with run_plugin(
        SPEC, fake_host, fake_kubelet, config=doc, metrics_address="127.0.0.1:0"
    ) as runtime:
        port = runtime.http.port  # type: ignore[union-attr]
        for name in (A, B):
            await fake_kubelet.wait_for_devices(name, lambda d: d[0].health == "Healthy")
        stuck = runtime.resources[A].resource.health
        assert stuck is not None
        stuck.hang_limit = 1.5  # type: ignore[misc]
        release = threading.Event()
        original = stuck.check

        def hanging(devices):  # type: ignore[no-untyped-def]
            release.wait(60)
            return original(devices)

        stuck.check = hanging  # type: ignore[method-assign]
        try:
            # A's devices go Unhealthy once its check runs past its timeout...
            await fake_kubelet.wait_for_devices(
                A, lambda d: all(x.health == "Unhealthy" for x in d)
            )
            hung = runtime.registry.get_sample_value(
                "devplugin_health_check_hung", {"resource": A, "checker": "GadgetHealth"}
            )
            assert hung == 1
            # ...while B keeps its own schedule: a fault and a recovery both reach the kubelet.
            assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 200
            fake_host.write(f"/sys/bus/pci/devices/{ids[0]}/gadget_ok", "0\n")
            await fake_kubelet.wait_for_devices(B, lambda d: d[0].health == "Unhealthy")
            fake_host.write(f"/sys/bus/pci/devices/{ids[0]}/gadget_ok", "1\n")
            await fake_kubelet.wait_for_devices(B, lambda d: d[0].health == "Healthy")
            # past hang_limit the liveness probe fails, naming the resource
            await fake_kubelet.wait_until(lambda: runtime.health.hung == [A], 10, "hang bound")
            status, body = await asyncio.to_thread(_get, port, "/healthz")
            assert status == 503 and A in body
        finally:
            release.set()
        # the check returns: the probe is ok again and A recovers
        await fake_kubelet.wait_until(lambda: runtime.health.hung == [], 10, "check returned")
        assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 200
        await fake_kubelet.wait_for_devices(A, lambda d: all(x.health == "Healthy" for x in d))


class _SlowCollector:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def collect(self, snapshots):  # type: ignore[no-untyped-def]
        self.calls += 1
        time.sleep(self.seconds)  # a wedged sysfs read
        family = GaugeMetricFamily("gadget_slow", "slow", labels=["resource"])
        for name in snapshots:
            family.add_metric([name], 1)
        yield family


async def test_a_slow_collector_never_blocks_allocate_or_listandwatch(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    doc = config(A, healthInterval=0.05)
    async with run_plugin(
        SPEC, fake_host, fake_kubelet, config=doc, metrics_address="127.0.0.1:0"
    ) as runtime:
        port = runtime.http.port  # type: ignore[union-attr]
        await fake_kubelet.wait_for_devices(A, lambda d: d[0].health == "Healthy")
        slow = _SlowCollector(5.0)
        runtime.plugin = dataclasses.replace(runtime.plugin, collectors=(slow,))  # type: ignore[arg-type]
        scrape = asyncio.ensure_future(asyncio.to_thread(_get, port, "/metrics"))
        await fake_kubelet.wait_until(lambda: slow.calls == 1, 10, "collection started")
        started = time.monotonic()
        reply = await fake_kubelet.allocate(A, ids[:1])  # answered while the collector sleeps
        assert [d.host_path for d in reply.devices] == ["/dev/gadget0"]
        fake_host.write(f"/sys/bus/pci/devices/{ids[1]}/gadget_ok", "0\n")
        await fake_kubelet.wait_for_devices(A, lambda d: d[1].health == "Unhealthy")
        assert time.monotonic() - started < 5.0  # both happened inside the collector's sleep
        status, body = await scrape  # the scrape itself fails cleanly at its deadline
        assert status == 503 and "did not finish" in body
        await fake_kubelet.wait_until(lambda: slow.calls == 1, 1, "no pile-up")
        slow.seconds = 0
        await asyncio.sleep(5.2 - (time.monotonic() - started))  # the first collection ends
        status, body = await asyncio.to_thread(_get, port, "/metrics")
        assert status == 200 and 'gadget_slow{resource="example.com/a"} 1.0' in body


async def test_a_vanished_single_device_fails_allocate_naming_the_path_and_rescans(
    fake_host, fake_kubelet
):
    ids = add_gadgets(fake_host, 2)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(A)) as runtime:
        await fake_kubelet.wait_for_devices(A, lambda d: len(d) == 2)
        fake_host.remove_pci(ids[1])
        fake_host.remove("/dev/gadget1")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(A, [ids[1]])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "/dev/gadget1" in (err.value.details() or "")
        # the failed Allocate asked for a rescan: the device leaves the list (no periodic
        # rescans and no fingerprint in this plugin, so nothing else could remove it)
        await fake_kubelet.wait_for_devices(A, lambda d: [x.ID for x in d] == ids[:1])
        triggered = runtime.registry.get_sample_value("devplugin_rescans_triggered_total")
        assert triggered is not None and triggered >= 1


async def test_a_change_landing_during_a_scan_is_picked_up(fake_host, fake_kubelet):
    """The fingerprint is taken before and after each scan: when they differ, the change may
    be in the baseline but not in the devices, so one more scan follows at once."""
    import devplugin_core as dp

    fake_host.write("/opt/widgets/w0", "")
    resource = dp.Resource("example.com/widget")

    class Racy(dp.Scanner):
        scans = 0

        def scan(self, scan: dp.Scan) -> None:
            names = scan.host.listdir("/opt/widgets")
            Racy.scans += 1
            if Racy.scans == 1:
                fake_host.write("/opt/widgets/w1", "")  # lands after the read
            scan.add(resource, *(dp.Device(n) for n in names))

        def fingerprint(self, host: dp.HostFS) -> object:
            return tuple(host.listdir("/opt/widgets"))

    def build(config: object, ctx: dp.PluginContext) -> dp.Plugin:
        # no periodic rescans, fingerprint polls an hour apart: only the follow-up can see it
        return dp.Plugin(Racy(), (resource,), rescan_interval=0, fingerprint_interval=3600)

    spec = dp.PluginSpec("racy", "test", _Empty, build, config_optional=True)
    async with run_plugin(spec, fake_host, fake_kubelet):
        await fake_kubelet.wait_for_devices(resource.name, lambda d: len(d) == 2, timeout=5)
    assert Racy.scans == 2  # exactly one follow-up, no chain


@dataclasses.dataclass(frozen=True)
class _Empty:
    pass
