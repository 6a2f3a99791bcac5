"""Finding NPUs: one PCI scan -> pools (upstream selectors) -> one Device per PCI function.

A device's ID is its PCI address. A function bound to ``rebellions`` is a container device: its
char device comes from the driver's ``pools`` file (second line, first word, e.g. ``rbln0``). A
function bound to ``vfio-pci`` is a passthrough device for VMs (:mod:`.passthrough`): its
IOMMU group's node. Zero-config serves the first kind per family (``ATOM``, ``REBEL``) and the
second per product (``ATOM_PT``, ``ATOM_CA22_PT``...); a configured pool serves vfio-pci
functions when its selector lists ``vfio-pci`` in ``drivers``. A PF with SR-IOV enabled is left
out (its VFs are advertised instead). Each device carries an :class:`NpuInfo` payload with what
Allocate, preferred allocation, health and metrics need; ``attributes`` are for
``devplugin discover`` only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

from devplugin_core import (
    ContainerEdits,
    Device,
    DeviceNode,
    HostFS,
    HostReadError,
    Mount,
    PciDevice,
    Resource,
    Scan,
    Scanner,
    scan_pci,
)
from devplugin_core.toolkit import (
    SYS_PCI_DRIVERS,
    Candidate,
    Filter,
    HostPathError,
    Pool,
    Selector,
    assign,
    bridges_of,
    match_values,
)

from .config import DEFAULT_PREFIX, PoolConfig, Selectors
from .passthrough import VFIO_DRIVER, group_nodes
from .products import FAMILIES, REBELLIONS_VENDOR, passthrough_name, product_of
from .rsd import RsdGroups

__all__ = [
    "DRIVER",
    "NpuInfo",
    "NpuScanner",
    "Tool",
    "ToolMounts",
    "default_pools",
    "parse_pools",
    "passthrough_pool",
]

log = logging.getLogger("devplugin.rebel_npu.discovery")

DRIVER = "rebellions"
DRIVER_DIR = f"{SYS_PCI_DRIVERS}/{DRIVER}"
VFIO_DIR = f"{SYS_PCI_DRIVERS}/{VFIO_DRIVER}"
_RBLN = re.compile(r"^rbln\d{1,6}$")
_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_MAX_POOLS_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class NpuInfo:
    """What the scan learnt about one NPU function (the payload of its Device).

    ``npu``: the char device name (``rbln0``; ``""`` when passed through); ``card``:
    ``RBLN-CA22`` (``vendor:device`` if unknown); ``family``: ``ATOM``/``REBEL`` (``""`` if
    unknown); ``bridges``: PCI-to-PCI bridges above it, root port first; ``pf``: the PF of a VF
    (``""`` for a PF); ``tools``: the host tools mounted into allocations, as found by this
    scan; ``driver``: ``rebellions`` or ``vfio-pci``; ``iommu_group``/``noiommu``: the IOMMU
    group of a passed-through function.
    """

    address: str
    npu: str
    card: str
    family: str
    bridges: tuple[str, ...] = ()
    pf: str = ""
    driver_version: str = ""
    tools: tuple[Mount, ...] = ()
    driver: str = DRIVER
    iommu_group: str = ""
    noiommu: bool = False

    @property
    def index(self) -> str:
        """The ``N`` of ``/dev/rblnN`` (what ``RBLN_DEVICES`` lists)."""
        return self.npu.removeprefix("rbln")

    @property
    def passthrough(self) -> bool:
        """Bound to ``vfio-pci``: for a VM, not a container."""
        return self.driver == VFIO_DRIVER


def parse_pools(text: str) -> str:
    """The char device name in a ``pools`` file (``rbln0``); ValueError explains a bad file."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError(f"expected 2 lines, got {len(lines)}")
    words = lines[1].split()
    if not words:
        raise ValueError("line 2 is empty")
    if not _RBLN.match(words[0]):
        raise ValueError(f"line 2 starts with {words[0][:40]!r}, not rblnN")
    return words[0]


def default_pools() -> tuple[PoolConfig, ...]:
    """Zero-config pools: one per product family (``rebellions.ai/ATOM``, ``/REBEL``)."""
    selectors = (Selectors(vendors=(REBELLIONS_VENDOR,), drivers=(DRIVER,)),)
    return tuple(
        PoolConfig(resource_name=f, resource_prefix=DEFAULT_PREFIX, selectors=selectors)
        for f in FAMILIES
    )


def passthrough_pool(name: str) -> PoolConfig:
    """The zero-config pool of one product bound to ``vfio-pci`` (``ATOM_CA22_PT``...)."""
    selectors = (Selectors(vendors=(REBELLIONS_VENDOR,), drivers=(VFIO_DRIVER,)),)
    return PoolConfig(resource_name=name, resource_prefix=DEFAULT_PREFIX, selectors=selectors)


def _known_product(c: Candidate) -> bool:
    return product_of(c.device) is not None


#: zero-config: which functions go to a per-product passthrough resource
_PASSTHROUGH_SELECTOR = Pool(
    f"{DEFAULT_PREFIX}/<product>_PT",
    (
        Selector.of(
            match_values("vendors", "vendor", (REBELLIONS_VENDOR,)),
            match_values("drivers", "driver", (VFIO_DRIVER,)),
            Filter("product", _known_product, lambda c: f"{c.device!r} is not an NPU device ID"),
        ),
    ),
)


def _family_filter(family: str) -> Filter:
    def test(c: Candidate) -> bool:
        product = product_of(c.device)
        return product is not None and product.family == family

    def describe(c: Candidate) -> str:
        product = product_of(c.device)
        what = f"a {product.family} device" if product else "not a known NPU device ID"
        return f"device {c.device!r} is {what}, not {family}"

    return Filter("family", test, describe)


def _selector_pool(config: PoolConfig, zero_config: bool) -> Pool:
    selectors = []
    for s in config.selectors:
        filters = [
            match_values("vendors", "vendor", s.vendors),
            match_values("devices", "device", s.devices),
            match_values("drivers", "driver", s.drivers),
            match_values("pciAddresses", "address", s.pci_addresses),
        ]
        if zero_config:
            filters.append(_family_filter(config.resource_name))
        selectors.append(Selector.of(*filters))
    return Pool(config.full_name(), tuple(selectors))


class _Once:
    """Logs a message once while it keeps recurring; again after it went away."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._now: set[str] = set()

    def warning(self, message: str) -> None:
        self._now.add(message)
        if message not in self._seen:
            log.warning("%s", message)

    def end_pass(self) -> None:
        self._seen, self._now = self._now, set()


@dataclass(frozen=True)
class Tool:
    """A host tool mounted read-only into every allocation."""

    name: str
    host_path: str
    container_path: str


class ToolMounts:
    """The configured host tools; :meth:`refresh` (scan thread) says which exist right now
    and logs when one goes missing or comes back."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.tools = tuple(t for t in tools if t.host_path)
        self._state: dict[str, str] = {}  # scan thread only

    @property
    def allowlist(self) -> tuple[str, ...]:
        return tuple(t.host_path for t in self.tools)

    def refresh(self, host: HostFS) -> tuple[Mount, ...]:
        mounts = []
        for tool in self.tools:
            try:
                host.check_mount_source(tool.host_path, (tool.host_path,))
            except HostPathError as err:
                state = err.reason
            else:
                state = ""
                mounts.append(Mount(tool.host_path, tool.container_path, read_only=True))
            if self._state.get(tool.name) != state:
                if state:
                    log.warning(
                        "%s will not be mounted into containers: %s (%s)",
                        tool.name,
                        tool.host_path,
                        state,
                    )
                elif tool.name in self._state:
                    log.info("%s found at %s; mounting it again", tool.name, tool.host_path)
                self._state[tool.name] = state
        return tuple(mounts)

    def presence(self, host: HostFS) -> tuple[bool, ...]:
        return tuple(host.exists(t.host_path) for t in self.tools)


@dataclass(frozen=True)
class NpuPool:
    """One pool as the scanner sees it: its config and the Resource its devices go to."""

    config: PoolConfig
    resource: Resource


class NpuScanner(Scanner):
    """One pass over the host for every pool of a plugin instance.

    Keeps advertising a device whose driver unbound (so the health check reports it Unhealthy
    instead of it silently vanishing) while its PCI function exists and is not bound to
    another driver. ``passthrough`` (zero-config) makes the pool of a product's passthrough
    resource when its first vfio-pci function appears. Both memos are private to the scan
    thread.
    """

    def __init__(
        self,
        pools: Sequence[NpuPool],
        tools: ToolMounts,
        rsd: RsdGroups,
        *,
        passthrough: Callable[[str], NpuPool] | None = None,
    ) -> None:
        self.pools = tuple(pools)
        self.tools = tools
        self.rsd = rsd
        self.passthrough = passthrough
        zero_config = passthrough is not None
        self._selectors = [_selector_pool(p.config, zero_config) for p in self.pools]
        if zero_config:
            self._selectors.append(_PASSTHROUGH_SELECTOR)
        self._log = _Once()
        self._advertised: dict[str, tuple[Resource, Device]] = {}  # scan thread only
        self._products: dict[str, NpuPool] = {}  # scan thread only

    def _product_pool(self, dev: PciDevice) -> NpuPool:
        product = product_of(dev.device)
        assert product is not None and self.passthrough is not None  # _known_product
        name = passthrough_name(product, dev.device)
        pool = self._products.get(name)
        if pool is None:
            pool = self._products[name] = self.passthrough(name)
        return pool

    def scan(self, scan: Scan) -> None:
        host = scan.host
        tools = self.tools.refresh(host)
        self.rsd.resolve()
        pci = scan_pci(host, classes=[0x12], rdma=False)
        candidates = []
        for dev in pci.devices.values():
            if dev.vendor == REBELLIONS_VENDOR and dev.sriov_enabled:
                scan.reject(
                    dev.address,
                    f"SR-IOV enabled ({dev.sriov_numvfs} VFs): its VFs are advertised instead",
                )
                continue
            if (
                self.passthrough is not None
                and dev.vendor == REBELLIONS_VENDOR
                and dev.driver not in (DRIVER, VFIO_DRIVER)
                and product_of(dev.device) is not None
            ):
                if dev.driver is not None or dev.address not in self._advertised:
                    scan.reject(dev.address, _wrong_driver(dev.driver))
                continue  # an advertised one that unbound is kept below
            candidates.append(Candidate.from_pci(dev, pci))
        assignment = assign(candidates, self._selectors)
        for address, reasons in assignment.rejections.items():
            scan.reject(address, "; ".join(reasons))
        found: dict[str, tuple[Resource, Device]] = {}
        classes: dict[str, int | None] = {}
        targets: list[NpuPool | None] = [*self.pools, None]  # None: per product
        for selector_pool, target in zip(self._selectors, targets, strict=False):
            for candidate, index in assignment.members[selector_pool.name]:
                dev = pci.devices[candidate.address]
                pool = target or self._product_pool(dev)
                device = self._device(scan, dev, pool, index, tools, classes)
                if device is not None:
                    found[dev.address] = (pool.resource, device)
        for address, kept in self._advertised.items():
            unbound = pci.get(address)
            if address not in found and unbound is not None and unbound.driver is None:
                found[address] = kept
        served = [*self.pools, *(self._products[n] for n in sorted(self._products))]
        for pool in served:
            devices = [d for r, d in found.values() if r is pool.resource]
            if devices:
                scan.add(pool.resource, *devices)
        self._advertised = found
        self._log.end_pass()

    def _device(
        self,
        scan: Scan,
        dev: PciDevice,
        pool: NpuPool,
        selector: int,
        tools: tuple[Mount, ...],
        classes: dict[str, int | None],
    ) -> Device | None:
        if dev.driver == VFIO_DRIVER and VFIO_DRIVER not in pool.config.selectors[selector].drivers:
            scan.reject(
                dev.address,
                f"bound to {VFIO_DRIVER}, but the selector does not list it in drivers "
                f"(add {VFIO_DRIVER!r} to pass the NPU through to virtual machines)",
                pool.resource,
            )
            return None
        if dev.driver not in (DRIVER, VFIO_DRIVER):
            scan.reject(dev.address, _wrong_driver(dev.driver), pool.resource)
            return None
        product = product_of(dev.device)
        card = product.card if product else f"{dev.vendor}:{dev.device}"
        if product is not None and not product.known:
            self._log.warning(
                f"{dev.address}: device ID {dev.device} is not a known product; "
                f"treating it as {card} ({product.family}) by its ID pattern"
            )
        info = NpuInfo(
            address=dev.address,
            npu="",
            card=card,
            family=product.family if product else "",
            bridges=bridges_of(scan.host, dev, classes),
            pf=dev.physfn or "",
            driver=dev.driver,
        )
        numa = () if pool.config.exclude_topology or dev.numa_node is None else (dev.numa_node,)
        attributes = {
            "card": info.card,
            "family": info.family,
            "function": "vf" if dev.is_vf else "pf",
            "numa": str(dev.numa_node) if dev.numa_node is not None else "",
            "pciBridges": ",".join(info.bridges),
            "pf": info.pf,
        }
        if dev.driver == VFIO_DRIVER:
            return self._vfio_device(scan, dev, pool, info, numa, attributes)
        name = self._char_device(scan, dev, pool)
        if name is None:
            return None
        info = replace(info, npu=name, driver_version=_driver_version(scan.host, name), tools=tools)
        attributes.update(npu=name, driverVersion=info.driver_version)
        return Device(
            id=dev.address,
            numa_nodes=numa,
            edits=ContainerEdits(device_nodes=(DeviceNode(f"/dev/{name}"),)),
            payload=info,
            attributes={k: v for k, v in attributes.items() if v},
            cdi_name=name,
        )

    def _char_device(self, scan: Scan, dev: PciDevice, pool: NpuPool) -> str | None:
        pools_file = f"{DRIVER_DIR}/{dev.address}/pools"
        try:
            raw = scan.host.read_bytes(pools_file)
            if raw is None:
                raise ValueError("missing")
            return parse_pools(raw[:_MAX_POOLS_BYTES].decode("utf-8", "replace"))
        except (ValueError, HostReadError) as err:
            self._log.warning(
                f"skipping {dev.address}: cannot read its char device from {pools_file}: {err}"
            )
            scan.reject(dev.address, f"unusable {pools_file}: {err}", pool.resource)
            return None

    def _vfio_device(
        self,
        scan: Scan,
        dev: PciDevice,
        pool: NpuPool,
        info: NpuInfo,
        numa: tuple[int, ...],
        attributes: dict[str, str],
    ) -> Device | None:
        group = dev.iommu_group
        if group is None:
            scan.reject(dev.address, f"bound to {VFIO_DRIVER} but in no IOMMU group", pool.resource)
            return None
        info = replace(info, iommu_group=group, noiommu=dev.iommu_noiommu)
        attributes.update(
            driver=VFIO_DRIVER, iommuGroup=f"noiommu-{group}" if dev.iommu_noiommu else group
        )
        return Device(
            id=dev.address,
            numa_nodes=numa,
            edits=ContainerEdits(device_nodes=group_nodes(group, dev.iommu_noiommu)),
            payload=info,
            attributes={k: v for k, v in attributes.items() if v},
        )

    def fingerprint(self, host: HostFS) -> Hashable:
        """Changes when the functions bound to ``rebellions`` or ``vfio-pci`` change, when a
        PF's VF count changes, or when a tool appears or disappears."""
        bound = [
            tuple(sorted(a for a in host.listdir(d) if _PCI.match(a)))
            for d in (DRIVER_DIR, VFIO_DIR)
        ]
        numvfs = tuple(
            (a, host.read_attr(f"/sys/bus/pci/devices/{a}/sriov_numvfs"))
            for a in (*bound[0], *bound[1])
        )
        return tuple(bound), numvfs, self.tools.presence(host)


def _wrong_driver(driver: str | None) -> str:
    return (
        f"bound to {driver or 'no driver'}; rebel-npu serves NPUs bound to {DRIVER} "
        f"(containers) or {VFIO_DRIVER} (virtual machines)"
    )


def _driver_version(host: HostFS, name: str) -> str:
    try:
        return (host.read_attr(f"/sys/class/rebellions/{name}/kernel_version") or "")[:64]
    except HostReadError:
        return ""
