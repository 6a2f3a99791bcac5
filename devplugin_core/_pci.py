"""PCI devices read from sysfs: the shared layer of every PCI-based plugin.

:func:`scan_pci` walks ``/sys/bus/pci/devices`` under a :class:`HostFS` once and returns a
:class:`PciScan`: every function's identity (vendor, device, class), its driver, NUMA node, IOMMU
group, SR-IOV links (``physfn``/``virtfnN``), netdevs (with link type and state), RDMA devices
(with ports and their ``/dev/infiniband`` char devices) and the PCI path from the root port.

It never raises for one bad device: a missing, empty, garbage or non-UTF-8 file, a dangling
link or a device vanishing mid-scan skips that device (or that attribute) with a log line that
names the path, and records it in :attr:`PciScan.problems`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from ._errors import HostPathError
from ._hostfs import HostFS, HostReadError

__all__ = [
    "ARPHRD_LINK_TYPES",
    "PCI_ADDRESS",
    "SYS_PCI_DEVICES",
    "SYS_PCI_DRIVERS",
    "CharDevice",
    "NetDevice",
    "PciDevice",
    "PciScan",
    "RdmaDevice",
    "RdmaPort",
    "bridges_of",
    "pci_class",
    "rdma_char_devices_of",
    "rdma_char_index",
    "scan_pci",
]

log = logging.getLogger("devplugin.pci")

SYS_PCI_DEVICES = "/sys/bus/pci/devices"
SYS_PCI_DRIVERS = "/sys/bus/pci/drivers"
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_PCI_COMPONENT = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_HEX_ID = re.compile(r"^(0x)?[0-9a-fA-F]{1,4}$")
_NETDEV = re.compile(r"^[^/\s]{1,15}$")
_IBDEV = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_CHARDEV = re.compile(r"^(uverbs|umad|issm|ucm)\d+$")
_PORT_STATE = re.compile(r"^(\d+):\s*(\S.*)$")
_MODALIAS = re.compile(
    r"^pci:v0000(?P<v>[0-9A-Fa-f]{4})d0000(?P<d>[0-9A-Fa-f]{4})sv[0-9A-Fa-f]{8}sd[0-9A-Fa-f]{8}"
    r"bc(?P<bc>[0-9A-Fa-f]{2})sc(?P<sc>[0-9A-Fa-f]{2})i(?P<pi>[0-9A-Fa-f]{2})"
)

#: ARPHRD numbers (``/sys/class/net/<if>/type``) to the link type names netlink tools print.
ARPHRD_LINK_TYPES = {
    1: "ether",
    32: "infiniband",
    768: "ipip",
    769: "tunnel6",
    772: "loopback",
    776: "sit",
    778: "gre",
    823: "ip6gre",
    65534: "none",
}
_RDMA_CLASS_DIRS = (
    ("/sys/class/infiniband_cm", ("ucm",)),
    ("/sys/class/infiniband_mad", ("issm", "umad")),
    ("/sys/class/infiniband_verbs", ("uverbs",)),
)


@dataclass(frozen=True)
class NetDevice:
    """A kernel netdev of a PCI function (``<bdf>/net/<name>``)."""

    name: str
    link_type: str = ""
    operstate: str = ""
    carrier: bool | None = None
    address: str = ""

    @property
    def up(self) -> bool:
        """Link usable: operstate ``up`` (or ``unknown`` with carrier, as some drivers report)."""
        if self.operstate == "up":
            return True
        return self.operstate == "unknown" and self.carrier is True


@dataclass(frozen=True)
class CharDevice:
    """A ``/dev/infiniband`` char device of an RDMA device (uverbs/umad/issm/ucm)."""

    kind: str
    name: str
    port: int | None = None

    @property
    def path(self) -> str:
        return f"/dev/infiniband/{self.name}"


@dataclass(frozen=True)
class RdmaPort:
    """One port of an RDMA device (``infiniband/<dev>/ports/<n>``)."""

    number: int
    state: str = ""
    state_id: int = 0
    phys_state: str = ""
    phys_state_id: int = 0
    link_layer: str = ""
    pkey: str = ""

    @property
    def active(self) -> bool:
        """Logical state ACTIVE (4) and physical state LinkUp (5) when reported."""
        return self.state_id == 4 and self.phys_state_id in (0, 5)


@dataclass(frozen=True)
class RdmaDevice:
    """An RDMA device (``mlx5_0``) of a PCI function, with its ports and char devices."""

    name: str
    ports: tuple[RdmaPort, ...] = ()
    char_devices: tuple[CharDevice, ...] = ()
    node_guid: str = ""
    fw_version: str = ""
    hca_type: str = ""

    def char(self, kind: str) -> tuple[CharDevice, ...]:
        return tuple(c for c in self.char_devices if c.kind == kind)


@dataclass(frozen=True)
class PciDevice:
    """One PCI function as sysfs shows it. IDs are lower-case hex without ``0x`` (``15b3``)."""

    address: str
    vendor: str
    device: str
    class_code: int
    subsystem_vendor: str = ""
    subsystem_device: str = ""
    driver: str | None = None
    numa_node: int | None = None
    iommu_group: str | None = None
    iommu_noiommu: bool = False
    physfn: str | None = None
    vf_index: int | None = None
    virtfns: tuple[str, ...] = ()
    sriov_totalvfs: int | None = None
    sriov_numvfs: int | None = None
    netdevs: tuple[str, ...] = ()
    rdma_devices: tuple[str, ...] = ()
    uio: tuple[str, ...] = ()
    acpi_index: str = ""
    path: str = ""
    upstream: tuple[str, ...] = field(default=())

    @property
    def base_class(self) -> int:
        return self.class_code >> 16

    @property
    def numa_nodes(self) -> tuple[int, ...]:
        """``(numa_node,)``, or ``()`` when unknown: what :class:`Device` wants."""
        return () if self.numa_node is None else (self.numa_node,)

    @property
    def is_vf(self) -> bool:
        return self.physfn is not None

    @property
    def is_pf(self) -> bool:
        """An SR-IOV capable physical function (has ``sriov_totalvfs``)."""
        return self.sriov_totalvfs is not None

    @property
    def sriov_enabled(self) -> bool:
        return bool(self.sriov_numvfs)

    @property
    def netdev(self) -> str:
        """The first netdev name (upstream plugins use the first entry of ``net/``)."""
        return self.netdevs[0] if self.netdevs else ""


@dataclass
class PciScan:
    """The result of one :func:`scan_pci` pass."""

    devices: dict[str, PciDevice] = field(default_factory=dict)
    netdevs: dict[str, NetDevice] = field(default_factory=dict)
    rdma: dict[str, RdmaDevice] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[PciDevice]:
        return iter(self.devices.values())

    def get(self, address: str) -> PciDevice | None:
        return self.devices.get(address)

    def pf_of(self, device: PciDevice) -> PciDevice | None:
        return self.devices.get(device.physfn) if device.physfn else None

    def pf_name(self, device: PciDevice) -> str:
        """The PF's first netdev name for a VF, ``""`` otherwise."""
        pf = self.pf_of(device)
        return pf.netdev if pf else ""

    def netdev_of(self, device: PciDevice) -> NetDevice | None:
        return self.netdevs.get(device.netdev) if device.netdev else None

    def link_type(self, device: PciDevice) -> str:
        """Link type of the device's netdev, else of its PF's (a VF in a pod has no netdev)."""
        own = self.netdev_of(device)
        if own is not None and own.link_type:
            return own.link_type
        pf = self.pf_of(device)
        if pf is not None:
            pf_net = self.netdev_of(pf)
            if pf_net is not None:
                return pf_net.link_type
        return ""

    def rdma_of(self, device: PciDevice) -> list[RdmaDevice]:
        return [self.rdma[n] for n in device.rdma_devices if n in self.rdma]

    def vfs_of(self, pf: PciDevice) -> list[PciDevice]:
        return [self.devices[a] for a in pf.virtfns if a in self.devices]


class _Reader:
    """Reads one device's attributes, turning failures into logged problems."""

    def __init__(self, host: HostFS, scan: PciScan) -> None:
        self.host = host
        self.scan = scan
        self.vf_indices: dict[str, int] = {}
        self.dirs: set[str] = set()  # real directories met during this scan (realpath)

    def problem(self, message: str) -> None:
        self.scan.problems.append(message)
        log.warning("%s", message)

    def attr(self, path: str) -> str | None:
        try:
            return self.host.read_attr(path)
        except HostReadError as err:
            self.problem(str(err))
            return None

    def int_attr(self, path: str, base: int = 10) -> int | None:
        text = self.attr(path)
        if text is None or text == "":
            return None
        try:
            return int(text, base)
        except ValueError:
            self.problem(f"ignoring {path}: not an integer ({text[:40]!r})")
            return None

    def link_name(self, path: str) -> str | None:
        try:
            return self.host.link_name(path)
        except HostReadError as err:
            self.problem(str(err))
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return self.host.listdir(path)
        except HostReadError as err:
            self.problem(str(err))
            return []


def _hex_id(text: str | None) -> str | None:
    if text is None or not _HEX_ID.match(text):
        return None
    return text.lower().removeprefix("0x").rjust(4, "0")


def _class_code(r: _Reader, base: str) -> int | None:
    """The function's ``class`` attribute (None when missing or not hex)."""
    text = r.attr(f"{base}/class")
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _read_identity(r: _Reader, base: str, class_code: int | None) -> tuple[str, str, int] | None:
    """Vendor, device and class (``class_code`` as read already), from modalias when one of
    them is unreadable."""
    vendor = _hex_id(r.attr(f"{base}/vendor"))
    device = _hex_id(r.attr(f"{base}/device"))
    if vendor and device and class_code is not None:
        return vendor, device, class_code
    modalias = r.attr(f"{base}/modalias")
    m = _MODALIAS.match(modalias or "")
    if m:
        code = int(m["bc"] + m["sc"] + m["pi"], 16)
        return m["v"].lower(), m["d"].lower(), code
    return None


def _read_netdev(r: _Reader, base: str, name: str) -> NetDevice:
    net = f"{base}/net/{name}"
    type_id = r.int_attr(f"{net}/type")
    link_type = ARPHRD_LINK_TYPES.get(type_id, str(type_id)) if type_id is not None else ""
    operstate = r.attr(f"{net}/operstate") or ""
    try:
        carrier_text = r.host.read_attr(f"{net}/carrier")
    except HostReadError:
        carrier_text = None  # EINVAL while the link is administratively down
    carrier = None if carrier_text in (None, "") else carrier_text == "1"
    address = r.attr(f"{net}/address") or ""
    return NetDevice(name, link_type, operstate, carrier, address)


def _parse_state(text: str | None) -> tuple[int, str]:
    m = _PORT_STATE.match(text or "")
    return (int(m[1]), m[2].strip()) if m else (0, (text or "").strip())


def _read_rdma(
    r: _Reader, base: str, name: str, chars: dict[str, list[CharDevice]], attributes: bool
) -> RdmaDevice:
    dev = f"{base}/infiniband/{name}"
    ports = []
    for entry in r.listdir(f"{dev}/ports"):
        if not entry.isdigit():
            continue
        if not attributes:
            ports.append(RdmaPort(int(entry)))
            continue
        pdir = f"{dev}/ports/{entry}"
        state_id, state = _parse_state(r.attr(f"{pdir}/state"))
        phys_id, phys = _parse_state(r.attr(f"{pdir}/phys_state"))
        ports.append(
            RdmaPort(
                number=int(entry),
                state=state,
                state_id=state_id,
                phys_state=phys,
                phys_state_id=phys_id,
                link_layer=r.attr(f"{pdir}/link_layer") or "",
                pkey=r.attr(f"{pdir}/pkeys/0") or "",
            )
        )
    ports.sort(key=lambda p: p.number)
    if not attributes:
        return RdmaDevice(name, tuple(ports), tuple(chars.get(name, ())))
    return RdmaDevice(
        name=name,
        ports=tuple(ports),
        char_devices=tuple(chars.get(name, ())),
        node_guid=r.attr(f"{dev}/node_guid") or "",
        fw_version=r.attr(f"{dev}/fw_ver") or "",
        hca_type=r.attr(f"{dev}/hca_type") or "",
    )


def _add_chars(
    r: _Reader, dirs: Iterable[tuple[str, tuple[str, ...]]], index: dict[str, list[CharDevice]]
) -> None:
    """The char devices listed in ``dirs`` (class directories and the kinds each holds), by
    the RDMA device their ``ibdev`` names."""
    for class_dir, kinds in dirs:
        for entry in r.listdir(class_dir):
            m = _CHARDEV.match(entry)
            if not m or m[1] not in kinds:
                continue
            ibdev = r.attr(f"{class_dir}/{entry}/ibdev")
            if not ibdev or not _IBDEV.match(ibdev):
                if ibdev is None:  # listed, but nothing behind it: a dangling class link
                    r.problem(f"ignoring {class_dir}/{entry}: no ibdev attribute (dangling link?)")
                else:
                    r.problem(f"ignoring {class_dir}/{entry}/ibdev: invalid name {ibdev[:40]!r}")
                continue
            port = r.int_attr(f"{class_dir}/{entry}/port") if m[1] in ("umad", "issm") else None
            index.setdefault(ibdev, []).append(CharDevice(m[1], entry, port))


def _sorted_chars(index: dict[str, list[CharDevice]]) -> dict[str, list[CharDevice]]:
    order = {"ucm": 0, "issm": 1, "umad": 2, "uverbs": 3}
    for devs in index.values():
        devs.sort(key=lambda c: (order[c.kind], c.port or 0, len(c.name), c.name))
    return index


def _chars_below(base: str) -> list[tuple[str, tuple[str, ...]]]:
    """The class directories below one device directory (``<bdf>/infiniband_verbs``...): a
    char device's class link in ``/sys/class`` points below the function it belongs to."""
    return [(f"{base}/{d.rsplit('/', 1)[1]}", kinds) for d, kinds in _RDMA_CLASS_DIRS]


def rdma_char_index(host: HostFS, reader: _Reader | None = None) -> dict[str, list[CharDevice]]:
    """Map RDMA device name -> its ``/dev/infiniband`` char devices, from the sysfs class dirs
    (``ibdev`` files; uverbs/umad indices are independent of the ``mlx5_N`` index)."""
    index: dict[str, list[CharDevice]] = {}
    _add_chars(reader or _Reader(host, PciScan()), _RDMA_CLASS_DIRS, index)
    return _sorted_chars(index)


def rdma_char_devices_of(
    host: HostFS, address: str, *, device_dir: str | None = None
) -> dict[str, list[CharDevice]]:
    """The char devices of one PCI function's RDMA devices, from the class devices below the
    function itself (``<bdf>/infiniband_verbs/uverbsN``...) — O(1) in the host size, unlike
    :func:`rdma_char_index`, so it suits the Allocate path (blocking; raises HostReadError).
    ``device_dir``: read below this sysfs device directory instead (a device that is not a PCI
    function, e.g. ``/sys/bus/auxiliary/devices/mlx5_core.sf.4``)."""
    base = device_dir or f"{SYS_PCI_DEVICES}/{address}"
    index: dict[str, list[CharDevice]] = {}
    for cls, kinds in _chars_below(base):
        for entry in host.listdir(cls):
            m = _CHARDEV.match(entry)
            if not m or m[1] not in kinds:
                continue
            ibdev = host.read_attr(f"{cls}/{entry}/ibdev")
            if not ibdev or not _IBDEV.match(ibdev):
                continue
            port = host.read_int(f"{cls}/{entry}/port") if m[1] in ("umad", "issm") else None
            index.setdefault(ibdev, []).append(CharDevice(m[1], entry, port))
    return _sorted_chars(index)


def _vf_index(r: _Reader, base: str, address: str) -> int | None:
    for entry in r.listdir(f"{base}/physfn"):
        if entry.startswith("virtfn") and entry[6:].isdigit():
            target = r.link_name(f"{base}/physfn/{entry}")
            if target == address:
                return int(entry[6:])
    return None


def _read_device(r: _Reader, address: str, classes: frozenset[int] | None) -> PciDevice | None:
    """The function's own attributes and links, and the names of its netdevs and RDMA devices
    (their details are read by :func:`_read_details`)."""
    host = r.host
    base = f"{SYS_PCI_DEVICES}/{address}"
    class_code = _class_code(r, base)
    if classes is not None and class_code is not None and (class_code >> 16) not in classes:
        return None  # one read for a function the scan does not want
    try:
        real = host.realpath(base, dirs=r.dirs)
    except HostPathError:
        r.problem(f"skipping {base}: dangling link (device vanished?)")
        return None
    identity = _read_identity(r, base, class_code)
    if identity is None:
        r.problem(f"skipping {base}: vendor/device/class unreadable")
        return None
    vendor, device, class_code = identity
    if classes is not None and (class_code >> 16) not in classes:
        return None
    entries = r.listdir(base)
    present = frozenset(entries)  # optional attributes absent from the listing are not opened

    def attr(name: str) -> str | None:
        return r.attr(f"{base}/{name}") if name in present else None

    def int_attr(name: str) -> int | None:
        return r.int_attr(f"{base}/{name}") if name in present else None

    def link(name: str) -> str | None:
        return r.link_name(f"{base}/{name}") if name in present else None

    numa = int_attr("numa_node")
    iommu = link("iommu_group")
    noiommu = False
    if iommu is not None:
        group_name = r.attr(f"/sys/kernel/iommu_groups/{iommu}/name")
        noiommu = group_name == "vfio-noiommu"
    physfn = link("physfn")
    if physfn is not None and not PCI_ADDRESS.match(physfn):
        r.problem(f"ignoring {base}/physfn: not a PCI address ({physfn!r})")
        physfn = None
    virtfns: list[tuple[int, str]] = []
    netdevs: list[str] = []
    rdma: list[str] = []
    uio: list[str] = []
    for entry in entries:
        if entry.startswith("virtfn") and entry[6:].isdigit():
            target = r.link_name(f"{base}/{entry}")
            if target and PCI_ADDRESS.match(target):
                virtfns.append((int(entry[6:]), target))
        elif entry == "net":
            netdevs = [n for n in r.listdir(f"{base}/net") if _NETDEV.match(n)]
        elif entry == "infiniband":
            rdma = [
                n
                for n in r.listdir(f"{base}/infiniband")
                if _IBDEV.match(n) and host.is_dir(f"{base}/infiniband/{n}")
            ]
        elif entry == "uio":
            uio = [n for n in r.listdir(f"{base}/uio") if re.fullmatch(r"uio\d+", n)]
    if virtfns:
        r.vf_indices.update({vf: n for n, vf in virtfns})
    upstream = tuple(p for p in real.split("/") if _PCI_COMPONENT.match(p))
    return PciDevice(
        address=address,
        vendor=vendor,
        device=device,
        class_code=class_code,
        subsystem_vendor=_hex_id(attr("subsystem_vendor")) or "",
        subsystem_device=_hex_id(attr("subsystem_device")) or "",
        driver=link("driver"),
        numa_node=numa if numa is not None and numa >= 0 else None,
        iommu_group=iommu if iommu and iommu.isdigit() else None,
        iommu_noiommu=noiommu,
        physfn=physfn,
        vf_index=r.vf_indices.get(address),  # from the PF's virtfnN links (see scan_pci)
        virtfns=tuple(a for _, a in sorted(virtfns)),
        sriov_totalvfs=int_attr("sriov_totalvfs"),
        sriov_numvfs=int_attr("sriov_numvfs"),
        netdevs=tuple(netdevs),
        rdma_devices=tuple(rdma),
        uio=tuple(uio),
        acpi_index=attr("acpi_index") or "",
        path=real,
        upstream=upstream[:-1] if upstream and upstream[-1] == address else upstream,
    )


def _read_details(
    r: _Reader,
    dev: PciDevice,
    chars: dict[str, list[CharDevice]] | None,
    rdma_attributes: bool,
) -> None:
    base = f"{SYS_PCI_DEVICES}/{dev.address}"
    for name in dev.netdevs:
        if name not in r.scan.netdevs:
            r.scan.netdevs[name] = _read_netdev(r, base, name)
    if chars is not None:
        for name in dev.rdma_devices:
            if name not in r.scan.rdma:
                r.scan.rdma[name] = _read_rdma(r, base, name, chars, rdma_attributes)


def scan_pci(
    host: HostFS,
    *,
    classes: Iterable[int] | None = None,
    rdma: bool = True,
    details: Callable[[PciDevice], bool] | None = None,
    rdma_attributes: bool = True,
) -> PciScan:
    """Read every PCI function under ``host`` (blocking; run it in a worker thread).

    ``classes``: keep only these classes, spelled as sysfs and ``FakeHost.add_pci`` spell them
    (24-bit ``0x020000``, ``0x120000``) or as the base class alone (``0x02`` network, ``0x12``
    accelerators); SR-IOV links to functions outside the filter are still recorded by address.
    ``rdma``: also read RDMA devices, their ports and char devices.
    ``details``: read netdevs (link type, state) and RDMA devices only for the functions it
    accepts, given each function as read without them (identity, driver, links, and the names
    of its netdevs and RDMA devices); the others stay in :attr:`PciScan.devices` with nothing in
    :attr:`~PciScan.netdevs` or :attr:`~PciScan.rdma`. The PF of an accepted VF is read too
    (a VF without a netdev takes its PF's link type). Default: every function.
    ``rdma_attributes``: False leaves the RDMA attributes out (each port's state, physical
    state, link layer and P_Key, and the device's GUID, firmware and HCA type): the devices
    carry their names, port numbers and char devices, for plugins that read state live.
    """
    scan = PciScan()
    r = _Reader(host, scan)
    wanted = frozenset(c >> 16 if c > 0xFF else c for c in classes) if classes is not None else None
    for address in r.listdir(SYS_PCI_DEVICES):
        if not PCI_ADDRESS.match(address):
            r.problem(f"ignoring {SYS_PCI_DEVICES}/{address}: not a PCI address")
            continue
        try:
            dev = _read_device(r, address, wanted)
        except (HostReadError, HostPathError, OSError) as err:
            r.problem(f"skipping {SYS_PCI_DEVICES}/{address}: {err}")
            continue
        if dev is not None:
            scan.devices[address] = dev
    for address, dev in scan.devices.items():
        if dev.physfn is None or dev.vf_index is not None:
            continue  # a VF read after its PF has its index already
        index = r.vf_indices.get(address)
        if index is None and dev.physfn not in scan.devices:
            index = _vf_index(r, f"{SYS_PCI_DEVICES}/{address}", address)
        if index is not None:
            scan.devices[address] = replace(dev, vf_index=index)
    chosen = list(scan.devices.values())
    if details is not None:  # the accepted functions and the PFs of accepted VFs, in order
        accepted = {d.address for d in chosen if details(d)}
        accepted |= {d.physfn for d in chosen if d.address in accepted and d.physfn}
        chosen = [d for d in chosen if d.address in accepted]
    if not chosen:
        return scan
    chars: dict[str, list[CharDevice]] | None = None
    if rdma:
        # one pass over the class directories, or, when only a few of the host's RDMA
        # functions are read, the directories below each of them (a handful of reads each)
        with_rdma = sum(1 for d in scan.devices.values() if d.rdma_devices)
        few = [d.address for d in chosen if d.rdma_devices]
        chars = {}
        if 2 * len(few) < with_rdma:
            for address in few:
                _add_chars(r, _chars_below(f"{SYS_PCI_DEVICES}/{address}"), chars)
        else:
            _add_chars(r, _RDMA_CLASS_DIRS, chars)
        _sorted_chars(chars)
    for dev in chosen:
        try:
            _read_details(r, dev, chars, rdma_attributes)
        except (HostReadError, HostPathError, OSError) as err:
            r.problem(
                f"skipping the netdevs and RDMA devices of {SYS_PCI_DEVICES}/{dev.address}: {err}"
            )
    return scan


def pci_class(host: HostFS, address: str) -> int | None:
    """The class code of any PCI function (e.g. a bridge outside a filtered scan)."""
    try:
        text = host.read_attr(f"{SYS_PCI_DEVICES}/{address}/class")
        return int(text, 16) if text else None
    except (HostReadError, ValueError):
        return None


def bridges_of(
    host: HostFS, dev: PciDevice, classes: dict[str, int | None] | None = None
) -> tuple[str, ...]:
    """PCI-to-PCI bridges (class 0x0604) above ``dev``, root port first, from the resolved
    sysfs path (blocking). ``classes`` caches class codes across calls within one scan."""
    cache = classes if classes is not None else {}
    out = []
    for address in dev.upstream:
        if address not in cache:
            cache[address] = pci_class(host, address)
        code = cache[address]
        if code is not None and code >> 8 == 0x0604:
            out.append(address)
    return tuple(out)
