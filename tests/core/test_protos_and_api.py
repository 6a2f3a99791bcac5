"""Generated stubs are current, the wire contract's field numbers are pinned, and so is the
public API surface."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

import devplugin_core
from devplugin_core._proto import deviceplugin_v1beta1_pb2 as pb
from devplugin_core._proto import pluginregistration_v1_pb2 as reg
from devplugin_core._proto import podresources_v1_pb2 as pr

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_not_stale(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_protos.py"), "--out", str(tmp_path)], check=True
    )
    committed = ROOT / "devplugin_core/_proto"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file())
    mismatch = filecmp.cmpfiles(tmp_path, committed, names, shallow=False)[1]
    assert not mismatch, f"stale stubs, run `make protos`: {mismatch}"


def fields(message: type) -> dict[str, tuple[int, str]]:
    return {f.name: (f.number, f.type) for f in message.DESCRIPTOR.fields}


def test_device_plugin_wire_contract():
    assert pb.DESCRIPTOR.package == "v1beta1"
    T = __import__("google.protobuf.descriptor", fromlist=["FieldDescriptor"]).FieldDescriptor
    S, B, M, I64, I32 = T.TYPE_STRING, T.TYPE_BOOL, T.TYPE_MESSAGE, T.TYPE_INT64, T.TYPE_INT32
    assert fields(pb.DevicePluginOptions) == {
        "pre_start_required": (1, B),
        "get_preferred_allocation_available": (2, B),
    }
    assert fields(pb.RegisterRequest) == {
        "version": (1, S),
        "endpoint": (2, S),
        "resource_name": (3, S),
        "options": (4, M),
    }
    assert fields(pb.Device) == {"ID": (1, S), "health": (2, S), "topology": (3, M)}
    assert fields(pb.NUMANode) == {"ID": (1, I64)}
    assert fields(pb.ContainerPreferredAllocationRequest) == {
        "available_deviceIDs": (1, S),
        "must_include_deviceIDs": (2, S),
        "allocation_size": (3, I32),
    }
    assert fields(pb.ContainerAllocateResponse) == {
        "envs": (1, M),
        "mounts": (2, M),
        "devices": (3, M),
        "annotations": (4, M),
        "cdi_devices": (5, M),
    }
    assert fields(pb.Mount) == {"container_path": (1, S), "host_path": (2, S), "read_only": (3, B)}
    assert fields(pb.DeviceSpec) == {
        "container_path": (1, S),
        "host_path": (2, S),
        "permissions": (3, S),
    }
    assert fields(pb.CDIDevice) == {"name": (1, S)}
    services = {
        s.full_name: [m.name for m in s.methods] for s in pb.DESCRIPTOR.services_by_name.values()
    }
    assert services == {
        "v1beta1.Registration": ["Register"],
        "v1beta1.DevicePlugin": [
            "GetDevicePluginOptions",
            "ListAndWatch",
            "GetPreferredAllocation",
            "Allocate",
            "PreStartContainer",
        ],
    }
    assert reg.DESCRIPTOR.package == "pluginregistration"
    assert fields(reg.PluginInfo)["supported_versions"][0] == 4
    assert pr.DESCRIPTOR.package == "v1"
    assert fields(pr.ContainerDevices) == {
        "resource_name": (1, S),
        "device_ids": (2, S),
        "topology": (3, M),
    }


PUBLIC_API = sorted(
    [
        "AllocationError",
        "AllocationRequest",
        "Allocator",
        "ConfigError",
        "ContainerEdits",
        "Device",
        "DeviceNode",
        "DevicePluginError",
        "HealthChecker",
        "HostFS",
        "HostReadError",
        "MetricsCollector",
        "Mount",
        "Observation",
        "Part",
        "PciDevice",
        "PciScan",
        "Plugin",
        "PluginContext",
        "PluginFlag",
        "PluginSpec",
        "PreferredRequest",
        "Resource",
        "Scan",
        "Scanner",
        "Snapshot",
        "__version__",
        "numa_level",
        "one_or_many",
        "option",
        "prefer_packed",
        "scan_pci",
    ]
)

TOOLKIT_API = sorted(
    [
        "AcceleratorSelectors",
        "Candidate",
        "CharDevice",
        "DecodeContext",
        "Filter",
        "HostPathError",
        "IOMMU_GROUPS",
        "KeyFn",
        "NetDevice",
        "Pool",
        "PoolAssignment",
        "RDMA_CM",
        "REQUIRED_RDMA_NODES",
        "RdmaDevice",
        "RdmaPort",
        "ResourceEntry",
        "SYS_PCI_DEVICES",
        "SYS_PCI_DRIVERS",
        "Selector",
        "VFIO_CONTAINER",
        "VfRange",
        "additional_info",
        "assign",
        "bridges_of",
        "decode",
        "encode",
        "extended_resource_name_error",
        "full_names",
        "go_json",
        "hex_id_warnings",
        "hex_ids",
        "load_document",
        "match_flag",
        "match_values",
        "match_vf_ranges",
        "natural_key",
        "parse_vf_range",
        "pci_addresses",
        "pcidevice_env",
        "prefer_nested",
        "rdma_char_devices_of",
        "rdma_nodes",
        "read_iommu_group",
        "resource_list",
        "strings",
        "validate_resource_name",
        "vfio_info",
        "vfio_nodes",
    ]
)


def test_public_surface_is_pinned():
    assert sorted(devplugin_core.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert hasattr(devplugin_core, name), name
    import devplugin_core.toolkit as toolkit

    assert sorted(toolkit.__all__) == TOOLKIT_API
    for name in TOOLKIT_API:
        assert hasattr(toolkit, name), name
    import devplugin_core.testing as testing

    assert sorted(testing.__all__) == sorted(
        [
            "FakeHost",
            "FakeKubelet",
            "FakePci",
            "FakePodResources",
            "PluginConnection",
            "PodAssignment",
            "Registration",
            "run_plugin",
            "scan_once",
            "short_tempdir",
            "snapshots_of",
            "write_config",
        ]
    )
    assert (ROOT / "devplugin_core/py.typed").exists()


def test_pytest_plugin_is_registered():
    from importlib.metadata import entry_points

    assert any(
        ep.value == "devplugin_core.testing.pytest_plugin" for ep in entry_points(group="pytest11")
    )


def test_every_other_core_module_is_private():
    import pkgutil

    public = {"cli", "testing", "toolkit"}
    names = {m.name for m in pkgutil.iter_modules(devplugin_core.__path__)}
    assert {n for n in names if not n.startswith("_")} == public


def test_the_shipped_plugins_import_only_the_public_api():
    """They are the proof that the public API is enough."""
    import ast
    from pathlib import Path

    allowed = {"devplugin_core", "devplugin_core.toolkit", "devplugin_core.testing"}
    root = Path(__file__).resolve().parents[2] / "plugins"
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for module in modules:
                if module.split(".")[0] == "devplugin_core" and module not in allowed:
                    bad.append(f"{path.relative_to(root)}: {module}")
    assert bad == []
