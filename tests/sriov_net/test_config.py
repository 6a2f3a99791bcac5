"""Config: upstream's resourceList read unchanged; every error names the resource and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from devplugin_plugins.sriov_net import SPEC
from devplugin_plugins.sriov_net.config import AcceleratorResource, NetResource

from devplugin_core import ConfigError
from devplugin_core._runtime import PluginRuntime, RuntimeOptions
from devplugin_core.cli import main

from .helpers import SECTION_7_4, doc, pool


def load(tmp_path: Path, document: Any, **options: Any) -> tuple[Any, Any]:
    """Load + build like ``devplugin validate``: (LoadedConfig, Plugin)."""
    path = tmp_path / "config.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    runtime = PluginRuntime(
        SPEC, RuntimeOptions(config_file=str(path), plugin_options=options, handle_signals=False)
    )
    return runtime.load()


def error(tmp_path: Path, document: Any, **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, document, **options)
    return info.value


def test_section_7_4_config_loads_with_upstream_defaults(tmp_path: Path) -> None:
    loaded, plugin = load(tmp_path, SECTION_7_4)
    assert loaded.warnings == ()
    assert [r.name for r in plugin.resources] == [
        "intel.com/sriov_net",
        "intel.com/sriov_dpdk",
        "intel.com/sriov_all",
    ]
    entry = loaded.config.resource_list[0]
    assert isinstance(entry, NetResource)
    assert (entry.device_type, entry.exclude_topology, entry.additional_info) == (
        "netDevice",
        False,
        None,
    )
    assert (
        entry.check_health_on_pf,
        entry.check_health_on_device_exist,
        entry.allocation_policy,
    ) == (True, True, "spread")


def test_selectors_take_an_object_or_a_list(tmp_path: Path) -> None:
    loaded, _ = load(
        tmp_path,
        doc(
            pool("one", {"drivers": ["iavf"]}),
            pool(
                "two", [{"drivers": ["iavf"]}, {"drivers": ["vfio-pci"], "pfNames": ["ens1f0#0-3"]}]
            ),
            pool("all", {}),
        ),
    )
    one, two, every = loaded.config.resource_list
    assert len(one.selectors) == 1 and len(two.selectors) == 2
    assert two.selectors[1].pf_names == ("ens1f0#0-3",)
    assert every.selectors[0].drivers == ()


def test_keys_match_case_insensitively_like_go(tmp_path: Path) -> None:
    loaded, plugin = load(
        tmp_path,
        {
            "ResourceList": [
                {
                    "ResourceName": "mlx",
                    "ResourcePrefix": "nvidia.com",
                    "ExcludeTopology": True,
                    "Selectors": {
                        "Vendors": ["15b3"],
                        "PfNames": ["ens1f0"],
                        "IsRdma": True,
                        "NeedVhostNet": True,
                        "PKeys": ["0x8001"],
                    },
                }
            ]
        },
    )
    entry = loaded.config.resource_list[0]
    assert loaded.warnings == ()
    assert entry.exclude_topology and entry.selectors[0].is_rdma
    assert entry.selectors[0].need_vhost_net and entry.selectors[0].pkeys == ("0x8001",)
    assert [r.name for r in plugin.resources] == ["nvidia.com/mlx"]


def test_accelerator_pools_and_our_optional_keys(tmp_path: Path) -> None:
    loaded, plugin = load(
        tmp_path,
        doc(
            pool(
                "fec",
                {"vendors": ["8086"], "devices": ["0d5d"], "drivers": ["vfio-pci"]},
                deviceType="accelerator",
                allocationPolicy="packed",
                checkHealthOnPf=False,
                checkHealthOnDeviceExist=False,
            ),
        ),
        resource_prefix="example.org",
    )
    entry = loaded.config.resource_list[0]
    assert isinstance(entry, AcceleratorResource)
    assert (
        entry.allocation_policy,
        entry.check_health_on_pf,
        entry.check_health_on_device_exist,
    ) == ("packed", False, False)
    assert [r.name for r in plugin.resources] == ["example.org/fec"]


def test_same_name_with_different_prefixes_is_allowed(tmp_path: Path) -> None:
    _, plugin = load(tmp_path, doc(pool("vf", {}), pool("vf", {}, resourcePrefix="a.io")))
    assert [r.name for r in plugin.resources] == ["intel.com/vf", "a.io/vf"]


def test_unknown_keys_and_never_matching_values_warn(tmp_path: Path) -> None:
    loaded, _ = load(
        tmp_path,
        {
            "resourceList": [
                pool(
                    "legacy",
                    {
                        "vendors": ["0x8086"],
                        "devices": ["154C"],
                        "pciAddresses": ["03:02.0"],
                        "linkTypes": ["ether", "infiniband"],
                        "sriovMode": True,
                    },
                    isRdma=True,
                    rootDevices=["0000:03:00.0"],
                    additionalInfo={"eth0": {"k": "v"}},
                )
            ],
            "logLevel": 10,
        },
    )
    text = "\n".join(loaded.warnings)
    for expected in (
        "logLevel: unknown key",
        "resourceList[0].isRdma: unknown key",
        "resourceList[0].rootDevices: unknown key",
        "resourceList[0].selectors.sriovMode: unknown key",
        "resourceList[0].selectors.vendors[0]: '0x8086' can never match",
        "resourceList[0].selectors.devices[0]: '154C' can never match",
        "resourceList[0].selectors.pciAddresses[0]: '03:02.0' can never match",
        "resourceList[0].selectors.linkTypes: 2 link types given",
        "resourceList[0].additionalInfo['eth0']: never used",
    ):
        assert expected in text


def test_accelerator_selectors_warn_about_netdevice_keys(tmp_path: Path) -> None:
    loaded, _ = load(
        tmp_path, doc(pool("fec", {"pfNames": ["x"], "isRdma": True}, deviceType="accelerator"))
    )
    assert "resourceList[0].selectors.pfNames: unknown key, ignored" in loaded.warnings
    assert "resourceList[0].selectors.isRdma: unknown key, ignored" in loaded.warnings


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        ({}, "resourceList", "is required"),
        ({"resourceList": None}, "resourceList", "is required"),
        ({"resourceList": []}, "resourceList", "needs at least one resource"),
        ({"resourceList": {"resourceName": "a"}}, "resourceList", "must be a list"),
        ({"resourceList": ["a"]}, "resourceList[0]", "must be an object"),
        (doc(pool("ok", {}), {"resourceName": "x"}), "resourceList[1].selectors", "is required"),
        (doc(pool("x", None)), "resourceList[0].selectors", "is required"),
        (doc(pool("x", [])), "resourceList[0].selectors", "needs at least one object"),
        (doc(pool("x", "iavf")), "resourceList[0].selectors", "must be an object"),
        (doc(pool("x", [{}, 3])), "resourceList[0].selectors[1]", "must be an object"),
        (doc({"selectors": {}}), "resourceList[0].resourceName", "is required"),
        (doc(pool("invalid.name", {})), "resourceList[0].resourceName", "invalid characters"),
        (doc(pool("sriov net", {})), "resourceList[0].resourceName", "invalid characters"),
        (
            doc(pool("ok", {}), pool("ok", {})),
            "resourceList[1].resourceName",
            "'intel.com/ok' is already defined by resourceList[0]",
        ),
        (
            doc(pool("a", {}), pool("a", {}, resourcePrefix="intel.com")),
            "resourceList[1].resourceName",
            "already defined",
        ),
        (
            doc(pool("sriov_", {})),
            "resourceList[0].resourceName",
            "not a valid extended resource name: the name after '/' must",
        ),
        (doc(pool("x" * 64, {})), "resourceList[0].resourceName", "at most 63"),
        (
            doc(pool("ok", {}, resourcePrefix="Intel.com")),
            "resourceList[0].resourcePrefix",
            "lower-case DNS subdomain",
        ),
        (
            doc(pool("ok", {}, resourcePrefix="kubernetes.io")),
            "resourceList[0].resourcePrefix",
            "reserved",
        ),
        (  # upstream auxNetDeviceProvider.ValidConfig: "AuxTypes are not specified"
            doc(pool("x", {}, deviceType="auxNetDevice")),
            "resourceList[0].selectors.auxTypes",
            "is required for auxNetDevice pools",
        ),
        (  # ... and 'Only "sf" auxiliary device type currently supported'
            doc(
                pool(
                    "x",
                    [{"auxTypes": ["sf"]}, {"auxTypes": ["sf", "eth"]}],
                    deviceType="auxNetDevice",
                )
            ),
            "resourceList[0].selectors[1].auxTypes[1]",
            'only "sf" auxiliary devices',
        ),
        (
            doc(pool("x", {}, deviceType="NetDevice")),
            "resourceList[0].deviceType",
            "unsupported deviceType (use 'netDevice', 'accelerator', 'auxNetDevice')",
        ),
        (doc(pool("x", {}, deviceType=2)), "resourceList[0].deviceType", "must be a string"),
        (  # upstream netDeviceProvider.ValidConfig: mutually exclusive in one selector object
            doc(pool("x", [{}, {"isRdma": True, "vdpaType": "virtio"}])),
            "resourceList[0].selectors[1].vdpaType",
            "vdpaType and isRdma are mutually exclusive",
        ),
        (
            doc(pool("x", {"ddpProfiles": "GTP"})),
            "resourceList[0].selectors.ddpProfiles",
            "must be a list",
        ),
        (
            doc(pool("x", {"pfNames": ["ens1f0#"]})),
            "resourceList[0].selectors.pfNames[0]",
            "empty VF index list",
        ),
        (
            doc(pool("x", {"pfNames": ["ok", "ens1f0#1-2-3"]})),
            "resourceList[0].selectors.pfNames[1]",
            "invalid VF index range '1-2-3'",
        ),
        (
            doc(pool("x", {"pfNames": ["ens1f0#a"]})),
            "resourceList[0].selectors.pfNames[0]",
            "invalid VF index range 'a'",
        ),
        (
            doc(pool("x", {"pfNames": ["ens1f0#1#2"]})),
            "resourceList[0].selectors.pfNames[0]",
            "more than one '#'",
        ),
        (
            doc(pool("x", {"pfNames": ["ens1f0#5-2"]})),
            "resourceList[0].selectors.pfNames[0]",
            "reversed",
        ),
        (
            doc(pool("x", {"pfNames": ["#1"]})),
            "resourceList[0].selectors.pfNames[0]",
            "missing PF name",
        ),
        (
            doc(pool("x", {"rootDevices": ["0000:86:00.0#0,x"]})),
            "resourceList[0].selectors.rootDevices[0]",
            "invalid VF index range 'x'",
        ),
        (
            doc(pool("x", {"pfNames": "ens1f0"})),
            "resourceList[0].selectors.pfNames",
            "must be a list",
        ),
        (
            doc(pool("x", {"vendors": [8086]})),
            "resourceList[0].selectors.vendors[0]",
            "must be a string",
        ),
        (
            doc(pool("x", {"isRdma": "true"})),
            "resourceList[0].selectors.isRdma",
            "must be a boolean",
        ),
        (
            doc(pool("x", {}, excludeTopology=1)),
            "resourceList[0].excludeTopology",
            "must be a boolean",
        ),
        (
            doc(pool("x", {}, additionalInfo={"*": {"n": 1}})),
            'resourceList[0].additionalInfo["*"]["n"]',
            "must be a string",
        ),
        (
            doc(pool("x", {}, additionalInfo={"*": "v"})),
            'resourceList[0].additionalInfo["*"]',
            "must be an object",
        ),
        (
            doc(pool("x", {}, allocationPolicy="pack")),
            "resourceList[0].allocationPolicy",
            "must be one of 'spread', 'packed'",
        ),
        (
            doc(pool("x", {}, checkHealthOnPf="yes")),
            "resourceList[0].checkHealthOnPf",
            "must be a boolean",
        ),
    ],
)
def test_validation_errors_name_the_field(
    tmp_path: Path, document: Any, field: str, message: str
) -> None:
    err = error(tmp_path, document)
    assert err.field == field
    assert message in err.message
    assert err.source == str(tmp_path / "config.json")


def test_bad_default_prefix_is_blamed_on_the_flag(tmp_path: Path) -> None:
    err = error(tmp_path, doc(pool("vf", {})), resource_prefix="Intel.COM")
    assert err.field == "resourceList[0].resourcePrefix"
    assert "--resource-prefix" in err.message


@pytest.mark.parametrize("text", ["junk", '{"resourceList": [', "[1, 2]"])
def test_unparsable_documents_are_config_errors(tmp_path: Path, text: str) -> None:
    err = error(tmp_path, text)
    assert err.source == str(tmp_path / "config.json")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SECTION_7_4))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc(pool("x", {"vdpaType": "vhost", "isRdma": True}))))
    assert main(["validate", "sriov-net", "--config-file", str(good)]) == 0
    assert "3 resources" in capsys.readouterr().out
    assert main(["validate", "sriov-net", "--config-file", str(bad)]) == 2
    assert "vdpaType: vdpaType and isRdma are mutually exclusive" in capsys.readouterr().err
    assert main(["validate", "sriov-net", "--config-file", str(tmp_path / "missing.json")]) == 2
    kubelet = tmp_path / "kubelet"
    kubelet.mkdir()
    code = main(
        [
            "run",
            "sriov-net",
            "--config-file",
            str(bad),
            "--kubelet-dir",
            str(kubelet),
            "--host-root",
            str(tmp_path),
            "--metrics-address",
            "",
            "--pod-resources-socket",
            "",
        ]
    )
    assert code == 2


def test_spec_defaults_match_upstream() -> None:
    assert SPEC.name == "sriov-net"
    assert SPEC.default_config_file == "/etc/pcidp/config.json"
    assert SPEC.default_metrics_port == 9462
    flags = {f.name: f.default for f in SPEC.flags}
    assert flags["resource-prefix"] == "intel.com"
    assert flags["device-info-dir"] == "/var/run/k8s.cni.cncf.io/devinfo/dp"


def test_errors_inside_an_entry_name_its_resource(tmp_path: Path) -> None:
    err = error(tmp_path, doc(pool("ok", {}), pool("dpdk", [{}, {"pfNames": ["ens1f0#1-"]}])))
    assert err.field == "resourceList[1].selectors[1].pfNames[0]"
    assert err.message.endswith("(resource 'dpdk')")
    assert str(err).startswith(f"{tmp_path / 'config.json'}: resourceList[1].selectors[1]")
