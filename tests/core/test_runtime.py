"""Runtime behaviour: health with recovery, rediscovery, hot reload, host-path rules, CDI,
metrics over HTTP, PodResources attribution."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import threading
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devplugin_core.testing import FakePodResources, PodAssignment, run_plugin, write_config

from .gadget import SPEC, GadgetHealth, add_gadgets, config

RES = "example.com/gadget"


def _retune(runtime, **changes):  # type: ignore[no-untyped-def]
    """Swap in the running plugin build with other scan settings (what a reload does)."""
    plugin = dataclasses.replace(runtime.plugin, **changes)
    runtime.plugin = runtime.scanning.plugin = plugin


def _health(kubelet, resource=RES):  # type: ignore[no-untyped-def]
    return [d.health for d in kubelet.devices(resource)]


async def test_unhealthy_at_first_bad_check_and_recovers_after_two_good(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    ok_file = f"/sys/bus/pci/devices/{ids[0]}/gadget_ok"
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        fake_host.write(ok_file, "0\n")
        assert await runtime.check_health_once(RES)
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Unhealthy")
        fake_host.write(ok_file, "1\n")
        assert not await runtime.check_health_once(RES)  # 1 good check: still Unhealthy
        assert runtime.resources[RES].snapshot.health[ids[0]].value == "Unhealthy"
        assert await runtime.check_health_once(RES)  # 2nd good check: Healthy again
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        transitions = {
            to: runtime.registry.get_sample_value(
                "devplugin_device_health_transitions_total",
                {"resource": RES, "device": ids[0], "to": to},
            )
            for to in ("healthy", "unhealthy")
        }
        assert transitions == {"healthy": 1.0, "unhealthy": 1.0}


async def test_health_loop_runs_on_its_own(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 1)
    doc = config(RES, healthInterval=0.05)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc):
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        fake_host.write(f"/sys/bus/pci/devices/{ids[0]}/gadget_ok", "0\n")
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Unhealthy")
        fake_host.write(f"/sys/bus/pci/devices/{ids[0]}/gadget_ok", "1\n")
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")


async def test_steady_state_ticks_stay_in_the_health_thread(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 1)
    doc = config(RES, healthInterval=0.05)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        checker = runtime.resources[RES].resource.health
        original = checker.check  # type: ignore[union-attr]
        threads: list[str] = []
        handed: list[object] = []
        apply = runtime.health._apply

        def counting(*args):  # type: ignore[no-untyped-def]
            handed.append(args)
            apply(*args)

        runtime.health._apply = counting  # type: ignore[method-assign]

        def recording(devices):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return original(devices)

        checker.check = recording  # type: ignore[method-assign,union-attr]
        await fake_kubelet.wait_until(lambda: len(threads) >= 5, what="five quiet ticks")
        assert set(threads) == {"devplugin-health"}, threads
        assert handed == []  # healthy rounds never woke the loop
        ok = runtime.registry.get_sample_value(
            "devplugin_health_checks_total", {"resource": RES, "result": "ok"}
        )
        assert ok is not None and ok >= 5  # quiet ticks are counted
        # a problem found by a quiet tick reaches the kubelet; recovery, then quiet again
        fake_host.write(f"/sys/bus/pci/devices/{ids[0]}/gadget_ok", "0\n")
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Unhealthy")
        fake_host.write(f"/sys/bus/pci/devices/{ids[0]}/gadget_ok", "1\n")
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        threads.clear()
        handed.clear()
        await fake_kubelet.wait_until(lambda: len(threads) >= 3, what="quiet ticks again")
        assert handed == []


async def test_a_hanging_check_marks_devices_unhealthy_until_it_returns(
    fake_host, fake_kubelet, monkeypatch
):
    add_gadgets(fake_host, 1)
    monkeypatch.setattr(GadgetHealth, "timeout", 0.3)
    doc = config(RES, healthInterval=0.05)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        checker = runtime.resources[RES].resource.health
        original = checker.check  # type: ignore[union-attr]
        release = threading.Event()

        def hanging(devices):  # type: ignore[no-untyped-def]
            release.wait(30)
            return original(devices)

        checker.check = hanging  # type: ignore[method-assign,union-attr]
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Unhealthy")
        timeouts = runtime.registry.get_sample_value(
            "devplugin_health_checks_total", {"resource": RES, "result": "timeout"}
        )
        assert timeouts is not None and timeouts >= 1
        checker.check = original  # type: ignore[method-assign,union-attr]
        release.set()  # the hung call returns; checks work again and the device recovers
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        assert runtime._failed is None


async def test_health_checker_crash_marks_devices_unhealthy_not_the_plugin(fake_host, fake_kubelet):
    add_gadgets(fake_host, 1)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1)
        checker = runtime.resources[RES].resource.health

        def boom(devices):  # type: ignore[no-untyped-def]
            raise RuntimeError("driver library exploded")

        checker.check = boom  # type: ignore[method-assign,union-attr]
        await runtime.check_health_once(RES)
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Unhealthy")
        assert (
            runtime.registry.get_sample_value(
                "devplugin_health_checks_total", {"resource": RES, "result": "error"}
            )
            == 1
        )
        await fake_kubelet.wait_until(lambda: runtime.ready()[0], what="ready")


async def test_rediscovery_adds_and_removes_devices(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        fake_host.remove_pci(ids[1])
        fake_host.add_pci(
            "0000:5e:00.3",
            vendor="abcd",
            device="0001",
            class_code=0x120000,
            driver="gadget",
            numa_node=1,
        )
        fake_host.add_dev("/dev/gadget3")
        await runtime.discover_once()
        devices = await fake_kubelet.wait_for_devices(
            RES, lambda d: [x.ID for x in d] == [ids[0], "0000:5e:00.3"]
        )
        assert fake_kubelet.registration_count(RES) == 1  # no endpoint restart for a rescan
        assert len(devices) == 2


async def test_discovery_crash_keeps_previous_devices(fake_host, fake_kubelet):
    add_gadgets(fake_host, 2)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        scanner = runtime.plugin.scanner

        def boom(scan):  # type: ignore[no-untyped-def]
            raise RuntimeError("bug in discovery")

        scanner.scan = boom  # type: ignore[method-assign]
        assert not await runtime.discover_once()
        assert len(fake_kubelet.devices(RES)) == 2
        assert (
            runtime.registry.get_sample_value(
                "devplugin_discovery_errors_total", {"resource": "", "reason": "error"}
            )
            == 1
        )


async def test_hot_reload_applies_valid_config_and_keeps_old_on_invalid(fake_host, fake_kubelet):
    add_gadgets(fake_host, 2)
    path = os.path.join(os.path.dirname(fake_kubelet.directory), "gadget.json")
    write_config(path, config(RES, "example.com/old"))
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=path) as runtime:
        await fake_kubelet.wait_for_registration("example.com/old")
        old_endpoint = runtime.endpoints[RES]
        # valid: one resource removed, one added, one kept (its endpoint is not restarted)
        write_config(path, config(RES, "example.com/new"))
        await fake_kubelet.wait_for_registration("example.com/new", timeout=15)
        assert runtime.endpoints[RES] is old_endpoint
        assert fake_kubelet.registration_count(RES) == 1
        assert "example.com/old" not in runtime.resources
        # invalid: logged, counted, old config keeps serving
        write_config(path, '{"resources": [{"name": "no-slash"}]')  # broken JSON
        await fake_kubelet.wait_until(
            lambda: (
                runtime.registry.get_sample_value(
                    "devplugin_config_reloads_total", {"result": "failed"}
                )
                == 1
            ),
            15,
            "failed reload",
        )
        write_config(path, {"resources": [{"name": "bad name/x"}]})
        await fake_kubelet.wait_until(
            lambda: (
                runtime.registry.get_sample_value(
                    "devplugin_config_reloads_total", {"result": "failed"}
                )
                == 2
            ),
            15,
            "failed reload",
        )
        assert set(runtime.resources) == {RES, "example.com/new"}
        reply = await fake_kubelet.allocate(RES, ["0000:5e:00.0"])
        assert reply.devices


async def test_configmap_style_symlink_swap_reloads(fake_host, fake_kubelet, tmp_path):
    add_gadgets(fake_host, 1)
    cm = tmp_path / "cm"
    (cm / "..v1").mkdir(parents=True)
    (cm / "..v1" / "config.json").write_text(json.dumps(config(RES)))
    os.symlink("..v1", cm / "..data")
    os.symlink("..data/config.json", cm / "config.json")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=str(cm / "config.json")):
        await fake_kubelet.wait_for_registration(RES)
        (cm / "..v2").mkdir()
        (cm / "..v2" / "config.json").write_text(json.dumps(config(RES, "example.com/two")))
        os.symlink("..v2", cm / "..data_tmp")
        os.replace(cm / "..data_tmp", cm / "..data")
        await fake_kubelet.wait_for_registration("example.com/two", timeout=15)


async def test_sighup_style_reload_call(fake_host, fake_kubelet):
    add_gadgets(fake_host, 1)
    path = os.path.join(os.path.dirname(fake_kubelet.directory), "gadget.json")
    write_config(path, config(RES))
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=path, watch_config=False) as rt:
        await fake_kubelet.wait_for_registration(RES)
        assert not await rt.reload("sighup")  # unchanged content: nothing to do
        write_config(path, config(RES, "example.com/two"))
        assert await rt.reload("sighup")
        await fake_kubelet.wait_for_registration("example.com/two")


async def test_device_nodes_outside_dev_are_refused(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 1)
    fake_host.write("/etc/shadow", "secret\n")
    fake_host.symlink("/dev/sneaky", "/etc/shadow")  # a symlink escaping /dev
    doc = {
        "resources": [
            {"name": "example.com/etc", "extraNodes": ["/etc/shadow"]},
            {"name": "example.com/dotdot", "extraNodes": ["/dev/../etc/shadow"]},
            {"name": "example.com/link", "extraNodes": ["/dev/sneaky"]},
        ]
    }
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc):
        for name, why in (
            ("example.com/etc", "outside the allowed prefixes"),
            ("example.com/dotdot", "'..'"),
            ("example.com/link", "resolves to /etc/shadow"),
        ):
            devices = await fake_kubelet.wait_for_devices(name, lambda d: len(d) == 1)
            assert devices[0].health == "Unhealthy"  # never offered to pods
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await fake_kubelet.allocate(name, ids)
            assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION,)
            assert why in err.value.details()


async def test_device_node_swapped_for_an_escaping_symlink_after_discovery(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 1)
    fake_host.write("/etc/shadow", "secret\n")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        fake_host.remove("/dev/gadget0")
        fake_host.symlink("/dev/gadget0", "/etc/shadow")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ids)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "resolves to /etc/shadow" in err.value.details()


async def test_symlinks_inside_dev_are_handed_out_canonical(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 1)
    fake_host.add_dev("/dev/real/node7")
    fake_host.symlink("/dev/alias", "/dev/real/node7")
    doc = {"resources": [{"name": RES, "extraNodes": ["/dev/alias"]}]}
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc):
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        reply = await fake_kubelet.allocate(RES, ids)
        assert ("/dev/real/node7", "/dev/alias") in [
            (d.host_path, d.container_path) for d in reply.devices
        ]


async def test_mounts_are_allow_listed_and_read_only(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 1)
    fake_host.write("/opt/gadget/bin/gadget-smi", "#!/bin/sh\n")
    fake_host.write("/etc/hostname", "node\n")
    doc = {
        "resources": [
            {"name": RES, "mounts": ["/opt/gadget/bin/gadget-smi"]},
            {"name": "example.com/etc", "mounts": ["/etc"], "mountAllowlist": ["/"]},
        ]
    }
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=doc):
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        reply = await fake_kubelet.allocate(RES, ids)
        assert [(m.host_path, m.read_only) for m in reply.mounts] == [
            ("/opt/gadget/bin/gadget-smi", True)
        ]
        await fake_kubelet.wait_for_devices("example.com/etc", lambda d: len(d) == 1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate("example.com/etc", ids)
        assert "never mounted" in err.value.details()


async def test_cdi_specs_and_allocate_answers(fake_host, fake_kubelet, tmp_path):
    ids = add_gadgets(fake_host, 2)
    cdi_dir = tmp_path / "cdi"
    cdi_dir.mkdir()
    (cdi_dir / "devplugin-gadget-stale_old.json").write_text("{}")  # ours, stale
    (cdi_dir / "vendor-other.json").write_text("{}")  # not ours
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES), cdi_dir=str(cdi_dir)):
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        files = sorted(os.listdir(cdi_dir))
        assert files == ["devplugin-gadget-example.com_gadget.json", "vendor-other.json"]
        spec = json.loads((cdi_dir / files[0]).read_text())
        assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "example.com/gadget"
        assert spec["devices"][0] == {
            "name": ids[0],
            "containerEdits": {
                "deviceNodes": [
                    {"path": "/dev/gadget0", "hostPath": "/dev/gadget0", "permissions": "rw"}
                ]
            },
        }
        reply = await fake_kubelet.allocate(RES, ids)
        names = [f"example.com/gadget={i}" for i in ids]
        assert [c.name for c in reply.cdi_devices] == names
        assert dict(reply.annotations) == {
            "cdi.k8s.io/devplugin_example.com_gadget": ",".join(names)
        }
        assert not reply.devices  # raw device nodes replaced by CDI
        assert dict(reply.envs) == {"GADGETS": ",".join(ids)}  # allocation-level edits stay


def _scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def test_metrics_and_probes_over_http(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    fake_host.write(f"/sys/bus/pci/devices/{ids[1]}/gadget_ok", "0\n")
    async with run_plugin(
        SPEC, fake_host, fake_kubelet, config=config(RES), metrics_address="127.0.0.1:0"
    ) as runtime:
        port = runtime.http.port  # type: ignore[union-attr]
        await fake_kubelet.wait_for_registration(RES)
        await fake_kubelet.wait_until(lambda: runtime.ready()[0], 10, "ready")
        await fake_kubelet.allocate(RES, ids[:1])
        status, text = await asyncio.to_thread(_scrape, port)
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert samples[("devplugin_devices", (("health", "healthy"), ("resource", RES)))] == 1
        assert samples[("devplugin_devices", (("health", "unhealthy"), ("resource", RES)))] == 1
        assert samples[("devplugin_registered", (("mode", "kubelet"), ("resource", RES)))] == 1
        assert (
            samples[("devplugin_allocate_requests_total", (("resource", RES), ("result", "ok")))]
            == 1
        )
        assert samples[("devplugin_device_healthy", (("device", ids[1]), ("resource", RES)))] == 0
        assert samples[("devplugin_listandwatch_streams", (("resource", RES),))] == 1
        assert any(name == "devplugin_build_info" for name, _ in samples)
        assert not any(name.endswith("_created") for name, _ in samples)
        assert (await asyncio.to_thread(_scrape, port, "/healthz"))[0] == 200
        assert (await asyncio.to_thread(_scrape, port, "/readyz"))[0] == 200
        await fake_kubelet.restart()
        # right after a kubelet restart the resource may be unregistered: /readyz says so
        await fake_kubelet.wait_for_registration(RES, count=2)
        assert (await asyncio.to_thread(_scrape, port, "/readyz"))[0] == 200


async def test_pod_resources_attribution(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    sock = os.path.join(os.path.dirname(fake_kubelet.directory), "pod-resources", "kubelet.sock")
    async with run_plugin(
        SPEC,
        fake_host,
        fake_kubelet,
        config=config(RES),
        pod_resources_socket=sock,
        pod_resources_interval=0.05,
    ) as runtime:
        poller = runtime.podresources
        assert poller is not None
        await fake_kubelet.wait_until(lambda: poller.available is False, 10, "missing socket")
        async with FakePodResources(
            sock,
            [
                PodAssignment("ml", "trainer-0", "main", RES, (ids[1],)),
                PodAssignment("ml", "other", "main", "example.com/not-ours", ("x",)),
            ],
        ):
            await fake_kubelet.wait_until(lambda: bool(poller.assignments), 10, "attribution")
            assert (
                runtime.registry.get_sample_value(
                    "devplugin_device_allocation_info",
                    {
                        "resource": RES,
                        "device": ids[1],
                        "namespace": "ml",
                        "pod": "trainer-0",
                        "container": "main",
                    },
                )
                == 1
            )
            assert (
                runtime.registry.get_sample_value("devplugin_devices_in_use", {"resource": RES})
                == 1
            )
            assert (
                runtime.registry.get_sample_value(
                    "devplugin_device_allocation_info",
                    {
                        "resource": "example.com/not-ours",
                        "device": "x",
                        "namespace": "ml",
                        "pod": "other",
                        "container": "main",
                    },
                )
                is None
            )


async def test_fingerprint_change_triggers_rediscovery(fake_host, fake_kubelet):
    from devplugin_core import Scanner

    ids = add_gadgets(fake_host, 2)

    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 2)
        cls = type(runtime.plugin.scanner)

        def fingerprint(self, host):  # type: ignore[no-untyped-def]
            return tuple(host.listdir("/sys/bus/pci/devices"))

        cls.fingerprint = fingerprint  # type: ignore[method-assign]
        try:
            _retune(runtime, fingerprint_interval=0.05)
            await runtime.discover_once()  # takes the baseline; loops pick up the settings
            fake_host.remove_pci(ids[1])  # no rescan is due for a long time...
            await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1)  # ...the poll sees it
        finally:
            cls.fingerprint = Scanner.fingerprint  # type: ignore[method-assign]


def _self_signed(directory, name):  # type: ignore[no-untyped-def]
    import subprocess

    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _served_cn(port: int) -> str:
    import socket
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    import subprocess

    text = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-subject"],
        input=der,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return text.strip().rsplit("=", 1)[-1].strip()


async def test_metrics_over_tls_and_certificate_rotation(fake_host, fake_kubelet, tmp_path):
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    add_gadgets(fake_host, 1)
    cert, key = _self_signed(tmp_path, "first")
    async with run_plugin(
        SPEC,
        fake_host,
        fake_kubelet,
        config=config(RES),
        metrics_address="127.0.0.1:0",
        metrics_tls_cert=str(cert),
        metrics_tls_key=str(key),
    ) as runtime:
        port = runtime.http.port  # type: ignore[union-attr]
        assert await asyncio.to_thread(_served_cn, port) == "first"
        new_cert, new_key = _self_signed(tmp_path, "second")
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        assert runtime.http.reload_tls(only_if_changed=True)  # type: ignore[union-attr]
        assert await asyncio.to_thread(_served_cn, port) == "second"
        cert.write_text("garbage")
        assert not runtime.http.reload_tls()  # type: ignore[union-attr]
        assert await asyncio.to_thread(_served_cn, port) == "second"  # old one keeps serving


async def test_config_valid_gauge_follows_the_file_on_disk(fake_host, fake_kubelet):
    add_gadgets(fake_host, 1)
    path = os.path.join(os.path.dirname(fake_kubelet.directory), "gadget.json")
    write_config(path, config(RES))
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=path, watch_config=False) as rt:
        assert rt.registry.get_sample_value("devplugin_config_valid") == 1
        write_config(path, {"resources": [{"name": 1}]})
        assert not await rt.reload()
        assert rt.registry.get_sample_value("devplugin_config_valid") == 0
        write_config(path, config(RES))  # back to what is served
        assert not await rt.reload()
        assert rt.registry.get_sample_value("devplugin_config_valid") == 1


async def test_unchanged_fingerprints_skip_periodic_rescans_but_not_forever(
    fake_host, fake_kubelet
):
    from devplugin_core import Scanner

    add_gadgets(fake_host, 1)
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)) as runtime:
        await fake_kubelet.wait_for_devices(RES, lambda d: len(d) == 1)
        cls = type(runtime.plugin.scanner)
        original = cls.scan
        skipped_before_scan: list[float] = []

        def fingerprint(self, host):  # type: ignore[no-untyped-def]
            return "nothing changed"

        def scan(self, scan):  # type: ignore[no-untyped-def]
            value = runtime.registry.get_sample_value("devplugin_rescans_skipped_total")
            skipped_before_scan.append(value or 0.0)
            return original(self, scan)

        cls.fingerprint = fingerprint  # type: ignore[method-assign]
        cls.scan = scan  # type: ignore[method-assign]
        try:
            _retune(runtime, rescan_interval=0.02, fingerprint_interval=3600, max_skipped_rescans=3)
            await runtime.discover_once()  # baseline fingerprint; loops pick up the settings
            await fake_kubelet.wait_until(lambda: len(skipped_before_scan) >= 5, 20, "rescans")
        finally:
            cls.fingerprint = Scanner.fingerprint  # type: ignore[method-assign]
            cls.scan = original  # type: ignore[method-assign]
        gaps = [b - a for a, b in itertools.pairwise(skipped_before_scan[1:])]
        assert gaps and all(gap == 3 for gap in gaps), skipped_before_scan


async def test_verified_path_cache_notices_a_swap_after_allocations(fake_host, fake_kubelet):
    ids = add_gadgets(fake_host, 2)
    fake_host.write("/etc/shadow", "secret\n")
    async with run_plugin(SPEC, fake_host, fake_kubelet, config=config(RES)):
        await fake_kubelet.wait_for_devices(RES, lambda d: d[0].health == "Healthy")
        first = await fake_kubelet.allocate(RES, ids[:1])  # the path is verified and cached
        assert [d.host_path for d in first.devices] == ["/dev/gadget0"]
        fake_host.remove("/dev/gadget0")
        fake_host.symlink("/dev/gadget0", "/dev/gadget1")  # still allowed: re-verified
        second = await fake_kubelet.allocate(RES, ids[:1])
        assert [(d.host_path, d.container_path) for d in second.devices] == [
            ("/dev/gadget1", "/dev/gadget0")
        ]
        fake_host.remove("/dev/gadget0")
        fake_host.symlink("/dev/gadget0", "/etc/shadow")  # escapes: refused despite the cache
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await fake_kubelet.allocate(RES, ids[:1])
        assert "resolves to /etc/shadow" in err.value.details()
