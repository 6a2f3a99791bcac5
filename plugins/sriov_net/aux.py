"""Scalable Functions on the auxiliary bus (``deviceType: auxNetDevice``), read from sysfs.

Upstream's ``auxNetDeviceProvider`` keeps every class 0x02 PCI function, asks sriovnet for its
auxiliary devices and builds each with ``NewAuxNetDevice``/``NewGenNetDevice``; the sysfs
reads behind those sriovnet calls, mirrored here::

    GetAuxNetDevicesFromPci(pci)   <pci>/net must exist; the directories of <pci>/ named
                                   <driver>.<type>.<n> (^(\\S+\\.){2}\\d+$), not nested ones
    GetSfIndexByAuxDev(aux)        /sys/bus/auxiliary/devices/<aux>/sfnum -> the function
                                   index of pfNames/rootDevices ranges (GetFuncID); missing:
                                   the device is dropped (only SFs have one)
    GetUplinkRepresentorFromAux    the parent's netdev in switchdev mode (non-empty
                                   phys_switch_id) whose phys_port_name is p<N>; none: dropped
    GetPfPciFromAux                the parent PCI function
    GetNetDevicesFromAux(aux)      /sys/bus/auxiliary/devices/<aux>/net/*
    GetRdmaDevicesForAuxdev(aux)   /sys/bus/auxiliary/devices/<aux>/infiniband/*
    ParseAuxDeviceType(aux)        the middle token of <driver>.<type>.<n>

The device ID is the auxiliary device name (``mlx5_core.sf.4``); vendor, device, driver and
NUMA node are the parent's. The link type is that of the SF's first netdev (no PF fallback).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devplugin_core import HostFS, HostReadError, PciDevice, Scan
from devplugin_core.toolkit import SYS_PCI_DEVICES

from .pools import NET_CLASS, NetCandidate

__all__ = [
    "SYS_AUX",
    "AuxDevice",
    "Found",
    "aux_names_of",
    "aux_type_of",
    "link_type_of",
    "read_aux",
    "sf_candidates",
    "uplink_representor",
]

SYS_AUX = "/sys/bus/auxiliary/devices"
_AUX_NAME = re.compile(r"^(\S+\.){2}\d+$")  # sriovnet's auxiliaryDeviceRe
_UPLINK_PORT = re.compile(r"^p\d+$")  # sriovnet's physPortRepRegex
#: ARPHRD numbers (``net/<if>/type``) -> the link type names netlink reports (the ones SFs use)
_LINK_TYPES = {1: "ether", 32: "infiniband", 65534: "none"}


def aux_type_of(name: str) -> str:
    """``sf`` of ``mlx5_core.sf.4``; ``""`` unless the name is ``<driver>.<type>.<n>`` with
    ``n`` a non-negative integer (upstream's ``ParseAuxDeviceType``)."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or not all(parts) or not parts[2].isdigit():
        return ""
    return parts[1]


@dataclass(frozen=True)
class AuxDevice:
    """One auxiliary device under a PCI function, as the scan and Allocate need it."""

    name: str
    parent: str
    sfnum: int | None = None
    netdevs: tuple[str, ...] = ()
    rdma: tuple[str, ...] = ()

    @property
    def aux_type(self) -> str:
        return aux_type_of(self.name)

    @property
    def path(self) -> str:
        return f"{SYS_AUX}/{self.name}"


def aux_names_of(host: HostFS, dev: PciDevice) -> list[str]:
    """The auxiliary devices directly under PCI function ``dev`` (blocking)."""
    base = f"{SYS_PCI_DEVICES}/{dev.address}"
    return [
        name
        for name in host.listdir(base)
        if _AUX_NAME.match(name) and host.is_dir(f"{base}/{name}")
    ]


def read_aux(host: HostFS, name: str, parent: str) -> AuxDevice | None:
    """The auxiliary device ``name`` now (``None`` if gone). Raises HostReadError."""
    base = f"{SYS_AUX}/{name}"
    if not host.exists(base):
        return None
    try:
        sfnum = host.read_int(f"{base}/sfnum")
    except HostReadError:
        sfnum = None
    rdma = tuple(
        n for n in host.listdir(f"{base}/infiniband") if host.is_dir(f"{base}/infiniband/{n}")
    )
    return AuxDevice(name, parent, sfnum, tuple(host.listdir(f"{base}/net")), rdma)


def link_type_of(host: HostFS, aux: AuxDevice) -> str:
    """The link type of the SF's first netdev (``""`` without one, e.g. moved into a pod)."""
    if not aux.netdevs:
        return ""
    try:
        type_id = host.read_int(f"{aux.path}/net/{aux.netdevs[0]}/type")
    except HostReadError:
        return ""
    return "" if type_id is None else _LINK_TYPES.get(type_id, str(type_id))


def uplink_representor(host: HostFS, dev: PciDevice) -> str:
    """The uplink representor of PCI function ``dev`` (its PF's for a VF), ``""`` unless its
    eswitch is in switchdev mode (sriovnet ``GetUplinkRepresentor``)."""
    address = dev.physfn or dev.address
    base = f"{SYS_PCI_DEVICES}/{address}/net"
    for name in host.listdir(base):
        try:
            switch_id = host.read_attr(f"{base}/{name}/phys_switch_id")
            port = host.read_attr(f"{base}/{name}/phys_port_name")
        except HostReadError:
            continue  # EOPNOTSUPP: legacy mode
        if switch_id and port and _UPLINK_PORT.match(port):
            return name
    return ""


#: one candidate and what building its Device needs (its function, or an SF and its parent)
Found = tuple[NetCandidate, PciDevice, AuxDevice | None]


def sf_candidates(
    scan: Scan, devices: Sequence[PciDevice], remember: Callable[[NetCandidate], NetCandidate]
) -> list[Found]:
    """The Scalable Functions under every class 0x02 function, each with the reason it is left
    out when upstream would drop it (see the module docstring)."""
    host, out = scan.host, list[Found]()
    for dev in devices:
        if dev.base_class != NET_CLASS:
            continue
        names = aux_names_of(host, dev)
        if not names:
            continue
        problem = ""
        if not host.exists(f"{SYS_PCI_DEVICES}/{dev.address}/net"):
            problem = f"its parent {dev.address} has no net/ directory"
        elif not dev.driver:
            problem = f"its parent {dev.address} has no driver bound"
        uplink = "" if problem else uplink_representor(host, dev)
        for name in names:
            try:
                aux = read_aux(host, name, dev.address)
            except HostReadError as err:
                scan.reject(name, f"cannot read it: {err}")
                continue
            why = problem or _sf_problem(aux, uplink, dev)
            if why or aux is None:
                scan.reject(name, why or "not on the auxiliary bus")
                continue
            c = NetCandidate(
                address=name,
                vendor=dev.vendor,
                device=dev.device,
                driver=dev.driver or "",
                netdev=aux.netdevs[0] if aux.netdevs else "",
                pf_name=uplink,
                pf_address=dev.address,
                vf_index=aux.sfnum,
                link_type=link_type_of(host, aux),
                is_rdma=bool(aux.rdma),
                aux_type=aux.aux_type,
            )
            out.append((remember(c) if not aux.netdevs else c, dev, aux))
    return out


def _sf_problem(aux: AuxDevice | None, uplink: str, parent: PciDevice) -> str:
    """Why upstream's NewAuxNetDevice would not build this auxiliary device."""
    if aux is None:
        return ""
    if aux.sfnum is None:
        return "not a Scalable Function: no readable sfnum"
    if not aux.aux_type:
        return "its name is not <driver>.<type>.<index>"
    if not uplink:
        pf = parent.physfn or parent.address
        return f"no uplink representor on {pf} (its eswitch is not in switchdev mode)"
    return ""
