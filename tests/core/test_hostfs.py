"""HostFS: canonicalisation inside the host root and the allow-lists."""

from __future__ import annotations

import os

import pytest

from devplugin_core import HostFS, HostReadError
from devplugin_core.testing import FakeHost
from devplugin_core.toolkit import HostPathError


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path / "root")
    h.add_dev("/dev/infiniband/uverbs0")
    h.write("/etc/shadow", "secret\n")
    h.write("/usr/bin/rbln-smi", "#!/bin/sh\n")
    return h


def test_absolute_symlinks_are_rerooted(host):
    # an absolute link target must resolve inside the root, never to the real /etc
    os.symlink("/dev/infiniband/uverbs0", host.path("/dev/abs-link"))
    fs = host.host
    assert fs.realpath("/dev/abs-link") == "/dev/infiniband/uverbs0"
    assert fs.check_device_node("/dev/abs-link") == "/dev/infiniband/uverbs0"


def test_dotdot_never_climbs_above_root(host):
    os.symlink("../../../../../../etc/shadow", host.path("/dev/escape"))
    fs = host.host
    assert fs.realpath("/dev/escape") == "/etc/shadow"
    with pytest.raises(HostPathError, match="outside the allowed prefixes"):
        fs.check_device_node("/dev/escape")


@pytest.mark.parametrize(
    "path,why",
    [
        ("/dev/../etc/shadow", "'..'"),
        ("dev/infiniband/uverbs0", "not an absolute path"),
        ("/dev/missing", "does not exist"),
        ("/etc/shadow", "outside the allowed prefixes"),
        ("/dev/infiniband", "not a device node"),
        ("/dev/x\0y", "NUL"),
    ],
)
def test_device_node_refusals(host, path, why):
    with pytest.raises(HostPathError, match=why if why != "'..'" else "'\\.\\.'"):
        host.host.check_device_node(path)


def test_regular_files_are_device_nodes_only_on_fake_hosts(host, tmp_path):
    real = HostFS(host.root, fake=False)
    with pytest.raises(HostPathError, match="not a device node"):
        real.check_device_node("/dev/infiniband/uverbs0")
    assert host.host.fake and not HostFS("/").fake


def test_real_char_device_accepted_outside_fake_mode():
    assert HostFS("/", fake=False).check_device_node("/dev/null") == "/dev/null"


def test_mount_rules(host):
    fs = host.host
    assert fs.check_mount_source("/usr/bin/rbln-smi", ["/usr/bin/rbln-smi"]) == "/usr/bin/rbln-smi"
    with pytest.raises(HostPathError, match="outside"):
        fs.check_mount_source("/usr/bin/rbln-smi", ["/opt"])
    with pytest.raises(HostPathError, match="never mounted"):
        fs.check_mount_source("/etc/shadow", ["/"])
    with pytest.raises(HostPathError, match="never mounted"):
        fs.check_mount_source("/usr", ["/"])
    os.symlink("/etc", host.path("/usr/bin/sneaky"))
    with pytest.raises(HostPathError, match="outside"):
        fs.check_mount_source("/usr/bin/sneaky", ["/usr/bin"])


def test_symlink_loops_are_refused(host):
    os.symlink("/dev/loop-b", host.path("/dev/loop-a"))
    os.symlink("/dev/loop-a", host.path("/dev/loop-b"))
    with pytest.raises(HostPathError, match="too many levels"):
        host.host.realpath("/dev/loop-a")


def test_reads(host):
    fs = host.host
    host.write("/sys/x/attr", "  0x15b3\n")
    host.write("/sys/x/junk", b"\xff\xfe")
    assert fs.read_attr("/sys/x/attr") == "0x15b3"
    assert fs.read_int("/sys/x/attr", base=16) == 0x15B3
    assert fs.read_attr("/sys/x/missing") is None
    with pytest.raises(HostReadError, match="/sys/x/junk: not UTF-8"):
        fs.read_attr("/sys/x/junk")
    with pytest.raises(HostReadError, match="not an integer"):
        fs.read_int("/sys/x/junk2") if fs.read_attr("/sys/x/attr") and host.write(
            "/sys/x/junk2", "abc"
        ) is None else None
    assert fs.listdir("/sys/nowhere") == []
    assert fs.readlink("/sys/x/attr") is None


def test_a_pass_that_remembers_directories_resolves_exactly_as_a_fresh_walk(host):
    """``realpath(dirs=...)`` (one scan or Allocate pass) gives the same answers and the same
    refusals as walking every path from the root."""
    os.symlink("/dev/infiniband/uverbs0", host.path("/dev/abs-link"))
    os.symlink("../../../../../../etc/shadow", host.path("/dev/escape"))
    os.symlink("infiniband", host.path("/dev/ib"))
    host.add_dev("/dev/infiniband/umad0")
    fs = host.host
    dirs: set[str] = set()
    paths = [
        "/dev/infiniband/uverbs0",
        "/dev/infiniband/umad0",
        "/dev/abs-link",
        "/dev/escape",
        "/dev/ib/umad0",
        "/dev/infiniband/../infiniband/umad0",
        "/dev//infiniband/uverbs0",
        "/dev/infiniband",
    ]
    for path in paths * 2:  # the second round finds every directory remembered
        assert fs.realpath(path, dirs=dirs) == fs.realpath(path)
    assert {"/dev", "/dev/infiniband"} <= dirs
    with pytest.raises(HostPathError, match="does not exist"):
        fs.realpath("/dev/infiniband/missing", dirs=dirs)
    with pytest.raises(HostPathError, match="outside the allowed prefixes"):
        fs.check_device_node("/dev/escape", dirs=dirs)
