"""Metrics a real Prometheus accepts, alerts a real Prometheus evaluates.

* ``promtool check metrics`` is clean on every plugin's ``/metrics``;
* ``promtool check rules`` and ``promtool test rules`` pass on every overlay's PrometheusRule;
* a real Prometheus server (the Debian ``prometheus`` package) scrapes all three plugins, each a
  real ``devplugin run`` process on a simulated node, with the overlay's rules loaded and the
  PodMonitor's scrape settings; the query API shows framework and plugin metrics with the right
  labels, per-pod attribution from the fake PodResources API, every rule evaluating cleanly, and
  DevicePluginNotRegistered going pending when the kubelet goes away.

``make test`` installs Prometheus (``make sysdeps``, root with apt); elsewhere these tests skip
and say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devplugin_core.testing import FakePodResources, PodAssignment

from .harness import OVERLAYS, PLUGINS, free_port, http_get, simulated_node, wait_for
from .manifests import one, render

PLUGIN_PREFIX = {
    "rdma-shared": "devplugin_rdma_",
    "sriov-net": "devplugin_sriov_",
    "rebel-npu": "devplugin_npu_",
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} not installed (Debian package 'prometheus'; `make sysdeps` installs it "
            "when run as root with apt)"
        )
    return path


def rule_groups(plugin: str) -> dict:
    return {"groups": one(render(OVERLAYS[plugin]), "PrometheusRule")["spec"]["groups"]}


def podmonitor_endpoint(plugin: str) -> dict:
    return one(render(OVERLAYS[plugin]), "PodMonitor")["spec"]["podMetricsEndpoints"][0]


def job(plugin: str) -> str:
    return f"devplugin-{plugin}"


# -- promtool -------------------------------------------------------------------------------------
@pytest.mark.parametrize("plugin", PLUGINS)
def test_promtool_check_rules(plugin, tmp_path):
    promtool = tool("promtool")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(plugin)))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def rule_unit_tests(plugin: str) -> dict:
    """promtool unit tests of the common alerts, in the label shape the monitors produce."""
    j = job(plugin)
    target = f'job="{j}",namespace="{j}",pod="{j}-x7k2p",node="node-a"'
    who = {"namespace": j, "pod": f"{j}-x7k2p", "node": "node-a"}
    resource = "example.com/dev"
    return {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'up{{{target},instance="10.0.0.5:9"}}', "values": "1 0x10"},
                    {
                        "series": f'devplugin_registered{{{target},resource="{resource}",'
                        'mode="kubelet"}',
                        "values": "1 1 0x10",
                    },
                    {
                        "series": f'devplugin_devices{{{target},resource="{resource}",'
                        'health="healthy"}',
                        "values": "3 3 0x10",
                    },
                    {
                        "series": f'devplugin_devices{{{target},resource="{resource}",'
                        'health="unhealthy"}',
                        "values": "0 0 3x10",
                    },
                    {
                        "series": f"devplugin_config_valid{{{target}}}",
                        "values": "1 1 1 0x10",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "DevicePluginNotRegistered", "exp_alerts": []},
                    {"eval_time": "1m", "alertname": "DevicePluginDown", "exp_alerts": []},
                    {
                        "eval_time": "8m",
                        "alertname": "DevicePluginDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    **who,
                                    "job": j,
                                    "instance": "10.0.0.5:9",
                                    "severity": "critical",
                                }
                            }
                        ],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "DevicePluginNotRegistered",
                        "exp_alerts": [
                            {"exp_labels": {**who, "resource": resource, "severity": "critical"}}
                        ],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "DevicePluginDevicesUnhealthy",
                        "exp_alerts": [
                            {"exp_labels": {**who, "resource": resource, "severity": "warning"}}
                        ],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "DevicePluginNoHealthyDevices",
                        "exp_alerts": [
                            {"exp_labels": {**who, "resource": resource, "severity": "critical"}}
                        ],
                    },
                    {
                        "eval_time": "6m",
                        "alertname": "DevicePluginConfigReloadFailing",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "9m",
                        "alertname": "DevicePluginConfigReloadFailing",
                        "exp_alerts": [{"exp_labels": {"job": j, **who, "severity": "warning"}}],
                    },
                ],
            }
        ],
    }


@pytest.mark.parametrize("plugin", PLUGINS)
def test_promtool_test_rules(plugin, tmp_path):
    promtool = tool("promtool")
    groups = rule_groups(plugin)
    for group in groups["groups"]:  # labels and timing here; templates in the real server test
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(rule_unit_tests(plugin)))
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_promtool_check_metrics_on_every_plugin():
    promtool = tool("promtool")
    async with simulated_node(PLUGINS) as (_, kubelet, pods, processes):
        for n, resource in enumerate(sorted(kubelet.connections)):
            device = kubelet.devices(resource)[0].ID
            pods.assignments.append(PodAssignment("ml", f"job-{n}", "main", resource, (device,)))
        for name, plugin in processes.items():

            def attributed(p=plugin):
                text = p.metrics()
                return text if "devplugin_device_allocation_info{" in text else None

            text = await wait_for(attributed, 15, f"{name} attribution")
            result = await asyncio.to_thread(
                subprocess.run,
                [promtool, "check", "metrics"],
                input=text,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"
            assert not result.stdout.strip(), f"{name}: promtool lint:\n{result.stdout}"
            assert PLUGIN_PREFIX[name] in text


# -- a real Prometheus ----------------------------------------------------------------------
class Prometheus:
    def __init__(self, binary: str, directory: Path, config: dict) -> None:
        self.directory = directory
        self.port = free_port()
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        self.args = [
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Prometheus]:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield self
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str) -> object:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}", 5.0)
        if status != 200:
            return None
        reply = json.loads(body)
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        return data["result"] if isinstance(data, dict) else []

    async def wait(self, what: str, predicate, timeout: float = 20.0):
        try:
            return await wait_for(predicate, timeout, what, interval=0.2)
        except TimeoutError as err:
            raise AssertionError(f"{err}\nprometheus log:\n{self.log()}") from None


def scrape_config(plugin: str, port: int) -> dict:
    """What the Prometheus Operator makes of our PodMonitor for one plugin pod: job from
    jobLabel, the pod's namespace/pod/container/node target labels, honor_labels."""
    endpoint = podmonitor_endpoint(plugin)
    j = job(plugin)
    return {
        "job_name": j,
        "honor_labels": endpoint["honorLabels"],
        "metrics_path": endpoint["path"],
        "scheme": endpoint["scheme"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {
                    "namespace": j,
                    "pod": f"{j}-x7k2p",
                    "container": "devplugin",
                    "node": "node-a",
                },
            }
        ],
    }


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(devplugin_[a-z0-9_]+|up)\b", expr))


def resources_of(metrics: str) -> list[str]:
    """The resources a plugin registered, from its own /metrics."""
    return sorted(
        set(re.findall(r'^devplugin_registered\{[^}]*resource="([^"]+)"[^}]*\} 1', metrics, re.M))
    )


async def test_real_prometheus_scrapes_plugins_and_evaluates_alerts(tmp_path):
    binary = tool("prometheus")
    # PodResources appears only after the plugins started: attribution must recover by itself
    async with simulated_node(PLUGINS, pod_resources=False) as (node, kubelet, _, processes):
        rule_files = []
        for plugin in PLUGINS:
            path = tmp_path / f"rules-{plugin}.yaml"
            path.write_text(yaml.safe_dump(rule_groups(plugin)))
            rule_files.append(str(path))
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            "rule_files": rule_files,
            "scrape_configs": [scrape_config(p, processes[p].port) for p in PLUGINS],
        }
        held: dict[str, tuple[str, str]] = {}
        pods = FakePodResources(node.pod_socket)
        for n, resource in enumerate(sorted(kubelet.connections)):
            if not kubelet.devices(resource):
                continue
            device = kubelet.devices(resource)[-1].ID
            pods.assignments.append(
                PodAssignment("ml", f"trainer-{n}", "main", resource, (device,))
            )
            held[resource] = (f"trainer-{n}", device)
        prometheus = Prometheus(binary, tmp_path, config)
        async with pods:
            with prometheus.running() as prom:
                await prom.wait(
                    "three healthy targets",
                    lambda: len(prom.query('up{job=~"devplugin-.+"} == 1')) == 3,
                )
                await prom.wait(
                    "attribution of every held device",
                    lambda: len(prom.query("devplugin_device_allocation_info")) == len(held),
                )
                registered = {p: resources_of(processes[p].metrics()) for p in PLUGINS}
                assert sorted(r for rs in registered.values() for r in rs) == sorted(held)
                for plugin in PLUGINS:
                    j = job(plugin)
                    # framework metrics, with the plugin pod's target labels
                    (build,) = prom.query(f'devplugin_build_info{{job="{j}"}}')
                    labels = build["metric"]
                    assert labels["plugin"] == plugin and labels["api_version"] == "v1beta1"
                    assert labels["namespace"] == j and labels["pod"] == f"{j}-x7k2p"
                    assert labels["node"] == "node-a"
                    assert registered[plugin], f"{plugin} registered nothing"
                    for resource in registered[plugin]:
                        (reg,) = prom.query(
                            f'devplugin_registered{{job="{j}",resource="{resource}"}}'
                        )
                        assert reg["metric"]["mode"] == "kubelet" and reg["value"][1] == "1"
                        healthy = sum(1 for d in kubelet.devices(resource) if d.health == "Healthy")
                        (devices,) = prom.query(
                            f'devplugin_devices{{job="{j}",resource="{resource}",health="healthy"}}'
                        )
                        assert float(devices["value"][1]) == healthy
                        # per-pod attribution: the workload's identity wins (honor_labels)
                        pod, device = held[resource]
                        (info,) = prom.query(
                            f'devplugin_device_allocation_info{{job="{j}",resource="{resource}"}}'
                        )
                        assert info["metric"]["namespace"] == "ml"
                        assert info["metric"]["pod"] == pod
                        assert info["metric"]["container"] == "main"
                        assert info["metric"]["device"] == device
                        assert info["metric"]["node"] == "node-a"
                        (in_use,) = prom.query(
                            f'devplugin_devices_in_use{{job="{j}",resource="{resource}"}}'
                        )
                        assert in_use["value"][1] == "1" and in_use["metric"]["namespace"] == j
                    # the plugin's own metrics
                    own = prom.query(f'count({{__name__=~"{PLUGIN_PREFIX[plugin]}.+",job="{j}"}})')
                    assert own and float(own[0]["value"][1]) > 0, f"no {plugin} metrics"
                    # the missing socket at start was counted, not fatal
                    assert prom.query(
                        f'devplugin_podresources_errors_total{{job="{j}",code="unavailable"}} > 0'
                    )

                # every rule evaluates without error, and refers to metrics that exist
                def evaluated():
                    data = prom.api("rules")
                    if not data:
                        return None
                    rules = [r for g in data["groups"] for r in g["rules"]]
                    done = all(
                        r.get("lastEvaluation", "").startswith("2")
                        and not r["lastEvaluation"].startswith("0001")
                        for r in rules
                    )
                    return rules if done and len(data["groups"]) == 3 else None

                rules = await prom.wait("every rule evaluated", evaluated)
                names = set(prom.api("label/__name__/values"))
                for rule in rules:
                    assert rule["health"] == "ok", rule
                    assert metric_names(rule["query"]) <= names, rule["query"]
                firing = [a for r in rules for a in r.get("alerts", [])]
                assert not firing, firing

                # the kubelet goes away: every resource unregistered -> alert pending
                await kubelet.stop()

                def pending():
                    data = prom.api("alerts")
                    alerts = data["alerts"] if data else []
                    found = {
                        a["labels"]["resource"]: a
                        for a in alerts
                        if a["labels"]["alertname"] == "DevicePluginNotRegistered"
                        and a["state"] == "pending"
                    }
                    if set(found) >= every:
                        return found
                    return None

                every = {r for rs in registered.values() for r in rs}
                found = await prom.wait(
                    "DevicePluginNotRegistered pending for every resource", pending
                )
                for resource, alert in found.items():
                    assert alert["labels"]["node"] == "node-a"
                    assert alert["labels"]["severity"] == "critical"
                    assert alert["annotations"]["summary"] == (
                        f"{resource} is not registered with the kubelet on node-a"
                    )
