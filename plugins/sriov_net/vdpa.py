"""vDPA devices of VFs, read from sysfs (``vdpaType`` selectors).

Upstream (``devices.GetVdpaDevice`` through govdpa's ``GetVdpaDevicesByPciAddress``) lists the
vDPA devices over the vdpa generic netlink family and keeps the first whose management device
is ``pci/<vf>``; it then reads the driver and the vhost-vdpa device from sysfs. The kernel
places a vDPA device under its parent device, so sysfs alone tells the same::

    /sys/bus/vdpa/devices/vdpa0 -> ../../../devices/pci0000:00/.../0000:65:00.2/vdpa0
    .../vdpa0/driver -> ../../../../bus/vdpa/drivers/vhost_vdpa    (or virtio_vdpa)
    .../vdpa0/vhost-vdpa-3/dev                                      (vhost_vdpa: /dev/vhost-vdpa-3)

The char device's number is its own (``vhost-vdpa-M``, M unrelated to the ``vdpaN`` name), so
its name is read from the directory (govdpa ``GetVhostVdpaDevInPath``), never derived.
Deviation: a vhost device whose ``/dev`` node is missing makes only that device unusable
(govdpa's listing fails as a whole, which empties every vDPA pool).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from devplugin_core import HostFS, HostReadError
from devplugin_core.toolkit import HostPathError, natural_key

__all__ = [
    "SYS_VDPA",
    "VDPA_DRIVERS",
    "VdpaDevice",
    "read_vdpa",
    "vdpa_by_function",
    "vdpa_fingerprint",
]

SYS_VDPA = "/sys/bus/vdpa/devices"
SYS_VDPA_DRIVERS = "/sys/bus/vdpa/drivers"
#: vDPA bus driver -> upstream's vdpaType (``types.SupportedVdpaTypes``)
VDPA_DRIVERS = {"vhost_vdpa": "vhost", "virtio_vdpa": "virtio"}
_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@dataclass(frozen=True)
class VdpaDevice:
    """One vDPA device: its name on the vdpa bus, the function it belongs to, its driver and,
    bound to ``vhost_vdpa``, its char device (``vhost-vdpa-3``; ``""`` when the node is
    missing from ``/dev``)."""

    name: str
    function: str
    driver: str = ""
    vhost: str = ""

    @property
    def kind(self) -> str:
        """``vhost``, ``virtio`` or ``""`` (unbound or another driver: upstream's invalid)."""
        return VDPA_DRIVERS.get(self.driver, "")

    @property
    def path(self) -> str:
        return f"/dev/{self.vhost}" if self.vhost else ""

    def state(self) -> str:
        """How ``devplugin discover`` describes it."""
        if not self.driver:
            return f"{self.name} is bound to no vDPA driver"
        if not self.kind:
            return f"{self.name} is bound to {self.driver}, which is neither vhost nor virtio"
        if self.kind == "vhost" and not self.vhost:
            return f"{self.name} is bound to vhost_vdpa but has no /dev/vhost-vdpa-* node"
        return f"{self.name} is bound to {self.driver} ({self.kind})"


def read_vdpa(host: HostFS, name: str) -> VdpaDevice | None:
    """The vDPA device ``name`` now (``None`` if gone or not under a PCI function).
    Blocking; raises HostReadError."""
    link = f"{SYS_VDPA}/{name}"
    try:
        real = host.realpath(link)
    except HostPathError:
        return None
    function = real.rstrip("/").rsplit("/", 2)[-2]
    if not _PCI.match(function):
        return None  # vdpa_sim and friends, or an SF's vDPA device: not a PCI VF's
    driver = host.link_name(f"{link}/driver") or ""
    vhost = ""
    if driver == "vhost_vdpa":
        for entry in sorted(host.listdir(real), key=natural_key):
            if "vhost-vdpa" in entry and host.is_dir(f"{real}/{entry}"):
                vhost = entry if host.exists(f"/dev/{entry}") else ""
                break
    return VdpaDevice(name, function, driver, vhost)


def vdpa_by_function(host: HostFS) -> Mapping[str, VdpaDevice]:
    """The first vDPA device (in name order) of every PCI function that has one."""
    out: dict[str, VdpaDevice] = {}
    try:
        names = host.listdir(SYS_VDPA)
    except HostReadError:
        return out
    for name in sorted(names, key=natural_key):
        try:
            device = read_vdpa(host, name)
        except HostReadError:
            continue
        if device is not None:
            out.setdefault(device.function, device)
    return out


def vdpa_fingerprint(host: HostFS) -> Hashable:
    """The vDPA devices and which driver holds each (a rebind), for the scanner's fingerprint."""
    devices = tuple(host.listdir(SYS_VDPA))
    known = set(devices)
    drivers = tuple(
        (driver, tuple(n for n in host.listdir(f"{SYS_VDPA_DRIVERS}/{driver}") if n in known))
        for driver in host.listdir(SYS_VDPA_DRIVERS)
    )
    return devices, drivers
