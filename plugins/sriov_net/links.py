"""The link state of a PF, the way health checks and metrics need it: cheap and current.

A PF's netdev is found under its PCI function (``/sys/bus/pci/devices/<pf>/net/``), so a rename
never confuses us; with several netdevs (switchdev mode lists VF representors there too) the
uplink is the one whose ``phys_port_name`` is not a representor's. The state comes from the
netlink monitor when it knows the link, else from sysfs ``operstate``/``carrier``. An unreadable
state counts as up: we only mark VFs Unhealthy on evidence (upstream PR #640 does the same).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from devplugin_core import HostFS, HostReadError
from devplugin_core.pci import SYS_PCI_DEVICES

from .netlink import LinkMonitor

__all__ = ["PfLink", "PfLinks", "uplink_netdev"]

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


class PfLinks:
    """Reads PF links through netlink (when it knows the link) or sysfs."""

    def __init__(self, host: HostFS, monitor: LinkMonitor | None) -> None:
        self.host = host
        self.monitor = monitor
        self._uplinks: dict[str, str] = {}  # PF -> uplink, kept while it is listed

    def read(self, pf: str) -> PfLink:
        base = f"{SYS_PCI_DEVICES}/{pf}"
        netdev = self._uplinks.get(pf, "")
        if not netdev or not self.host.lexists(f"{base}/net/{netdev}"):
            # first read, or the uplink went away or was renamed: look at the PF's netdevs
            try:
                names = self.host.listdir(f"{base}/net")
            except HostReadError:
                return PfLink(pf, True)
            if not names:
                return PfLink(pf, self.host.exists(base))
            netdev = self._uplinks[pf] = uplink_netdev(self.host, pf, names)
        if self.monitor is not None:
            up = self.monitor.state(netdev)
            if up is not None:
                return PfLink(pf, True, netdev, up, "netlink")
        return PfLink(pf, True, netdev, self._sysfs(f"{base}/net/{netdev}"), "sysfs")

    def _sysfs(self, netdir: str) -> bool | None:
        try:
            operstate = self.host.read_attr(f"{netdir}/operstate")
        except HostReadError:
            return None
        if operstate is None:
            return None
        if operstate == "up":
            return True
        if operstate == "unknown":
            try:
                carrier = self.host.read_attr(f"{netdir}/carrier")
            except HostReadError:
                return None  # EINVAL while administratively down: undecidable, keep healthy
            return None if carrier is None else carrier == "1"
        return False
