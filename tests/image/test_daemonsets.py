"""The built image, run the way each overlay's rendered DaemonSet runs it.

For every overlay, ``kubectl kustomize deploy/<overlay>`` is parsed and its DaemonSet's
container is started with podman by :mod:`.podrun`: command, args, env, securityContext (read-only
root, ``drop: [ALL]``, no privilege escalation, privileged only where the manifest says so), user
and volume mounts all come from the rendered YAML, each hostPath mapped onto a fake node whose
``/`` is the plugin's demo host (:mod:`.node`). The fake kubelet and PodResources API run here,
outside the container, on the node's ``/var/lib/kubelet``. In the container the plugin must:

* register every resource with the fake kubelet and advertise the devices that ``devplugin
  discover`` finds on the same node from outside;
* answer Allocate with node paths (and write what it writes only where the manifest lets it);
* serve ``/metrics``, ``/readyz`` and the manifest's probe paths on the manifest's port and the
  pod IP it gets from the downward API;
* reload its ConfigMap when the kubelet swaps ``..data``;
* exit 0 within 5 s of SIGTERM, removing its sockets.

A grant the plugin needs but the manifest lacks (a capability, a writable path, a mount) shows
up here as a failed step, not on a node. rebel-npu is privileged; if this machine cannot start a
privileged container the test says so and runs it in its documented unprivileged form
(deploy/README.md, "rebel-npu without rbln-smi"), which is also tested on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from deploy.manifests import DEPLOY, container, kubectl, of_kind, one, render
from devplugin_plugins.rebel_npu.testing import FakeSmi

from devplugin_core._plugins import get_plugin
from devplugin_core.testing import FakeHost, FakeKubelet, FakePodResources, short_tempdir

from .conftest import Image
from .node import (
    FAKE_KERNEL,
    Container,
    cleanup,
    install_container_smi,
    make_char_devices,
    metric,
    to_node_paths,
)
from .podrun import PodContext, podman_run

pytestmark = pytest.mark.timeout(900)

CASES = ["rdma_shared", "sriov_net", "rebel_npu", "rebel_npu-unprivileged"]
STOP_WITHIN = 5.0


def unprivileged_form() -> tuple[dict[str, Any], dict[str, Any]]:
    """deploy/README.md's "rebel-npu without rbln-smi": the config keys (its JSON block) and the
    container securityContext (its YAML block), read from the document, not restated here."""
    text = (DEPLOY / "README.md").read_text()
    section = text[text.index("### rebel-npu without rbln-smi") :]
    config = json.loads("{" + re.search(r"```json\n(.*?)```", section, re.S)[1].strip() + "}")
    import yaml

    patch = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S)[1])
    return config, patch["securityContext"]


_privileged_ok: dict[str, str | None] = {}


def privileged_refusal(image: Image) -> str | None:
    """Why a privileged container cannot run here (None when it can)."""
    if "result" not in _privileged_ok:
        result = image.podman(
            [
                "run",
                "--rm",
                "--pull=never",
                "--ulimit",
                "host",
                "--network",
                "none",
                "--privileged",
                "--entrypoint",
                "true",
                image.name,
            ],
            check=False,
        )
        _privileged_ok["result"] = (
            None if result.returncode == 0 else (result.stderr or result.stdout).strip()[-500:]
        )
    return _privileged_ok["result"]


def discover(plugin: str, node_root: Path, config: Path) -> dict[str, list[str]]:
    """``devplugin discover --json`` of the same node from outside the container: resource ->
    device IDs that should be advertised (healthy or not)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devplugin_core",
            "discover",
            plugin,
            "--json",
            "--host-root",
            str(node_root),
            "--config-file",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("DEVPLUGIN_")},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return {r["name"]: sorted(d["id"] for d in r["devices"]) for r in report["resources"]}


@pytest.mark.parametrize("case", CASES)
async def test_daemonset_runs_in_the_image(image: Image, case: str, capsys: Any) -> None:
    kubectl()
    overlay, _, variant = case.partition("-")
    docs = render(overlay)
    daemonset = one(docs, "DaemonSet")
    configmaps = {c["metadata"]["name"]: c for c in of_kind(docs, "ConfigMap")}
    ctr = container(daemonset)
    plugin = ctr["args"][ctr["args"].index("run") + 1]
    spec = get_plugin(plugin)
    privileged = bool((ctr.get("securityContext") or {}).get("privileged"))
    extra_config: dict[str, Any] = {}
    if privileged and variant != "unprivileged":
        refusal = privileged_refusal(image)
        if refusal is not None:
            with capsys.disabled():
                print(
                    f"\n{case}: this machine cannot run a privileged container ({refusal}); "
                    "running its documented unprivileged form instead"
                )
            variant = "unprivileged"
    if variant == "unprivileged":
        extra_config, security = unprivileged_form()
        ctr["securityContext"] = security
        privileged = False

    base = short_tempdir("dpi-")
    with cleanup(base):
        node_root, scratch = Path(base) / "n", Path(base) / "s"
        scratch.mkdir()
        host = FakeHost(node_root)
        (node_root / "run").mkdir(exist_ok=True)
        (node_root / "var").mkdir(exist_ok=True)
        (node_root / "var" / "run").symlink_to("../run")
        document = to_node_paths(spec.demo(host) if spec.demo else None, node_root) or {}
        document.update(extra_config)
        config_text = json.dumps(document, indent=2)
        host_config = scratch / "discover.json"
        host_config.write_text(json.dumps(to_local_paths(document, node_root), indent=2))
        expected = discover(plugin, node_root, host_config)
        assert expected and all(expected.values()), f"the demo node advertises nothing: {expected}"

        extra: list[str] = []
        smi: FakeSmi | None = None
        if plugin == "rebel-npu" and privileged:
            kernel = install_container_smi(host, scratch)
            extra += ["--mount", f"type=bind,src={kernel},dst={FAKE_KERNEL}"]
            extra += ["--mount", f"type=bind,src={node_root / 'dev'},dst={FAKE_KERNEL}/dev"]
            smi = FakeSmi(str(host.path("/usr/bin/rbln-smi")), str(kernel / "state.json"))
        assert make_char_devices(node_root / "dev") > 0

        kubelet_dir = node_root / "var/lib/kubelet/device-plugins"
        pod_resources = node_root / "var/lib/kubelet/pod-resources"
        pod_resources.mkdir(parents=True)
        kubelet = FakeKubelet(str(kubelet_dir))
        pods = FakePodResources(str(pod_resources / "kubelet.sock"))
        await kubelet.start()
        await pods.start()
        host_network = bool(daemonset["spec"]["template"]["spec"].get("hostNetwork"))
        pod_ip = (
            f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
            if host_network
            else "127.0.0.1"  # the pod's own network namespace: its loopback
        )
        pod = PodContext(pod_ip, namespace=daemonset["metadata"]["namespace"])
        for cm in configmaps.values():
            cm.setdefault("data", {})
        config_volume = next(
            v for v in daemonset["spec"]["template"]["spec"]["volumes"] if "configMap" in v
        )
        cm_name = config_volume["configMap"]["name"]
        key = config_volume["configMap"]["items"][0]["key"]
        configmaps[cm_name]["data"] = {key: config_text}
        run = podman_run(daemonset, configmaps, node_root, scratch, pod)
        running = Container.start(image, run, scratch, extra)
        try:
            await check_container(
                running,
                run,
                plugin,
                kubelet,
                expected,
                pod_ip,
                daemonset,
                smi,
                document,
                configmaps[cm_name],
                key,
                node_root,
            )
        except BaseException:
            print(f"--- podman run {' '.join(run.args + extra)}\n--- log:\n{running.log()[-8000:]}")
            raise
        finally:
            running.remove()
            await pods.stop()
            await kubelet.stop()


def to_local_paths(document: Any, root: Path) -> Any:
    """Node paths in the config back to this machine's (for ``discover`` outside the
    container): only the values the demo had put under the fake host."""
    if isinstance(document, dict):
        return {k: to_local_paths(v, root) for k, v in document.items()}
    if isinstance(document, list):
        return [to_local_paths(v, root) for v in document]
    if isinstance(document, str) and document.startswith("/run/"):
        return str(root) + document
    return document


async def check_container(
    running: Container,
    run: Any,
    plugin: str,
    kubelet: FakeKubelet,
    expected: dict[str, list[str]],
    pod_ip: str,
    daemonset: dict[str, Any],
    smi: FakeSmi | None,
    document: dict[str, Any],
    configmap: dict[str, Any],
    key: str,
    node_root: Path,
) -> None:
    port = run.ports["metrics"]
    await running.wait_http(pod_ip, port, "/readyz", timeout=90)

    # registered and advertising what discover sees from outside
    for resource, ids in expected.items():
        await kubelet.wait_for_registration(resource, timeout=30)
        await kubelet.wait_for_devices(
            resource, lambda devices, ids=ids: sorted(d.ID for d in devices) == ids, timeout=30
        )
    assert set(kubelet.connections) == set(expected)
    for reg in kubelet.registrations:
        assert "/" not in reg.endpoint and reg.endpoint.endswith(".sock")

    # Allocate: one healthy device per resource; every path handed out is a node path that
    # exists on the node (never /host/..., never this machine's fake-root path)
    container_devices = []  # of container resources (passthrough ones get no RSD group)
    for resource in expected:
        healthy = [d.ID for d in kubelet.devices(resource) if d.health == "Healthy"]
        assert healthy, (
            f"{resource}: no healthy device in the container: {kubelet.health(resource)}"
        )
        reply = await kubelet.allocate(resource, healthy[:1], timeout=30)
        assert reply.devices or reply.envs or reply.mounts or reply.cdi_devices, resource
        if not resource.endswith("_PT"):
            container_devices.extend(reply.devices)
        for dev in reply.devices:
            assert dev.host_path.startswith("/dev/"), dev
            assert (node_root / dev.host_path.lstrip("/")).exists(), dev.host_path
        for mount in reply.mounts:
            assert not mount.host_path.startswith(("/host/", str(node_root))), mount
            assert (node_root / mount.host_path.lstrip("/")).exists(), mount.host_path
        if plugin == "sriov-net":
            written = list((node_root / "var/run/k8s.cni.cncf.io/devinfo/dp").iterdir())
            assert written, "sriov-net wrote no device-info file through its hostPath mount"
        if smi is not None:
            assert any(c[:2] == ["group", "-c"] for c in smi.calls()), smi.calls()
            assert any(d.host_path.startswith("/dev/rsd") for d in container_devices)

    # /metrics, /readyz and the manifest's probes, on the pod IP and the manifest's port
    metrics = (await asyncio.to_thread(running.http_get, pod_ip, port, "/metrics"))[1]
    assert metric(metrics, "devplugin_config_valid") == 1.0, metrics[:2000]
    for resource in expected:
        assert metric(metrics, "devplugin_registered", {"resource": resource}) == 1.0, resource
    c = container(daemonset)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = c[probe]["httpGet"]
        probe_port = run.ports[http["port"]] if isinstance(http["port"], str) else http["port"]
        assert probe_port == port
        status, body = await asyncio.to_thread(running.http_get, pod_ip, probe_port, http["path"])
        assert status == 200, f"{probe} {http['path']}: {status} {body[:300]}"

    # the kubelet's ConfigMap update: a new ..data directory swapped in
    reloads = metric(metrics, "devplugin_config_reloads_total", {"result": "ok"}) or 0.0
    edited = dict(document)
    if plugin == "rdma-shared":
        first = edited["configList"][0]
        edited["configList"] = [{**first, "rdmaHcaMax": 7}, *edited["configList"][1:]]
    next(iter(run.configmaps.values())).write({key: json.dumps(edited, indent=4)})
    deadline = time.monotonic() + 30
    while True:
        metrics = (await asyncio.to_thread(running.http_get, pod_ip, port, "/metrics"))[1]
        now = metric(metrics, "devplugin_config_reloads_total", {"result": "ok"}) or 0.0
        if now > reloads:
            break
        assert time.monotonic() < deadline, "the edited ConfigMap was never reloaded"
        await asyncio.sleep(0.3)
    if plugin == "rdma-shared":
        resource = next(iter(expected))
        await kubelet.wait_for_devices(resource, lambda d: len(d) == 7, timeout=30)

    # SIGTERM: exit 0 within 5 s, sockets gone
    code, took = await asyncio.to_thread(running.terminate, STOP_WITHIN + 5)
    assert code == 0 and took < STOP_WITHIN, f"exit {code} after {took:.1f}s of SIGTERM"
    left = sorted(p.name for p in kubelet_socket_dir(node_root).iterdir() if p.is_socket())
    assert left == ["kubelet.sock"], f"sockets left behind: {left}"
    assert "Traceback" not in running.log(), running.log()[-4000:]


def kubelet_socket_dir(node_root: Path) -> Path:
    return node_root / "var/lib/kubelet/device-plugins"
