"""Fake-host recipes for Rebellions NPUs and a fake ``rbln-smi``, for tests and the demo.

* :func:`add_switch` — a root port and a PCIe switch with N downstream ports (bridges);
* :func:`add_ca22_switches` — CA22 cards behind PCIe switches (upstream's "bridge index 1");
* :func:`add_ca25_card` — one CA25 card: four NPUs behind the card's own switch, itself in a
  slot of a host PCIe switch (upstream's "bridge index 2");
* :func:`add_sriov_npu` — an NPU PF with SR-IOV VFs, each with its ``pools`` file and node;
* :func:`add_vfio_npu` — an NPU bound to ``vfio-pci`` in an IOMMU group (for VMs);
  :func:`to_vfio` / :func:`to_rebellions` rebind one the way the kernel does it;
* :func:`add_tools` — ``rbln-stat`` on the fake host;
* :func:`install_fake_smi` — the fake ``rbln-smi`` (:mod:`.fakesmi`) at ``/usr/bin/rbln-smi``
  with its state file next to it; :class:`FakeSmi` reads and changes that state;
* :func:`demo_host` — the ``devplugin demo`` node.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devplugin_core.testing import FakeHost

from .fakesmi import locked_state
from .products import product_of

__all__ = [
    "FakeSmi",
    "add_ca22_switches",
    "add_ca25_card",
    "add_sriov_npu",
    "add_switch",
    "add_tools",
    "add_vfio_npu",
    "demo_host",
    "install_fake_smi",
    "to_rebellions",
    "to_vfio",
]

_RBLN = re.compile(r"^rbln(\d+)$")


def _next_index(host: FakeHost) -> int:
    used = [int(m[1]) for n in os.listdir(host.path("/dev")) if (m := _RBLN.match(n))]
    return max(used, default=-1) + 1


def _bridge(host: FakeHost, address: str, parents: Sequence[str], numa: int | None) -> None:
    if address not in host.pci:
        host.add_bridge(address, parents=parents, numa_node=numa)


def add_switch(
    host: FakeHost, root_bus: int, ports: int, *, numa: int | None = None
) -> list[list[str]]:
    """Root port ``0000:RR:01.0`` -> switch upstream port ``RR+1:00.0`` -> ``ports``
    downstream ports ``RR+2:0i.0``; returns the bridge chain of each downstream port."""
    root = f"0000:{root_bus:02x}:01.0"
    upstream = f"0000:{root_bus + 1:02x}:00.0"
    _bridge(host, root, [], numa)
    _bridge(host, upstream, [root], numa)
    chains = []
    for i in range(ports):
        down = f"0000:{root_bus + 2:02x}:{i:02x}.0"
        _bridge(host, down, [root, upstream], numa)
        chains.append([root, upstream, down])
    return chains


def add_ca22_switches(
    host: FakeHost,
    *,
    numa_nodes: int = 2,
    switches_per_numa: int = 1,
    cards_per_switch: int = 2,
    device: str = "1220",
    base_bus: int = 0x10,
) -> list[str]:
    """CA22 cards, ``cards_per_switch`` behind each PCIe switch; returns their addresses
    (numbered in NUMA, switch, slot order; ``rblnN`` in the same order). Each switch takes
    16 buses from ``base_bus`` on."""
    addresses = []
    for numa in range(numa_nodes):
        for s in range(switches_per_numa):
            root_bus = base_bus + 0x10 * (numa * switches_per_numa + s)
            for slot, chain in enumerate(add_switch(host, root_bus, cards_per_switch, numa=numa)):
                address = f"0000:{root_bus + 3 + slot:02x}:00.0"
                host.add_npu(
                    address, device=device, numa_node=numa, parents=chain, index=_next_index(host)
                )
                addresses.append(address)
    return addresses


def add_ca25_card(
    host: FakeHost,
    root_bus: int,
    slot: int,
    *,
    numa: int | None = None,
    slots: int = 2,
    device: str = "1250",
) -> list[str]:
    """One CA25 card in ``slot`` of a host switch under root bus ``root_bus``: four NPUs, each
    behind a downstream port of the card's own switch; returns their addresses."""
    host_chain = add_switch(host, root_bus, slots, numa=numa)[slot]
    card_bus = root_bus + 3 + 8 * slot
    card_up = f"0000:{card_bus:02x}:00.0"
    _bridge(host, card_up, host_chain, numa)
    addresses = []
    for die in range(4):
        down = f"0000:{card_bus + 1:02x}:{die:02x}.0"
        _bridge(host, down, [*host_chain, card_up], numa)
        address = f"0000:{card_bus + 2 + die:02x}:00.0"
        host.add_npu(
            address,
            device=device,
            numa_node=numa,
            parents=[*host_chain, card_up, down],
            index=_next_index(host),
        )
        addresses.append(address)
    return addresses


def _npu_files(host: FakeHost, address: str, index: int) -> None:
    path = host.pci[address].path
    host.write(f"{path}/pools", f"poolinfo - 0.1\nrbln{index}               0    4 1024  1\n")
    host.write(f"/sys/class/rebellions/rbln{index}/kernel_version", "1.3.73\n")
    host.add_dev(f"/dev/rbln{index}")


def add_sriov_npu(
    host: FakeHost,
    pf: str,
    vfs: Sequence[str],
    *,
    device: str = "1250",
    numa: int | None = None,
    parents: Sequence[str] = (),
) -> list[str]:
    """An NPU PF with ``len(vfs)`` VFs (device ID + 1), all bound to ``rebellions`` with their
    own ``pools`` files and ``/dev/rblnN``; returns ``[pf, *vfs]``."""
    host.add_sriov_pf(
        pf,
        vendor="1eff",
        device=device,
        driver="rebellions",
        totalvfs=max(len(vfs), 1),
        numa_node=numa,
        parents=parents,
        class_code=0x120000,
    )
    _npu_files(host, pf, _next_index(host))
    vf_device = f"{int(device, 16) + 1:04x}"
    for i, vf in enumerate(vfs):
        host.add_vf(pf, i, vf, device=vf_device, driver="rebellions")
        _npu_files(host, vf, _next_index(host))
    return [pf, *vfs]


def add_vfio_npu(
    host: FakeHost,
    address: str,
    *,
    group: int,
    device: str = "1220",
    numa: int | None = None,
    parents: Sequence[str] = (),
    noiommu: bool = False,
) -> str:
    """An NPU function bound to ``vfio-pci`` in IOMMU ``group`` (``/dev/vfio/<group>``, or
    ``/dev/vfio/noiommu-<group>`` with ``noiommu``): no ``pools`` file, no ``/dev/rblnN``."""
    host.add_pci(
        address,
        vendor="1eff",
        device=device,
        class_code=0x120000,
        driver="vfio-pci",
        numa_node=numa,
        parents=parents,
    )
    host.set_iommu_group(address, group, noiommu=noiommu)
    return address


def to_vfio(host: FakeHost, address: str, group: int | None = None) -> None:
    """Rebind an NPU from ``rebellions`` to ``vfio-pci`` (what an operator switching a node to
    VM mode does): the rebellions driver takes its ``/dev/rblnN`` (and ``pools``) along when
    it lets go; ``group``: put the function in that IOMMU group first."""
    name = _pools_name(host, address)
    host.unbind(address)
    if name is not None:
        host.remove(f"/dev/{name}")
    if group is not None:
        host.set_iommu_group(address, group)
    host.bind(address, "vfio-pci")


def to_rebellions(host: FakeHost, address: str) -> None:
    """Rebind an NPU from ``vfio-pci`` back to ``rebellions``: its ``/dev/rblnN`` returns."""
    host.unbind(address)
    host.bind(address, "rebellions")
    name = _pools_name(host, address)
    if name is not None:
        host.add_dev(f"/dev/{name}")


def add_tools(host: FakeHost, *, stat_path: str = "/usr/bin/rbln-stat") -> None:
    """``rbln-stat`` on the fake host (a regular file)."""
    host.write(stat_path, "#!/bin/sh\necho rbln-stat\n")


def _pools_name(host: FakeHost, address: str) -> str | None:
    try:
        lines = host.path(f"{host.pci[address].path}/pools").read_text().splitlines()
    except OSError:
        return None
    words = lines[1].split() if len(lines) > 1 else []
    return words[0] if words and _RBLN.match(words[0]) else None


def smi_entries(host: FakeHost) -> list[dict[str, Any]]:
    """``rbln-smi -g -j`` device entries for the fake host's NPUs (NPU index = N of rblnN)."""
    entries = []
    for address, dev in sorted(host.pci.items()):
        if dev.vendor != "1eff" or dev.driver != "rebellions":
            continue  # rbln-smi sees only NPUs its driver holds
        name = _pools_name(host, address)
        if name is None:
            continue
        index = int(name[4:])
        product = product_of(dev.device)
        entries.append(
            {
                "npu": index,
                "name": product.card if product else "RBLN",
                "sid": f"00000000225{index:05d}",
                "uuid": f"00000000-0000-4000-8000-{index:012d}",
                "device": name,
                "status": "normal",
                "fw_ver": "1.3.73",
                "pci": {
                    "dev": f"0x{dev.device}",
                    "bus_id": address,
                    "numa_node": str(dev.numa_node if dev.numa_node is not None else -1),
                    "link_speed": "32.0GT/s",
                    "link_width": "16",
                },
                "temperature": "35C",
                "card_power": "25000000uW",
                "pstate": "P14",
                "memory": {"used": "0", "total": "17179869184"},
                "util": "0.0",
                "board_info": "0005000c",
                "location": 5,
                "group_id": "0",
            }
        )
    return entries


class FakeSmi:
    """Handle on an installed fake rbln-smi: its paths and state."""

    def __init__(self, executable: str, state_file: str) -> None:
        self.executable = executable
        self.state_file = state_file

    def state(self) -> dict[str, Any]:
        with open(self.state_file) as fh:
            data: dict[str, Any] = json.load(fh)
        return data

    def update(self, **changes: Any) -> None:
        """Set top-level state keys (``fail``, ``hang``, ``create_noop``, ``devices``...)."""
        with locked_state(self.state_file) as data:
            data.update(changes)

    def set_device(self, bus_id: str, **fields: Any) -> None:
        """Change one device entry (``status="error"``, ``temperature="95C"``...)."""
        with locked_state(self.state_file) as data:
            for dev in data["devices"]:
                if dev["pci"]["bus_id"] == bus_id:
                    dev.update(fields)

    def groups(self) -> dict[str, str]:
        """PCI address -> current RSD group id."""
        return {d["pci"]["bus_id"]: str(d.get("group_id", "0")) for d in self.state()["devices"]}

    def calls(self) -> list[list[str]]:
        return [list(c) for c in self.state().get("calls", [])]


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def install_fake_smi(
    host: FakeHost,
    *,
    path: str = "/usr/bin/rbln-smi",
    devices: Iterable[Mapping[str, Any]] | None = None,
    **state: Any,
) -> FakeSmi:
    """Write the fake rbln-smi launcher at host ``path`` (also the file mounted into
    containers) with its state file next to it; devices default to the host's NPUs."""
    launcher = host.path(path)
    state_file = str(launcher.parent / f".{launcher.name}-state.json")
    data = {
        "kmd_version": "1.3.73",
        "devices": list(devices) if devices is not None else smi_entries(host),
        "dev_dir": str(host.path("/dev")),
        "fail": [],
        "hang": [],
        "calls": [],
    }
    data.update(state)
    launcher.parent.mkdir(parents=True, exist_ok=True)
    _write_json(state_file, data)
    script = Path(__file__).with_name("fakesmi.py")
    launcher.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} -S -E {shlex.quote(str(script))} "
        f'--state {shlex.quote(state_file)} "$@"\n'
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return FakeSmi(str(launcher), state_file)


def demo_host(host: FakeHost) -> dict[str, Any]:
    """4x CA22 behind two PCIe switches on two NUMA nodes, one REBEL CR03, two CA12 bound to
    vfio-pci for VMs (``rebellions.ai/ATOM_PT``), rbln-stat, and the fake rbln-smi (so
    allocations get their own RSD group); returns the config document."""
    add_ca22_switches(host, numa_nodes=2, switches_per_numa=1, cards_per_switch=2, base_bus=0xC0)
    chain = add_switch(host, 0xE0, 1, numa=1)[0]
    host.add_npu("0000:e3:00.0", device="2030", numa_node=1, parents=chain, index=_next_index(host))
    for slot, vm_chain in enumerate(add_switch(host, 0xA0, 2, numa=0)):
        add_vfio_npu(
            host,
            f"0000:{0xA3 + slot:02x}:00.0",
            group=80 + slot,
            device="1120",
            numa=0,
            parents=vm_chain,
        )
    add_tools(host)
    install_fake_smi(host)
    run_dir = host.path("/run")
    run_dir.mkdir(parents=True, exist_ok=True)
    return {"rsdLockFile": str(run_dir / "rbln-device-plugin.lock")}
