"""The upstream selector engine: filter PCI functions into pools, first match wins.

Semantics follow sriov-network-device-plugin and k8s-rdma-shared-dev-plugin:

* a *selector* is an ordered list of filters; a device matches when every filter matches (AND);
  inside one filter any listed value may match (OR); empty filters are skipped;
* matching is exact string equality (IDs are 4 lower-case hex digits without ``0x``, PCI
  addresses in full ``0000:03:02.0`` form), except ``pfNames``/``rootDevices``, which compare
  case-insensitively and take optional VF index ranges (``ens1f0#0,2-4,7``);
* a pool has one or more selectors; every device goes to the **first pool** (in config order) and
  within it the **first selector** that matches — a device never lands in two pools.

Plugins describe their selector keys with the ``match_*`` factories and feed
:class:`Candidate` values (built from a :class:`~devplugin_core._pci.PciScan`) to :func:`assign`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ._errors import ConfigError
from ._pci import PciDevice, PciScan

__all__ = [
    "Candidate",
    "Filter",
    "Pool",
    "PoolAssignment",
    "Selector",
    "VfRange",
    "assign",
    "hex_id_warnings",
    "match_flag",
    "match_values",
    "match_vf_ranges",
    "parse_vf_range",
]


@dataclass(frozen=True)
class Candidate:
    """The attributes selectors compare, for one PCI function."""

    address: str
    vendor: str = ""
    device: str = ""
    driver: str = ""
    acpi_index: str = ""
    netdev: str = ""
    pf_name: str = ""
    pf_address: str = ""
    vf_index: int | None = None
    link_type: str = ""
    pkey: str = ""
    is_rdma: bool = False

    @classmethod
    def from_pci(cls, dev: PciDevice, scan: PciScan) -> Candidate:
        """Build the candidate the way upstream does: PF name from ``physfn/net``, link type
        from the netdev or, when the VF has none (bound to vfio, moved into a pod), the PF."""
        rdma = scan.rdma_of(dev)
        pkey = ""
        if scan.link_type(dev) == "infiniband" and rdma and rdma[0].ports:
            pkey = rdma[0].ports[0].pkey
        return cls(
            address=dev.address,
            vendor=dev.vendor,
            device=dev.device,
            driver=dev.driver or "",
            acpi_index=dev.acpi_index,
            netdev=dev.netdev,
            pf_name=scan.pf_name(dev),
            pf_address=dev.physfn or "",
            vf_index=dev.vf_index,
            link_type=scan.link_type(dev),
            pkey=pkey,
            is_rdma=bool(dev.rdma_devices),
        )


@dataclass(frozen=True)
class Filter:
    """One selector key: ``test`` says whether a candidate passes, ``describe`` why not."""

    key: str
    test: Callable[[Candidate], bool]
    describe: Callable[[Candidate], str]

    def __repr__(self) -> str:
        return f"Filter({self.key})"


def _shown(values: Sequence[object]) -> str:
    return "[" + ", ".join(repr(v) for v in values) + "]"


def match_values(
    key: str, attr: str, values: Sequence[str], *, case_insensitive: bool = False
) -> Filter | None:
    """``attr`` must equal one of ``values``; ``None`` (no filter) when ``values`` is empty."""
    if not values:
        return None
    wanted = frozenset(v.lower() for v in values) if case_insensitive else frozenset(values)

    def test(c: Candidate) -> bool:
        value = str(getattr(c, attr) or "")
        return (value.lower() if case_insensitive else value) in wanted

    def describe(c: Candidate) -> str:
        value = getattr(c, attr) or ""
        return f"{key} {_shown(values)} does not include {value!r}"

    return Filter(key, test, describe)


def match_flag(key: str, attr: str, enabled: bool) -> Filter | None:
    """Keep candidates whose boolean ``attr`` is true, when ``enabled`` (false = no filter)."""
    if not enabled:
        return None
    return Filter(
        key, lambda c: bool(getattr(c, attr)), lambda c: f"{key} is set but {attr} is false"
    )


@dataclass(frozen=True)
class VfRange:
    """One ``pfNames``/``rootDevices`` item: a PF name or address, optionally with VF indices."""

    name: str
    indices: frozenset[int] | None = None

    def __str__(self) -> str:
        if self.indices is None:
            return self.name
        return f"{self.name}#{','.join(str(i) for i in sorted(self.indices))}"


_RANGE_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
MAX_VF_INDEX = 4096


def parse_vf_range(text: str, path: str = "") -> VfRange:
    """Parse ``name`` or ``name#0,2-4,7`` (inclusive ranges); raise ConfigError naming ``path``."""
    if "#" not in text:
        if not text.strip():
            raise ConfigError(path, "empty PF name or address", text)
        return VfRange(text)
    name, _, tail = text.partition("#")
    if "#" in tail:
        raise ConfigError(path, "more than one '#' in VF range", text)
    if not name.strip():
        raise ConfigError(path, "missing PF name or address before '#'", text)
    if not tail.strip():
        raise ConfigError(path, "empty VF index list after '#'", text)
    indices: set[int] = set()
    for part in tail.split(","):
        m = _RANGE_PART.match(part)
        if not m:
            raise ConfigError(path, f"invalid VF index range {part.strip()!r} (use N or A-B)", text)
        lo = int(m[1])
        hi = int(m[2]) if m[2] is not None else lo
        if hi < lo:
            raise ConfigError(path, f"VF index range {lo}-{hi} is reversed", text)
        if hi > MAX_VF_INDEX:
            raise ConfigError(path, f"VF index {hi} is larger than {MAX_VF_INDEX}", text)
        indices.update(range(lo, hi + 1))
    return VfRange(name, frozenset(indices))


def match_vf_ranges(key: str, attr: str, items: Sequence[VfRange]) -> Filter | None:
    """PF name/address (case-insensitive) with optional VF index ranges. Devices without a PF
    (PFs themselves, VFs without ``physfn``) never match. The first item naming the PF decides."""
    if not items:
        return None

    def lookup(c: Candidate) -> VfRange | None:
        value = str(getattr(c, attr) or "")
        if not value:
            return None
        return next((i for i in items if i.name.lower() == value.lower()), None)

    def test(c: Candidate) -> bool:
        item = lookup(c)
        if item is None:
            return False
        if item.indices is None:
            return True
        return c.vf_index is not None and c.vf_index in item.indices

    def describe(c: Candidate) -> str:
        value = getattr(c, attr) or ""
        if not value:
            return f"{key} is set but the device has no PF"
        item = lookup(c)
        if item is None:
            return f"{key} {_shown([str(i) for i in items])} does not include {value!r}"
        return f"{key} item {str(item)!r} does not include VF index {c.vf_index}"

    return Filter(key, test, describe)


@dataclass(frozen=True)
class Selector:
    """An ordered AND of filters (``None`` entries are dropped)."""

    filters: tuple[Filter, ...] = ()

    @classmethod
    def of(cls, *filters: Filter | None) -> Selector:
        return cls(tuple(f for f in filters if f is not None))

    def mismatch(self, candidate: Candidate) -> str | None:
        """``None`` when the candidate matches, else why the first failing filter rejects it."""
        for f in self.filters:
            if not f.test(candidate):
                return f.describe(candidate)
        return None


@dataclass(frozen=True)
class Pool:
    """A named group of selectors (one resource)."""

    name: str
    selectors: tuple[Selector, ...]


@dataclass
class PoolAssignment:
    """Result of :func:`assign`: members per pool with the index of the selector that matched,
    and for every unassigned candidate the reason each pool rejected it."""

    members: dict[str, list[tuple[Candidate, int]]] = field(default_factory=dict)
    rejections: dict[str, list[str]] = field(default_factory=dict)

    def addresses(self, pool: str) -> list[str]:
        return [c.address for c, _ in self.members.get(pool, [])]


def assign(candidates: Iterable[Candidate], pools: Sequence[Pool]) -> PoolAssignment:
    """Put each candidate in the first pool and first selector that match (upstream order)."""
    result = PoolAssignment(members={p.name: [] for p in pools})
    for c in candidates:
        reasons: list[str] = []
        placed = False
        for pool in pools:
            pool_reasons = []
            for index, selector in enumerate(pool.selectors):
                why = selector.mismatch(c)
                if why is None:
                    result.members[pool.name].append((c, index))
                    placed = True
                    break
                pool_reasons.append(why if len(pool.selectors) == 1 else f"selector {index}: {why}")
            if placed:
                break
            reasons.append(f"{pool.name}: " + "; ".join(pool_reasons))
        if not placed:
            result.rejections[c.address] = reasons
    return result


_HEX4 = re.compile(r"^[0-9a-f]{4}$")


def hex_id_warnings(values: Sequence[str], path: str) -> list[str]:
    """Warnings for vendor/device IDs that can never match (``0x15b3``, ``15B3``)."""
    return [
        f"{path}[{i}]: {v!r} can never match: sysfs IDs are 4 lower-case hex digits without 0x"
        for i, v in enumerate(values)
        if not _HEX4.match(v)
    ]
