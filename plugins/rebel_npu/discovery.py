"""Finding NPUs: PCI scan -> pools (upstream selectors) -> one Device per PCI function.

A device's ID is its PCI address; its char device comes from the ``rebellions`` driver's
``pools`` file (second line, first word, e.g. ``rbln0``). A PF with SR-IOV enabled is left out
(its VFs are advertised instead). Bridges above each function (class 0x0604, from the resolved
sysfs path) and the NUMA node become attributes for the preferred allocation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from devplugin_core import (
    Candidate,
    ContainerEdits,
    Device,
    DeviceNode,
    Discoverer,
    DiscoveryPass,
    HostFS,
    HostPathError,
    HostReadError,
    Mount,
    PciDevice,
    PciScan,
    Pool,
    Selector,
    assign,
    hex_id_warnings,
    match_values,
    scan_pci,
)
from devplugin_core.pci import SYS_PCI_DRIVERS
from devplugin_core.pci import bridges_of as pci_bridges
from devplugin_core.selectors import Filter

from .config import DEFAULT_PREFIX, PoolConfig, RebelNpuConfig, Selectors
from .products import FAMILIES, REBELLIONS_VENDOR, product_of
from .rsd import RsdGroups
from .smi import RblnSmi, SmiMonitor

__all__ = [
    "DRIVER",
    "Inventory",
    "NpuDiscoverer",
    "PassResult",
    "ToolMounts",
    "default_pools",
    "parse_pools",
]

log = logging.getLogger("devplugin.rebel_npu.discovery")

DRIVER = "rebellions"
DRIVER_DIR = f"{SYS_PCI_DRIVERS}/{DRIVER}"
_RBLN = re.compile(r"^rbln\d{1,6}$")
_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_MAX_POOLS_BYTES = 64 * 1024


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


def _family_filter(family: str) -> Filter:
    def test(c: Candidate) -> bool:
        product = product_of(c.device)
        return product is not None and product.family == family

    def describe(c: Candidate) -> str:
        product = product_of(c.device)
        what = f"a {product.family} device" if product else "not a known NPU device ID"
        return f"device {c.device!r} is {what}, not {family}"

    return Filter("family", test, describe)


def _pool(config: PoolConfig, zero_config: bool) -> Pool:
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
    """The tools that exist on the host right now (checked at every discovery pass)."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.tools = tuple(t for t in tools if t.host_path)
        self.mounts: tuple[Mount, ...] = ()
        self._state: dict[str, str] = {}

    @property
    def allowlist(self) -> tuple[str, ...]:
        return tuple(t.host_path for t in self.tools)

    def refresh(self, host: HostFS) -> None:
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
        self.mounts = tuple(mounts)

    def presence(self, host: HostFS) -> tuple[bool, ...]:
        return tuple(host.exists(t.host_path) for t in self.tools)


@dataclass
class PassResult:
    """One discovery pass over the host, shared by every resource."""

    scan: PciScan
    devices: dict[str, list[Device]] = field(default_factory=dict)


class Inventory:
    """What the resources of one plugin instance share: pools, tool mounts, rbln-smi and its
    polled cache, the RSD policy, and one discovery pass per round."""

    def __init__(self, config: RebelNpuConfig, host: HostFS) -> None:
        self.config = config
        self.host = host
        executable = config.smi_executable(host.root)
        self.smi = RblnSmi(executable, config.rbln_smi_timeout) if executable else None
        polled = self.smi if config.rbln_smi_interval > 0 else None
        self.monitor = SmiMonitor(polled, config.rbln_smi_interval or 1.0)
        self.rsd = RsdGroups(
            config.rsd_groups, self.smi, host, config.rsd_lock_file, config.rsd_timeout
        )
        self.zero_config = not config.resource_list
        self.pools = config.resource_list or default_pools()
        self.core_pools = [_pool(p, self.zero_config) for p in self.pools]
        self.tools = ToolMounts(
            [
                Tool("rbln-stat", config.rbln_stat_host_path, "/usr/bin/rbln-stat"),
                Tool("rbln-smi", config.rbln_smi_host_path, "/usr/bin/rbln-smi"),
            ]
        )
        self._log = _Once()
        for i, pool in enumerate(config.resource_list):
            for j, s in enumerate(pool.selectors):
                base = f"resourceList[{i}].selectors[{j}]"
                for warning in (
                    *hex_id_warnings(s.vendors, f"{base}.vendors"),
                    *hex_id_warnings(s.devices, f"{base}.devices"),
                ):
                    log.warning("config: %s", warning)

    def discover_all(self, scan: DiscoveryPass) -> PassResult:
        """Scan PCI once and split the NPUs into pools (blocking; discovery thread)."""
        host = scan.host
        self.tools.refresh(host)
        self.rsd.resolve()
        pci = scan_pci(host, classes=[0x12], rdma=False)
        result = PassResult(pci, {p.full_name(): [] for p in self.pools})
        candidates = []
        for dev in pci.devices.values():
            if dev.vendor == REBELLIONS_VENDOR and dev.sriov_enabled:
                scan.reject(
                    dev.address,
                    f"SR-IOV enabled ({dev.sriov_numvfs} VFs): its VFs are advertised instead",
                )
                continue
            candidates.append(Candidate.from_pci(dev, pci))
        assignment = assign(candidates, self.core_pools)
        for address, reasons in assignment.rejections.items():
            scan.reject(address, "; ".join(reasons))
        classes: dict[str, int | None] = {}
        for pool in self.pools:
            for candidate, _ in assignment.members[pool.full_name()]:
                device = self._device(scan, pci.devices[candidate.address], pool, classes)
                if device is not None:
                    result.devices[pool.full_name()].append(device)
        self._log.end_pass()
        return result

    def _device(
        self, scan: DiscoveryPass, dev: PciDevice, pool: PoolConfig, classes: dict[str, int | None]
    ) -> Device | None:
        if dev.driver != DRIVER:
            scan.reject(
                dev.address,
                f"bound to {dev.driver or 'no driver'}; rebel-npu serves "
                f"functions bound to {DRIVER}",
                pool.full_name(),
            )
            return None
        pools_file = f"{DRIVER_DIR}/{dev.address}/pools"
        try:
            raw = scan.host.read_bytes(pools_file)
            if raw is None:
                raise ValueError("missing")
            name = parse_pools(raw[:_MAX_POOLS_BYTES].decode("utf-8", "replace"))
        except (ValueError, HostReadError) as err:
            self._log.warning(
                f"skipping {dev.address}: cannot read its char device from {pools_file}: {err}"
            )
            scan.reject(dev.address, f"unusable {pools_file}: {err}", pool.full_name())
            return None
        product = product_of(dev.device)
        card = product.card if product else f"{dev.vendor}:{dev.device}"
        if product is not None and not product.known:
            self._log.warning(
                f"{dev.address}: device ID {dev.device} is not a known product; "
                f"treating it as {card} ({product.family}) by its ID pattern"
            )
        bridges = pci_bridges(scan.host, dev, classes)
        numa = () if pool.exclude_topology or dev.numa_node is None else (dev.numa_node,)
        attributes = {
            "card": card,
            "family": product.family if product else "",
            "function": "vf" if dev.is_vf else "pf",
            "npu": name,
            "numa": str(dev.numa_node) if dev.numa_node is not None else "",
            "pciBridges": ",".join(bridges),
        }
        if dev.physfn:
            attributes["pf"] = dev.physfn
        version = _driver_version(scan.host, name)
        if version:
            attributes["driverVersion"] = version
        return Device(
            id=dev.address,
            numa_nodes=numa,
            edits=ContainerEdits(device_nodes=(DeviceNode(f"/dev/{name}"),)),
            attributes={k: v for k, v in attributes.items() if v},
            cdi_name=name,
        )


def _driver_version(host: HostFS, name: str) -> str:
    try:
        return (host.read_attr(f"/sys/class/rebellions/{name}/kernel_version") or "")[:64]
    except HostReadError:
        return ""


class NpuDiscoverer(Discoverer):
    """The devices of one pool. Keeps advertising a device whose driver unbound (so the
    health check reports it Unhealthy instead of it silently vanishing) while its PCI
    function exists and is not bound to another driver."""

    def __init__(self, inventory: Inventory, pool: PoolConfig) -> None:
        self.inventory = inventory
        self.pool = pool
        self.devices: dict[str, Device] = {}

    def discover(self, scan: DiscoveryPass) -> list[Device]:
        result = scan.cached(
            ("rebel-npu", id(self.inventory)), lambda: self.inventory.discover_all(scan)
        )
        devices = list(result.devices.get(self.pool.full_name(), ()))
        found = {d.id for d in devices}
        for old in self.devices.values():
            pci = result.scan.get(old.id)
            if old.id not in found and pci is not None and pci.driver is None:
                devices.append(old)
        self.devices = {d.id: d for d in devices}
        return devices

    def fingerprint(self, host: HostFS) -> Hashable:
        """Changes when a bound function we do not advertise yet appears, when a PF's VF count
        changes, or when a tool appears or disappears (removals are left to the health check
        and the periodic rescan)."""
        bound = [a for a in host.listdir(DRIVER_DIR) if _PCI.match(a)]
        new = tuple(a for a in bound if a not in self.devices)
        numvfs = []
        for address in sorted(set(bound) | set(self.devices)):
            value = host.read_attr(f"/sys/bus/pci/devices/{address}/sriov_numvfs")
            if value is not None:
                numvfs.append((address, value))
        return new, tuple(numvfs), self.inventory.tools.presence(host)
