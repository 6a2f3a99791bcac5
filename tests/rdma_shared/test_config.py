"""Config: upstream files load unchanged, defaults, warnings, and every validation error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from devplugin_plugins.rdma_shared import SPEC, build
from devplugin_plugins.rdma_shared.config import RdmaSharedConfig

from devplugin_core import ConfigError, PluginContext
from devplugin_core.cli import main as cli
from devplugin_core.testing import FakeHost
from devplugin_core.toolkit import decode

from .helpers import config, resource

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rdma_shared"
VENDORS: dict[str, Any] = {"selectors": {"vendors": ["15b3"]}}


def load(doc: Any) -> tuple[RdmaSharedConfig, list[str]]:
    result = decode(RdmaSharedConfig, doc)
    return result.value, result.warnings


@pytest.mark.parametrize(
    "fixture, names",
    [
        ("upstream-configmap.json", ["rdma/hca_shared_devices_a", "rdma/hca_shared_devices_b"]),
        ("nvidia-docs-roce-shared.json", ["rdma/roce_shared_devices"]),
        ("spiderpool-values.json", ["spidernet.io/hca_shared_devices"]),
    ],
)
def test_validate_accepts_upstream_configs(
    fixture: str, names: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(["validate", "rdma-shared", "--config-file", str(FIXTURES / fixture)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("valid: ") and out.rstrip().endswith(", ".join(names))


def test_upstream_configmap_semantics(capsys: pytest.CaptureFixture[str]) -> None:
    cfg, warnings = load(json.loads((FIXTURES / "upstream-configmap.json").read_text()))
    assert cfg.update_interval == 300
    legacy, modern = cfg.config_list
    assert (legacy.rdma_hca_max, legacy.devices) == (1000, ("ib0", "ib1"))
    assert legacy.effective_selectors.if_names == ("ib0", "ib1")  # devices == ifNames
    assert modern.effective_selectors.vendors == ("15b3",)
    assert modern.effective_selectors.if_names == ("ib3", "ib4")
    assert "kubeletRootDir: unknown key, ignored" in warnings
    assert any("configList[0].devices" in w and "deprecated" in w for w in warnings)
    code = cli(
        ["validate", "rdma-shared", "--config-file", str(FIXTURES / "upstream-configmap.json")]
    )
    assert code == 0
    assert "warning: kubeletRootDir: unknown key" in capsys.readouterr().err


def test_defaults_match_upstream(fake_host: FakeHost) -> None:
    cfg, warnings = load({"configList": [{"resourceName": "a", **VENDORS}]})
    assert warnings == []
    entry = cfg.config_list[0]
    assert (entry.full_name, entry.rdma_hca_max, entry.exclude_topology) == ("rdma/a", 0, False)
    assert (cfg.update_interval, cfg.health_check_interval) == (60, 0.5)
    built = build(cfg, PluginContext(host=fake_host.host))
    assert built.rescan_interval == 60
    assert built.resources[0].health is not None
    assert built.resources[0].health.interval == 0.5
    assert SPEC.default_config_file == "/k8s-rdma-shared-dev-plugin/config.json"
    assert SPEC.default_metrics_port == 9461


def test_empty_prefix_means_rdma() -> None:
    cfg, _ = load({"configList": [{"resourceName": "a", "resourcePrefix": "", **VENDORS}]})
    assert cfg.config_list[0].full_name == "rdma/a"


def test_interval_zero_disables_rescans_and_hotplug_polls(fake_host: FakeHost) -> None:
    cfg, _ = load({"periodicUpdateInterval": 0, "configList": [resource(**VENDORS)]})
    built = build(cfg, PluginContext(host=fake_host.host))
    assert built.rescan_interval == 0
    assert built.scanner.fingerprint(fake_host.host) is None


def test_health_interval_zero_disables_health_checks(fake_host: FakeHost) -> None:
    cfg, _ = load(config(resource(**VENDORS), healthCheckInterval=0))
    assert build(cfg, PluginContext(host=fake_host.host)).resources[0].health is None


def test_keys_are_case_insensitive_like_go() -> None:
    doc = {
        "PeriodicUpdateInterval": 5,
        "CONFIGLIST": [
            {
                "ResourceName": "a",
                "resourceprefix": "example.com",
                "RDMAHCAMAX": 3,
                "ExcludeTopology": True,
                "Selectors": {"VENDORS": ["15b3"], "deviceids": ["1017"], "LinkTypes": ["ether"]},
            }
        ],
    }
    cfg, warnings = load(doc)
    entry = cfg.config_list[0]
    assert warnings == []
    assert (cfg.update_interval, entry.full_name, entry.rdma_hca_max) == (5, "example.com/a", 3)
    assert entry.exclude_topology
    assert entry.selectors.device_ids == ("1017",) and entry.selectors.link_types == ("ether",)


def test_warnings_name_what_can_never_match() -> None:
    sel = {"vendors": ["0x15b3"], "deviceIDs": ["1017", "101B"], "linkTypes": ["ethernet"]}
    _, warnings = load({"configList": [resource(selectors=sel, isRdma=True)]})
    text = "\n".join(warnings)
    assert "configList[0].selectors.vendors[0]: '0x15b3' can never match" in text
    assert "configList[0].selectors.deviceIDs[1]: '101B' can never match" in text
    assert "configList[0].selectors.linkTypes[0]: 'ethernet' never matches" in text
    assert "configList[0].isRdma: unknown key, ignored" in text


ERRORS = [
    ({"periodicUpdateInterval": -10}, "periodicUpdateInterval", 'invalid "periodicUpdateInterval"'),
    ({"periodicUpdateInterval": 30.5}, "periodicUpdateInterval", "must be an integer"),
    ({"configList": []}, "configList", "no resources configuration found"),
    ({"configList": None}, "configList", "no resources configuration found"),
    ({"configList": {"resourceName": "a"}}, "configList", "must be a list"),
    ({"resourceName": "test_config$$"}, "configList[0].resourceName", "invalid characters"),
    ({"resourceName": None}, "configList[0].resourceName", "invalid characters"),
    ({"resourceName": "_lead"}, "configList[0].resourceName", "invalid extended resource name"),
    ({"resourceName": "n" * 64}, "configList[0].resourceName", "at most 63"),
    ({"resourcePrefix": "Example.COM"}, "configList[0].resourcePrefix", "invalid resource prefix"),
    ({"resourcePrefix": "kubernetes.io"}, "configList[0].resourcePrefix", "reserved"),
    ({"resourcePrefix": "a/b"}, "configList[0].resourcePrefix", "exactly one '/'"),
    ({"rdmaHcaMax": -100}, "configList[0].rdmaHcaMax", "invalid value for rdmaHcaMax < 0"),
    ({"rdmaHcaMax": 100_001}, "configList[0].rdmaHcaMax", "at most 100000"),
    ({"rdmaHcaMax": "10"}, "configList[0].rdmaHcaMax", "must be an integer"),
    ({"selectors": None}, "configList[0].selectors", 'neither "selectors" nor "devices"'),
    ({"selectors": {}}, "configList[0].selectors", 'neither "selectors" nor "devices"'),
    ({"devices": ["ib0"]}, "configList[0].devices", 'cannot specify both "selectors" and'),
    ({"selectors": {"vendors": "15b3"}}, "configList[0].selectors.vendors", "must be a list"),
    ({"selectors": {"ifNames": [1]}}, "configList[0].selectors.ifNames[0]", "must be a string"),
    ({"selectors": []}, "configList[0].selectors", "must be an object"),
    ({"excludeTopology": "yes"}, "configList[0].excludeTopology", "must be a boolean"),
    ({"healthCheckInterval": -1}, "healthCheckInterval", "between 0 (disabled) and 300"),
    ({"healthCheckInterval": 301}, "healthCheckInterval", "between 0 (disabled) and 300"),
]


@pytest.mark.parametrize("change, field, message", ERRORS)
def test_every_config_error_names_field_and_value(
    change: dict[str, Any], field: str, message: str
) -> None:
    entry: dict[str, Any] = {"resourceName": "a", "rdmaHcaMax": 1, **VENDORS}
    doc: dict[str, Any] = {"configList": [entry]}
    for key, value in change.items():
        if key in ("periodicUpdateInterval", "configList", "healthCheckInterval"):
            doc[key] = value
        elif value is None:
            entry.pop(key)
        else:
            entry[key] = value
    with pytest.raises(ConfigError) as caught:
        load(doc)
    err = caught.value
    assert err.field == field
    assert message in str(err)
    assert str(err).startswith(f"{field}: ")
    if err.value not in (None, "", []):
        assert repr(err.value)[:20] in str(err)  # the offending value is shown


def test_duplicate_resource_names_across_prefixes_are_rejected_like_upstream() -> None:
    doc = {
        "configList": [
            resource("dup", resourcePrefix="a.com", **VENDORS),
            resource("dup", resourcePrefix="b.com", **VENDORS),
        ]
    }
    with pytest.raises(ConfigError) as caught:
        load(doc)
    assert caught.value.field == "configList[1].resourceName"
    assert "already exists (configList[0])" in str(caught.value)


def test_validate_cli_reports_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"configList": [resource(rdmaHcaMax=-1, **VENDORS)]}))
    assert cli(["validate", "rdma-shared", "--config-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "configList[0].rdmaHcaMax: invalid value for rdmaHcaMax < 0 (got -1)" in err
    path.write_text("{not json")
    assert cli(["validate", "rdma-shared", "--config-file", str(path)]) == 2
    assert "invalid JSON" in capsys.readouterr().err


def test_deploy_configmap_is_the_upstream_example() -> None:
    import yaml

    path = FIXTURES.parent.parent.parent / "deploy" / "rdma_shared" / "configmap.yaml"
    manifest = yaml.safe_load(path.read_text())
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("ConfigMap", "rdma-devices")
    cfg, warnings = load(json.loads(manifest["data"]["config.json"]))
    assert warnings == []
    (entry,) = cfg.config_list
    assert entry.rdma_hca_max == 1000
    assert (entry.selectors.vendors, entry.selectors.device_ids) == (("15b3",), ("1017",))
