"""Values: resource names (kubelet's rule), device IDs, container edits."""

from __future__ import annotations

import pytest

from devplugin_core import ConfigError, ContainerEdits, Device, DeviceNode, Mount
from devplugin_core.toolkit import extended_resource_name_error, natural_key, validate_resource_name


@pytest.mark.parametrize(
    "name",
    [
        "rdma/hca_shared_devices_a",
        "intel.com/intel_sriov_netdevice",
        "rebellions.ai/ATOM",
        "spidernet.io/hca_shared_devices",
        "intel.com/sriov-net",
        "a.b-c.d/x.y-z_0",
        "example.com/" + "n" * 63,
    ],
)
def test_valid_extended_resource_names(name):
    assert extended_resource_name_error(name) is None


@pytest.mark.parametrize(
    "name,why",
    [
        ("gpu", "<domain>/<name>"),
        ("foo.kubernetes.io/x", "reserved"),
        ("kubernetes.io/x", "reserved"),
        ("Example.com/x", "lower-case DNS subdomain"),
        ("requests.example.com/x", "requests."),
        ("example.com/", "empty"),
        ("a/b/c", "exactly one '/'"),
        ("example.com/" + "n" * 64, "at most 63"),
        ("example.com/-x", "start and end"),
        ("example.com/x y", "alphanumerics"),
        ("d" * 245 + ".com/x", "too long"),
        ("/x", "lower-case DNS"),
    ],
)
def test_invalid_extended_resource_names(name, why):
    reason = extended_resource_name_error(name)
    assert reason is not None and why in reason


def test_validate_resource_name_names_field_and_value():
    with pytest.raises(ConfigError) as err:
        validate_resource_name("Bad/x", "resourceList[0].resourceName")
    assert err.value.field == "resourceList[0].resourceName"
    assert "'Bad/x'" in str(err.value)


@pytest.mark.parametrize("bad", ["", "x" * 64, "a b", "a,b", "é"])
def test_device_id_rules(bad):
    with pytest.raises(ValueError):
        Device(bad)


def test_device_defaults():
    d = Device("0000:03:02.0", numa_nodes=(1, 0, 1))
    assert d.numa_nodes == (0, 1)
    assert d.health_key == d.id == d.cdi_name
    with pytest.raises(ValueError):
        Device("x", numa_nodes=(-1,))


def test_edits_merge_dedupes_and_keeps_order():
    a = ContainerEdits(
        device_nodes=[DeviceNode("/dev/a"), DeviceNode("/dev/rdma_cm")],
        mounts=[Mount("/usr/bin/tool")],
        env={"A": "1"},
    )
    b = ContainerEdits(
        device_nodes=[DeviceNode("/dev/b"), DeviceNode("/dev/rdma_cm", "/x")],
        mounts=[Mount("/opt/tool", "/usr/bin/tool")],
        env={"A": "2", "B": "3"},
        cdi_devices=("v/c=1",),
    )
    merged = a.merge(b, b)
    assert [n.host_path for n in merged.device_nodes] == ["/dev/a", "/dev/rdma_cm", "/dev/b"]
    assert [m.host_path for m in merged.mounts] == ["/usr/bin/tool"]
    assert dict(merged.env) == {"A": "2", "B": "3"}
    assert merged.cdi_devices == ("v/c=1",)
    assert not ContainerEdits() and merged


def test_edits_defaults_are_safe():
    assert DeviceNode("/dev/x").permissions == "rw"
    assert DeviceNode("/dev/x").container_path == "/dev/x"
    assert Mount("/usr/bin/x").read_only
    with pytest.raises(ValueError):
        DeviceNode("/dev/x", permissions="rwx")
    with pytest.raises(ValueError):
        DeviceNode("dev/x")
    with pytest.raises(ValueError):
        ContainerEdits(env={"A=B": "1"})


def test_edits_to_cdi():
    edits = ContainerEdits(
        device_nodes=[DeviceNode("/dev/rsd3", "/dev/rsd0")],
        mounts=[Mount("/usr/bin/rbln-smi")],
        env={"K": "V"},
    )
    assert edits.to_cdi() == {
        "env": ["K=V"],
        "deviceNodes": [{"path": "/dev/rsd0", "hostPath": "/dev/rsd3", "permissions": "rw"}],
        "mounts": [
            {
                "hostPath": "/usr/bin/rbln-smi",
                "containerPath": "/usr/bin/rbln-smi",
                "options": ["ro", "nosuid", "nodev", "bind"],
            }
        ],
    }


def test_natural_key():
    assert sorted(["rbln10", "rbln2", "rbln1"], key=natural_key) == ["rbln1", "rbln2", "rbln10"]


def test_with_id_copies_a_device_under_a_checked_id():
    from devplugin_core import Device

    template = Device("0", (1,), attributes={"b": "2", "a": "1"}, health_key="k", cdi_name="c")
    clone = template.with_id("41")
    assert clone == Device(
        "41", (1,), attributes={"a": "1", "b": "2"}, health_key="k", cdi_name="c"
    )
    assert clone.edits is template.edits and clone.attributes is template.attributes
    with pytest.raises(ValueError):
        template.with_id("not valid")
    many = template.with_ids(str(i) for i in range(3))
    assert many == [template.with_id(str(i)) for i in range(3)]
    assert all(d.attributes is template.attributes and d.health_key == "k" for d in many)
    with pytest.raises(ValueError, match="commas"):
        template.with_ids(["1", "2,3"])


def test_hand_written_device_encoding_matches_protobuf():
    import itertools

    from devplugin_core import Device
    from devplugin_core._model import Health
    from devplugin_core._render import _device_bytes, device_message

    devices = [
        Device("0"),
        Device("x" * 63, (0, 1)),
        Device("0000:3b:02.0", (3,)),
        Device("7", (200,)),
    ]
    for device, health in itertools.product(devices, Health):
        assert _device_bytes(device, health) == device_message(device, health).SerializeToString()
