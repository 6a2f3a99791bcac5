"""Config: zero-config default, upstream's configmap, our keys, errors, products."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from devplugin_plugins.rebel_npu import SPEC, RebelNpuConfig
from devplugin_plugins.rebel_npu.products import product_of

from devplugin_core import ConfigError
from devplugin_core.cli import main as cli_main
from devplugin_core.testing import FakeHost
from devplugin_core.toolkit import decode

from .helpers import ATOM, FIXTURES, REBEL, built, resource, scanner


def upstream_config() -> str:
    document = yaml.safe_load((FIXTURES / "configmap.yaml").read_text())
    text: str = document["data"]["config.json"]
    return text


def test_spec_metadata() -> None:
    assert SPEC.name == "rebel-npu"
    assert SPEC.config_optional
    assert SPEC.default_metrics_port == 9463
    assert SPEC.demo is not None and SPEC.preflight is not None


def test_zero_config_has_one_dynamic_resource_per_family(fake_host: FakeHost) -> None:
    plugin = built(fake_host)
    assert plugin.resources == ()  # served only while the node has devices of the family
    assert [p.resource.name for p in scanner(plugin).pools] == [ATOM, REBEL]
    atom = resource(plugin, ATOM)
    assert atom.mount_allowlist == ("/usr/bin/rbln-stat", "/usr/bin/rbln-smi")


def test_upstream_configmap_validates_and_yields_atom(
    fake_host: FakeHost, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(upstream_config())
    result = decode(RebelNpuConfig, yaml.safe_load(upstream_config()))
    assert result.warnings == []
    pool = result.value.resource_list[0]
    assert pool.full_name() == ATOM and pool.selectors[0].drivers == ("rebellions",)
    assert [r.name for r in built(fake_host, yaml.safe_load(upstream_config())).resources] == [ATOM]
    assert cli_main(["validate", "rebel-npu", "--config-file", str(path)]) == 0
    assert "1 resources: rebellions.ai/ATOM" in capsys.readouterr().out


def test_our_keys_and_upstream_pools_together(fake_host: FakeHost) -> None:
    document = {
        "resourceList": [
            {
                "resourceName": "npu_a",
                "selectors": [{"devices": ["1220"]}, {"pciAddresses": ["0000:13:00.0"]}],
                "additionalInfo": {"*": {"k": "v"}},
            }
        ],
        "rblnStatHostPath": "/opt/rbln/bin/rbln-stat",
        "rblnSmiHostPath": "",
        "rblnSmiPath": "/usr/local/bin/rbln-smi",
        "rsdGroups": "off",
        "health": {"interval": 1, "useRblnSmi": False, "maxTemperatureCelsius": 90},
    }
    cfg = decode(RebelNpuConfig, document).value
    assert cfg.resource_list[0].full_name() == "rebellions.ai/npu_a"  # prefix defaults
    assert len(cfg.resource_list[0].selectors) == 2
    assert cfg.smi_executable("/host") == "/usr/local/bin/rbln-smi"
    pool = built(fake_host, document).resources[0]
    assert pool.mount_allowlist == ("/opt/rbln/bin/rbln-stat",)  # exactly the tools
    assert pool.health is not None and pool.health.interval == 1


def test_smi_executable_defaults_to_host_copy_through_the_root() -> None:
    cfg = RebelNpuConfig()
    assert cfg.smi_executable("/") == "/usr/bin/rbln-smi"
    assert cfg.smi_executable("/host") == "/host/usr/bin/rbln-smi"
    assert RebelNpuConfig(rbln_smi_host_path="").smi_executable("/host") == ""


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"rsdGroups": "sometimes"}, "rsdGroups"),
        (
            {"resourceList": [{"resourceName": "x", "deviceType": "netDevice"}]},
            "resourceList[0].deviceType",
        ),
        ({"resourceList": [{"resourceName": "bad name"}]}, "resourceList[0].resourceName"),
        ({"resourceList": [{"resourcePrefix": "rebellions.ai"}]}, "resourceList[0].resourceName"),
        (
            {"resourceList": [{"resourceName": "A"}, {"resourceName": "A"}]},
            "resourceList[1].resourceName",
        ),
        ({"resourceList": [{"resourceName": "A", "selectors": []}]}, "resourceList[0].selectors"),
        ({"rblnStatHostPath": "usr/bin/rbln-stat"}, "rblnStatHostPath"),
        ({"rblnSmiPath": "/usr/../bin/rbln-smi"}, "rblnSmiPath"),
        ({"rsdTimeout": 0}, "rsdTimeout"),
        ({"rsdLockFile": ""}, "rsdLockFile"),
        ({"health": {"interval": 0}}, "health.interval"),
        ({"health": {"recoverAfter": 0}}, "health.recoverAfter"),
        ({"health": {"healthyStatuses": []}}, "health.healthyStatuses"),
        ({"rblnSmiTimeout": "5"}, "rblnSmiTimeout"),
    ],
)
def test_config_errors_name_the_field(document: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        decode(RebelNpuConfig, document)
    assert err.value.field == field


def test_unknown_keys_warn_and_case_folds_like_go() -> None:
    result = decode(
        RebelNpuConfig,
        {
            "RSDGROUPS": "off",
            "bogus": 1,
            "resourceList": [{"resourcename": "ATOM", "selectors": {"pfNames": ["x"]}}],
        },
    )
    assert result.value.rsd_groups == "off"
    assert result.value.resource_list[0].resource_name == "ATOM"
    assert any("bogus" in w for w in result.warnings)
    assert any("pfNames" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("device", "card", "family", "vf", "known"),
    [
        ("0010", "RBLN-ATOM", "ATOM", False, True),
        ("0011", "RBLN-ATOM", "ATOM", True, True),
        ("1020", "RBLN-CA02", "ATOM", False, True),
        ("1121", "RBLN-CA12", "ATOM", True, True),
        ("1150", "RBLN-CA15", "ATOM", False, True),
        ("1220", "RBLN-CA22", "ATOM", False, True),
        ("1251", "RBLN-CA25", "ATOM", True, True),
        ("2030", "RBLN-CR03", "REBEL", False, True),
        ("2130", "RBLN-CR13", "REBEL", False, False),
    ],
)
def test_products(device: str, card: str, family: str, vf: bool, known: bool) -> None:
    product = product_of(device)
    assert product is not None
    assert (product.card, product.family, product.vf, product.known) == (card, family, vf, known)


@pytest.mark.parametrize("device", ["1017", "0000", "3030", "12200", "abcd"])
def test_not_npu_ids(device: str) -> None:
    assert product_of(device) is None


def test_short_pci_addresses_warn_as_they_can_never_match() -> None:
    result = decode(
        RebelNpuConfig,
        {"resourceList": [{"resourceName": "A", "selectors": {"pciAddresses": ["13:00.0"]}}]},
    )
    assert result.warnings == [
        "resourceList[0].selectors.pciAddresses[0]: '13:00.0' can never match: use the full "
        "lower-case form such as 0000:03:02.0"
    ]
