"""Cheap live reads of one HCA's state: port state files, netdev link, port counters.

Health checks (every ``healthCheckInterval``) and metrics scrapes read only these few files per
HCA; neither ever rescans PCI. Paths go through the PCI function
(``/sys/bus/pci/devices/<bdf>/infiniband/<ibdev>/ports/<n>``), so a hot-removed HCA reads as
"vanished" instead of silently reading another device that reused its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devplugin_core import HostFS, HostReadError

from . import verbs

__all__ = [
    "ACTIVE",
    "LINK_UP",
    "HcaRef",
    "NetStatus",
    "PortRef",
    "PortStatus",
    "hca_down_reason",
    "read_counter",
    "read_netdev",
    "read_port",
]

ACTIVE = 4  # ib_port_state IB_PORT_ACTIVE
LINK_UP = 5  # physical state LinkUp
_STATE = re.compile(r"^(\d+):\s*(\S.*)$")
#: operstates (RFC 2863 names the kernel prints) in which the netdev cannot carry traffic.
_NETDEV_DOWN = ("down", "lowerlayerdown", "notpresent")


@dataclass(frozen=True)
class PortRef:
    """Where one RDMA port lives in sysfs."""

    ibdev: str
    number: int
    path: str  # host path of the ports/<n> directory


@dataclass(frozen=True)
class HcaRef:
    """What live checks need to know about one matched HCA (a PCI function)."""

    address: str
    ports: tuple[PortRef, ...]
    netdev: str = ""


@dataclass(frozen=True)
class PortStatus:
    """A port's logical and physical state as the kernel prints them (``4: ACTIVE``)."""

    state_id: int
    state: str
    phys_id: int
    phys: str

    @property
    def active(self) -> bool:
        """ACTIVE, and LinkUp when the physical state is known."""
        return self.state_id == ACTIVE and self.phys_id in (0, LINK_UP)

    def describe(self) -> str:
        return f"{self.state or self.state_id}/{self.phys or self.phys_id}"


@dataclass(frozen=True)
class NetStatus:
    """A netdev's ``operstate`` and ``carrier`` (None when unreadable, e.g. admin down)."""

    operstate: str
    carrier: bool | None

    @property
    def down(self) -> bool:
        return self.operstate in _NETDEV_DOWN or self.carrier is False


def _parse(text: str | None) -> tuple[int, str]:
    match = _STATE.match(text or "")
    return (int(match[1]), match[2].strip()) if match else (0, (text or "").strip())


def read_port(host: HostFS, port: PortRef) -> PortStatus | None:
    """The port's state; None when its files are gone (HCA removed or driver unloaded).

    When sysfs cannot be read and pyverbs is importable, the verbs query answers instead.
    """
    try:
        state = host.read_attr(f"{port.path}/state")
        phys = host.read_attr(f"{port.path}/phys_state")
    except HostReadError:
        state = phys = None
    if state is None:
        queried = verbs.query_port(host, port.ibdev, port.number)
        if queried is None:
            return None
        return PortStatus(queried[0], "", queried[1], "")
    state_id, state_name = _parse(state)
    phys_id, phys_name = _parse(phys)
    return PortStatus(state_id, state_name, phys_id, phys_name)


def read_netdev(host: HostFS, name: str, *, brief: bool = False) -> NetStatus | None:
    """The netdev's link; None when it is not in the host namespace (or has no name).

    ``brief``: ``carrier`` is not read when ``operstate`` is ``up`` (which implies it)."""
    if not name:
        return None
    base = f"/sys/class/net/{name}"
    try:
        operstate = host.read_attr(f"{base}/operstate")
    except HostReadError:
        return None
    if operstate is None:
        return None
    if brief and operstate == "up":
        return NetStatus(operstate, True)
    try:
        carrier_text = host.read_attr(f"{base}/carrier")
    except HostReadError:  # EINVAL while the link is administratively down
        carrier_text = None
    carrier = None if not carrier_text else carrier_text == "1"
    return NetStatus(operstate, carrier)


def read_counter(host: HostFS, port: PortRef, name: str) -> int | None:
    """One ``ports/<n>/counters/<name>`` value; None when absent or unreadable."""
    try:
        return host.read_int(f"{port.path}/counters/{name}")
    except HostReadError:
        return None


def hca_down_reason(host: HostFS, hca: HcaRef) -> str | None:
    """Why the HCA cannot carry RDMA traffic now, or None when it can.

    Down means: no port is ACTIVE/LinkUp, or — for RoCE, where ``hca.netdev`` is set — its
    netdev reports no link (the macvlan/ipvlan networks of shared-mode pods ride on it).
    """
    states = []
    up = False
    for port in hca.ports:
        status = read_port(host, port)
        name = f"{port.ibdev} port {port.number}"
        if status is None and not host.exists(port.path):
            states.append(f"{name} vanished")
        elif status is None:  # the port is there, its state file is missing or unreadable
            states.append(f"{name} state unreadable ({port.path}/state)")
        elif status.active:
            up = True
        elif status.state_id == 0:  # empty or not the kernel's "N: NAME" format
            states.append(f"{name} state unreadable ({port.path}/state: {status.state[:40]!r})")
        else:
            states.append(f"{name} {status.describe()}")
    if not hca.ports:
        states.append("no RDMA ports")
    if not up:
        return f"{hca.address} ({', '.join(states)})"
    net = read_netdev(host, hca.netdev, brief=True)
    if net is not None and net.down:
        link = "no carrier" if net.carrier is False else f"operstate {net.operstate}"
        return f"{hca.address} (netdev {hca.netdev}: {link})"
    return None
