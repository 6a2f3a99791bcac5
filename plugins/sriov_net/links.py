"""The link state of a PF, the way health checks and metrics need it: cheap and current.

A PF's netdev is found under its PCI function (``/sys/bus/pci/devices/<pf>/net/``), so a rename
never confuses us; with several netdevs (switchdev mode lists VF representors there too) the
uplink is the one whose ``phys_port_name`` is not a representor's. The state comes from the
netlink monitor when it knows the link, else from sysfs ``operstate``/``carrier``. An unreadable
state counts as up: we only mark VFs Unhealthy on evidence (upstream PR #640 does the same).
Nothing is remembered between reads: the uplink name comes from the scan's payload.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from devplugin_core import HostFS, HostReadError
from devplugin_core.toolkit import SYS_PCI_DEVICES

from .netlink import LinkMonitor

__all__ = ["PfLink", "read_link", "uplink_netdev"]

_REPRESENTOR = re.compile(r"^(c\d+)?pf\d+(vf|sf)\d+$")


def uplink_netdev(host: HostFS, pf: str, names: Sequence[str]) -> str:
    """The PF's own netdev among ``names`` (the first one that is not a representor)."""
    if len(names) <= 1:
        return names[0] if names else ""
    for name in names:
        try:
            port = host.read_attr(f"{SYS_PCI_DEVICES}/{pf}/net/{name}/phys_port_name")
        except HostReadError:
            port = None  # EOPNOTSUPP in legacy mode: not a representor
        if not port or not _REPRESENTOR.match(port):
            return name
    return names[0]


@dataclass(frozen=True)
class PfLink:
    """One PF: does its PCI function exist, its uplink netdev, is the link up (None: unknown)."""

    address: str
    present: bool
    netdev: str = ""
    up: bool | None = None
    source: str = ""

    @property
    def down(self) -> bool:
        return self.present and self.up is False


def read_link(host: HostFS, monitor: LinkMonitor | None, pf: str, netdev: str = "") -> PfLink:
    """The link of ``pf`` now. ``netdev`` is its uplink as the scan saw it: while that name is
    listed under the PF, nothing else is listed (a rename or a new uplink re-lists ``net/``)."""
    base = f"{SYS_PCI_DEVICES}/{pf}"
    if not netdev or not host.lexists(f"{base}/net/{netdev}"):
        try:
            names = host.listdir(f"{base}/net")
        except HostReadError:
            return PfLink(pf, True)
        if not names:
            return PfLink(pf, host.exists(base))
        netdev = uplink_netdev(host, pf, names)
    if monitor is not None:
        up = monitor.state(netdev)
        if up is not None:
            return PfLink(pf, True, netdev, up, "netlink")
    return PfLink(pf, True, netdev, _sysfs(host, f"{base}/net/{netdev}"), "sysfs")


def _sysfs(host: HostFS, netdir: str) -> bool | None:
    try:
        operstate = host.read_attr(f"{netdir}/operstate")
    except HostReadError:
        return None
    if operstate is None:
        return None
    if operstate == "up":
        return True
    if operstate == "unknown":
        try:
            carrier = host.read_attr(f"{netdir}/carrier")
        except HostReadError:
            return None  # EINVAL while administratively down: undecidable, keep healthy
        return None if carrier is None else carrier == "1"
    return False
