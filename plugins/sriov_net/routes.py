"""Which netdevs carry a default route: those devices are never handed to pods.

Upstream asks netlink for each device's IPv4 routes and skips a device when one has no
destination. We read the kernel's route tables from procfs instead (one read per discovery
pass, no netlink socket): ``/proc/net/route`` (IPv4 main table) and ``/proc/net/ipv6_route``.
procfs shows the routes of the *reader's* network namespace wherever it is mounted, so the
plugin runs with ``hostNetwork: true`` (as upstream's DaemonSet does) and reads the files under
``--host-root`` when they exist there (always on a fake host), else its own ``/proc``.
IPv6 is our addition: a node whose management NIC only has an IPv6 default route must not lose
it to a pod either.
"""

from __future__ import annotations

import logging

from devplugin_core import HostFS, HostReadError

__all__ = ["default_route_netdevs"]

log = logging.getLogger("devplugin.sriov_net.routes")

_OWN = HostFS("/")
RTF_UP = 0x0001
RTF_REJECT = 0x0200


def _ipv4(text: str) -> set[str]:
    names = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, destination, flags, mask = fields[0], fields[1], fields[3], fields[7]
        try:
            up = int(flags, 16) & RTF_UP
        except ValueError:
            continue
        if up and int(destination, 16) == 0 and int(mask, 16) == 0:
            names.add(iface)
    return names


def _ipv6(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        destination, prefix_len, flags, iface = fields[0], fields[1], fields[8], fields[9]
        try:
            usable = int(flags, 16) & RTF_UP and not int(flags, 16) & RTF_REJECT
        except ValueError:
            continue
        if usable and prefix_len == "00" and set(destination) == {"0"} and iface != "lo":
            names.add(iface)
    return names


def default_route_netdevs(host: HostFS) -> frozenset[str]:
    """Names of netdevs with an IPv4 or IPv6 default route (unreadable tables count as none)."""
    names: set[str] = set()
    for path, parse in (("/proc/net/route", _ipv4), ("/proc/net/ipv6_route", _ipv6)):
        reader = host if host.fake or host.lexists(path) else _OWN
        try:
            text = reader.read_attr(path)
        except HostReadError as err:
            log.warning("cannot read %s, assuming no default routes there: %s", path, err)
            continue
        if text:
            try:
                names |= parse(text)
            except ValueError as err:
                log.warning("cannot parse %s: %s", path, err)
    return frozenset(names)
