"""deploy/: every overlay renders offline, validates against Kubernetes 1.32, and follows the
least-privilege rules of the kubelet contract (§5) exactly as deploy/README.md states them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .manifests import (
    COMPONENTS,
    DEPLOY,
    HOST_ROOT,
    MONITORING,
    OVERLAYS,
    PLUGIN_COMPONENTS,
    PLUGINS,
    PORTS,
    container,
    env_flag,
    env_map,
    of_kind,
    one,
    render,
    render_on_top,
    render_with_components,
    run_flags,
)
from .monitoring_schemas import validate_monitoring

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate not installed (pip install -e '.[dev]')"
)

K8S_VERSION = "1.32"

#: host path -> (container path, writable); what every plugin mounts
COMMON_MOUNTS = {
    "/var/lib/kubelet/device-plugins": ("/var/lib/kubelet/device-plugins", True),
    "/var/lib/kubelet/pod-resources": ("/var/lib/kubelet/pod-resources", False),
    "/sys": (f"{HOST_ROOT}/sys", False),
    "/dev": (f"{HOST_ROOT}/dev", False),
}
#: the only additional host paths each plugin may mount
PLUGIN_MOUNTS = {
    "rdma-shared": {},
    "sriov-net": {
        "/var/run/k8s.cni.cncf.io/devinfo/dp": ("/var/run/k8s.cni.cncf.io/devinfo/dp", True),
    },
    "rebel-npu": {
        "/usr/bin": (f"{HOST_ROOT}/usr/bin", False),
        "/var/run/rbln-device-plugin.lock": ("/var/run/rbln-device-plugin.lock", True),
    },
}
#: host paths the optional components add
COMPONENT_MOUNTS = {
    "/var/lib/kubelet/plugins_registry": ("/var/lib/kubelet/plugins_registry", True),
    "/var/run/cdi": ("/var/run/cdi", True),
}
#: host paths with submounts that a read-only bind mount would leave writable
RECURSIVE_RO = ("/sys", "/dev")
#: plugins that may (and must explain why they) run privileged
PRIVILEGED = {"rebel-npu"}
HOST_NETWORK = {"sriov-net"}
UPSTREAM_TOLERATIONS = {
    "rdma-shared": [],
    "sriov-net": [
        {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule",
        },
    ],
    "rebel-npu": [
        {"operator": "Exists", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute"},
    ],
}
CONFIGMAPS = {  # upstream's ConfigMap name and mount directory
    "rdma-shared": ("rdma-devices", "/k8s-rdma-shared-dev-plugin"),
    "sriov-net": ("sriovdp-config", "/etc/pcidp"),
    "rebel-npu": ("rbln-device-plugin-config", "/etc/pcidp"),
}
REQUIRED_ALERTS = (
    "DevicePluginDown",
    "DevicePluginNotRegistered",
    "DevicePluginDevicesUnhealthy",
    "DevicePluginConfigReloadFailing",
)

params = pytest.mark.parametrize("plugin", PLUGINS)


def docs_of(plugin: str) -> tuple[dict, ...]:
    return render(OVERLAYS[plugin])


def daemonset(plugin: str) -> dict:
    return one(docs_of(plugin), "DaemonSet")


def pod_spec(plugin: str) -> dict:
    return daemonset(plugin)["spec"]["template"]["spec"]


def quantity(text: str | int) -> float:
    """Kubernetes quantity -> base units (cores or bytes), for the suffixes deploy/ uses."""
    text = str(text)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text).groups()
    return float(number) * units[unit]


# -- rendering and schemas --------------------------------------------------------------------
def test_every_overlay_folder_is_a_plugin():
    folders = {p.parent.name for p in DEPLOY.glob("*/kustomization.yaml")}
    assert folders == {*OVERLAYS.values(), "base"}


@params
def test_overlay_renders_one_complete_deployment(plugin):
    docs = docs_of(plugin)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "DaemonSet",
            "Service",
            "PodMonitor",
            "PrometheusRule",
        ]
    )
    namespace = one(docs, "Namespace")["metadata"]["name"]
    assert namespace == f"devplugin-{plugin}"
    name = f"devplugin-{plugin}"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]
        if doc["kind"] not in ("Namespace", "ConfigMap"):
            assert doc["metadata"]["name"] == name, doc["kind"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == name


@params
def test_overlay_validates_against_kubernetes_1_32(plugin):
    for doc in docs_of(plugin):
        if doc["apiVersion"] == MONITORING:
            validate_monitoring(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@params
@pytest.mark.parametrize("component", COMPONENTS)
def test_components_render_and_validate(plugin, component, tmp_path):
    docs = render_with_components(tmp_path, OVERLAYS[plugin], [component])
    for doc in docs:
        if doc["apiVersion"] == MONITORING:
            validate_monitoring(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    check_host_mounts(plugin, one(docs, "DaemonSet"), COMPONENT_MOUNTS)
    check_env_is_flags(plugin, one(docs, "DaemonSet"))
    monitors = of_kind(docs, "PodMonitor") + of_kind(docs, "ServiceMonitor")
    assert len(monitors) == 1
    check_monitor_targets(docs, monitors[0])


def test_all_components_together(tmp_path):
    docs = render_with_components(tmp_path, "sriov_net", COMPONENTS)
    c = container(one(docs, "DaemonSet"))
    env = env_map(c)
    assert env["DEVPLUGIN_REGISTRATION_MODE"]["value"] == "watcher"
    assert env["DEVPLUGIN_CDI_DIR"]["value"] == "/var/run/cdi"
    assert env["DEVPLUGIN_METRICS_TLS_CERT"]["value"].startswith("/etc/devplugin/metrics-tls/")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
    monitor = one(docs, "ServiceMonitor")
    assert not of_kind(docs, "PodMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"]["name"] == "devplugin-metrics-tls"
    volume = next(
        v
        for v in one(docs, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "metrics-tls"
    )
    assert volume["secret"]["secretName"] == "devplugin-metrics-tls"


def test_every_component_folder_is_tested():
    folders = {p.parent.name for p in (DEPLOY / "components").glob("*/kustomization.yaml")}
    own = {c for components in PLUGIN_COMPONENTS.values() for c in components}
    assert folders == {*COMPONENTS, *own}


PLUGIN_COMPONENT_PARAMS = [
    (plugin, component, inside)
    for plugin, components in PLUGIN_COMPONENTS.items()
    for component in components
    for inside in ((), *((c,) for c in COMPONENTS))
]


@pytest.mark.parametrize(("plugin", "component", "inside"), PLUGIN_COMPONENT_PARAMS)
def test_plugin_components_render_and_validate(plugin, component, inside, tmp_path):
    """A plugin's own component, on top of its overlay (alone, or with a generic component
    enabled inside the overlay): valid, and every rule of the plain overlay still holds."""
    docs = render_on_top(tmp_path, OVERLAYS[plugin], [component], inside)
    for doc in docs:
        if doc["apiVersion"] == MONITORING:
            validate_monitoring(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    ds = one(docs, "DaemonSet")
    check_host_mounts(plugin, ds, COMPONENT_MOUNTS)
    check_env_is_flags(plugin, ds)
    monitors = of_kind(docs, "PodMonitor") + of_kind(docs, "ServiceMonitor")
    assert len(monitors) == 1
    check_monitor_targets(docs, monitors[0])
    assert ds["metadata"]["name"] == f"devplugin-{plugin}"


def test_rebel_npu_vm_passthrough_is_unprivileged(tmp_path):
    """vm-passthrough nodes: NPUs bound to vfio-pci for KubeVirt, without rbln-smi, so the
    container drops the privileged profile, the tool and lock mounts, and the RSD alert."""
    docs = render_on_top(tmp_path, "rebel_npu", ["rebel-npu-vm-passthrough"])
    ds = one(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    sc = container(ds)["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    host_paths = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host_paths == set(COMMON_MOUNTS)  # no /usr/bin, no RSD lock file
    assert spec["nodeSelector"]["rebellions.ai/npu.workload.config"] == "vm-passthrough"
    assert spec["tolerations"] == UPSTREAM_TOLERATIONS["rebel-npu"]
    text = one(docs, "ConfigMap")["data"]["config.json"]
    document = json.loads(text)
    assert "resourceList" not in document  # zero-config: *_PT per product present
    assert document["rsdGroups"] == "off" and document["rblnSmiInterval"] == 0
    assert document["rblnStatHostPath"] == document["rblnSmiHostPath"] == ""
    path = tmp_path / "config.json"
    path.write_text(text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devplugin_core",
            "validate",
            "rebel-npu",
            "--config-file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr
    rule = one(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "DevicePluginNpuRsdGroupsDisabled" not in alerts
    assert set(REQUIRED_ALERTS) <= alerts
    # the plain overlay is untouched: still privileged, with rbln-smi
    assert container(daemonset("rebel-npu"))["securityContext"]["privileged"] is True
    comments = (
        DEPLOY / "components" / "rebel-npu-vm-passthrough" / "kustomization.yaml"
    ).read_text()
    assert "privileged: false" in comments and "device cgroup" in comments


# -- the DaemonSet ------------------------------------------------------------------------------
@params
def test_daemonset_scheduling_and_rollout(plugin):
    ds = daemonset(plugin)
    spec = pod_spec(plugin)
    assert spec["priorityClassName"] == "system-node-critical"
    strategy = ds["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxSurge"] == 0
    assert strategy["rollingUpdate"]["maxUnavailable"] == 1
    assert spec["nodeSelector"]["kubernetes.io/os"] == "linux"
    assert spec.get("tolerations", []) == UPSTREAM_TOLERATIONS[plugin]


@params
def test_service_account_token_never_mounted(plugin):
    assert one(docs_of(plugin), "ServiceAccount")["automountServiceAccountToken"] is False
    spec = pod_spec(plugin)
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == f"devplugin-{plugin}"
    assert spec["enableServiceLinks"] is False


@params
def test_namespace_pod_security_level(plugin):
    labels = one(docs_of(plugin), "Namespace")["metadata"]["labels"]
    # hostPath (every plugin), hostNetwork (sriov-net) and privileged (rebel-npu) are only
    # admitted at the "privileged" level
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"


@params
def test_security_context(plugin):
    spec = pod_spec(plugin)
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsUser"] == 0 and pod_sc["runAsNonRoot"] is False
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["hostNetwork"] is (plugin in HOST_NETWORK)
    assert spec["hostPID"] is False and spec["hostIPC"] is False
    assert len(spec["containers"]) == 1 and not spec.get("initContainers")
    sc = container(daemonset(plugin))["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "add" not in sc.get("capabilities", {})
    if plugin in PRIVILEGED:
        assert sc["privileged"] is True
        # the API rejects allowPrivilegeEscalation: false together with privileged: true
        assert "allowPrivilegeEscalation" not in sc
    else:
        assert sc["privileged"] is False
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}


@params
def test_extra_privileges_are_explained_in_the_manifest(plugin):
    patch = (DEPLOY / OVERLAYS[plugin] / "daemonset-patch.yaml").read_text()
    comments = "\n".join(line for line in patch.splitlines() if line.lstrip().startswith("#"))
    if plugin in PRIVILEGED:
        assert "privileged: true" in comments
        assert "rbln-smi" in comments and "device cgroup" in comments
    if plugin in HOST_NETWORK:
        assert "hostNetwork: true" in comments and "netlink" in comments
    for host_path in PLUGIN_MOUNTS[plugin]:
        assert host_path in comments, f"{host_path} mounted without a comment saying why"


def check_host_mounts(plugin: str, ds: dict, extra: dict | None = None) -> None:
    spec = ds["spec"]["template"]["spec"]
    allowed = {**COMMON_MOUNTS, **PLUGIN_MOUNTS[plugin], **(extra or {})}
    host_volumes = {v["name"]: v["hostPath"] for v in spec["volumes"] if "hostPath" in v}
    mounts = container(ds)["volumeMounts"]
    mounted = set()
    for mount in mounts:
        assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
        host = host_volumes.get(mount["name"])
        if host is None:
            continue
        path = host["path"]
        assert path in allowed, f"{plugin}: host path {path} is not on the allow-list"
        target, writable = allowed[path]
        assert mount["mountPath"] == target, f"{path} must be mounted at {target}"
        assert mount.get("readOnly", False) is (not writable), f"{path} readOnly"
        assert "mountPropagation" not in mount
        if path in RECURSIVE_RO:
            assert mount["recursiveReadOnly"] == "IfPossible"
        assert host.get("type"), f"{path}: hostPath without a type"
        mounted.add(path)
    assert mounted == {v["path"] for v in host_volumes.values()}, "unmounted hostPath volume"
    assert set(COMMON_MOUNTS) <= mounted
    # the host root given to the plugin is where /sys and /dev are
    assert env_map(container(ds))["DEVPLUGIN_HOST_ROOT"]["value"] == HOST_ROOT


@params
def test_host_mounts_are_narrow(plugin):
    check_host_mounts(plugin, daemonset(plugin))
    spec = pod_spec(plugin)
    others = [v for v in spec["volumes"] if "hostPath" not in v]
    assert {v["name"] for v in others} == {"config", "tmp"}
    tmp = next(v for v in others if v["name"] == "tmp")
    assert tmp["emptyDir"]["medium"] == "Memory"


@params
def test_metrics_endpoint_bound_to_the_pod_ip(plugin):
    c = container(daemonset(plugin))
    port = PORTS[plugin]
    assert c["args"] == ["run", plugin, "--metrics-address", f"$(POD_IP):{port}"]
    env = env_map(c)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "DEVPLUGIN_METRICS_ADDRESS" not in env
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    service = one(docs_of(plugin), "Service")
    assert service["spec"]["ports"][0]["port"] == port


def check_env_is_flags(plugin: str, ds: dict) -> None:
    c = container(ds)
    flags = run_flags(plugin)
    assert {"--config-file", "--host-root", "--metrics-address"} <= flags
    defined: list[str] = []
    for item in c.get("env", []):
        name = item["name"]
        if name.startswith("DEVPLUGIN_"):
            assert env_flag(name) in flags, f"{name}: `devplugin run {plugin}` has no such flag"
        # $(VAR) in an env value only expands when VAR is defined earlier in the list
        for ref in re.findall(r"\$\((\w+)\)", item.get("value", "")):
            assert ref in defined, f"{name} uses $({ref}) before it is defined"
        defined.append(name)
    for ref in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
        assert ref in defined, f"args use $({ref}), which is not in env"
    assert c["args"][:2] == ["run", plugin]
    for flag in c["args"][2::2]:
        assert flag in flags


@params
def test_environment_sets_real_flags(plugin):
    check_env_is_flags(plugin, daemonset(plugin))


@params
def test_probes_use_the_framework_endpoints(plugin):
    c = container(daemonset(plugin))
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # discovery (30 s timeout) and the first health check run before the endpoint listens
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def measured_peak_mib() -> dict[str, float]:
    """The "peak RSS" column of the measurement table in deploy/README.md."""
    text = (DEPLOY / "README.md").read_text()
    peaks = {}
    for plugin in PLUGINS:
        row = re.search(rf"^\| {re.escape(plugin)} \|(.*)$", text, re.M)
        assert row, f"deploy/README.md has no measurement row for {plugin}"
        cells = [c.strip() for c in row.group(1).split("|")]
        peaks[plugin] = float(cells[3].split()[0])
    return peaks


@params
def test_resources_sized_from_measurements(plugin):
    resources = container(daemonset(plugin))["resources"]
    for kind in ("cpu", "memory"):
        assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind])
    peak = measured_peak_mib()[plugin] * 2**20
    # requests cover what was measured; limits leave room for bigger nodes and bursts
    assert quantity(resources["requests"]["memory"]) >= peak
    assert quantity(resources["limits"]["memory"]) >= 2.5 * peak


# -- config ---------------------------------------------------------------------------------------
@params
def test_configmap_is_mounted_where_the_plugin_reads_it(plugin, tmp_path):
    name, directory = CONFIGMAPS[plugin]
    docs = docs_of(plugin)
    configmap = one(docs, "ConfigMap")
    assert configmap["metadata"]["name"] == name
    spec = pod_spec(plugin)
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == name
    assert volume["configMap"]["items"] == [{"key": "config.json", "path": "config.json"}]
    mount = next(m for m in container(daemonset(plugin))["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == directory and mount["readOnly"] is True
    # given explicitly: the framework watches (and hot-reloads) an explicit --config-file
    env = env_map(container(daemonset(plugin)))
    assert env["DEVPLUGIN_CONFIG_FILE"]["value"] == f"{directory}/config.json"
    # the example config is valid for our plugin
    path = tmp_path / "config.json"
    path.write_text(configmap["data"]["config.json"])
    json.loads(path.read_text())
    result = subprocess.run(
        [sys.executable, "-m", "devplugin_core", "validate", plugin, "--config-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr  # upstream's keys are all understood


def test_rdma_configmap_is_the_rdma_engineers_file():
    # deploy/rdma_shared/configmap.yaml is owned by the rdma-shared plugin; the overlay only
    # re-namespaces it
    source = yaml.safe_load((DEPLOY / "rdma_shared" / "configmap.yaml").read_text())
    rendered = one(docs_of("rdma-shared"), "ConfigMap")
    assert rendered["data"] == source["data"]
    assert rendered["metadata"]["name"] == source["metadata"]["name"]


# -- Service and monitors -------------------------------------------------------------------
def check_monitor_targets(docs, monitor) -> None:
    ds = one(docs, "DaemonSet")
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    if monitor["kind"] == "PodMonitor":
        endpoints = monitor["spec"]["podMetricsEndpoints"]
        selected = pod_labels
    else:
        endpoints = monitor["spec"]["endpoints"]
        selected = service["metadata"]["labels"]
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert selected.get(key) == value, f"{monitor['kind']} selector {key}={value}"
    job = selected[monitor["spec"]["jobLabel"]]
    assert job == ds["metadata"]["name"]
    ports = {p["name"] for p in container(ds)["ports"]} | {
        p["name"] for p in service["spec"]["ports"]
    }
    for endpoint in endpoints:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
        assert endpoint["honorLabels"] is True
        assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in (
            endpoint["relabelings"]
        )
    # the alerts select the job the monitor produces
    rule = one(docs, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert f'job="{job}"' in r["expr"], r["alert"]


@params
def test_service_and_podmonitor_select_the_plugin_pods(plugin):
    docs = docs_of(plugin)
    service = one(docs, "Service")
    pod_labels = daemonset(plugin)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    check_monitor_targets(docs, one(docs, "PodMonitor"))


# -- alerts -----------------------------------------------------------------------------------
@params
def test_prometheus_rule_has_the_alerts_that_matter(plugin):
    rule = one(docs_of(plugin), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(REQUIRED_ALERTS) <= set(alerts)
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
    assert "devplugin_registered" in alerts["DevicePluginNotRegistered"]["expr"]
    assert 'health="unhealthy"' in alerts["DevicePluginDevicesUnhealthy"]["expr"]
    assert "devplugin_config_valid" in alerts["DevicePluginConfigReloadFailing"]["expr"]


def test_base_is_not_an_overlay():
    # the base names no plugin: applying it alone would start "devplugin run PLUGIN"
    text = Path(DEPLOY / "base" / "daemonset.yaml").read_text()
    assert '"PLUGIN"' in text


def test_readme_rebel_npu_without_rbln_smi_config_is_valid(tmp_path):
    readme = (DEPLOY / "README.md").read_text()
    section = readme.split("### rebel-npu without rbln-smi", 1)[1]
    snippet = re.search(r"```json\n(.*?)\n```", section, re.S).group(1)
    path = tmp_path / "config.json"
    path.write_text("{" + snippet + "}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devplugin_core",
            "validate",
            "rebel-npu",
            "--config-file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr  # no unknown keys
