"""The scan: one pass over the host, then ``rdmaHcaMax`` shared slots per resource.

Every resource filters the inventory on its own (an HCA may serve several resources, as
upstream; this is not the first-pool-wins assignment of the SR-IOV plugin). All matched HCAs
form one bag: slot IDs are upstream's ``"0"`` … ``"N-1"`` (kubelet checkpoints stay valid when
a node swaps the upstream plugin for this one). Every slot of a resource shares one template:
its own edits are ``rdma_cm``, each matched HCA is a :class:`~devplugin_core.Part` with its
char devices (so a hot-removed HCA is left out of Allocate while others remain), the payload
is the :class:`SharedHcas` the health checker and the metrics read, and all slots share one
health key. The slot tuple is rebuilt only when something it shows changed, so rescans of a
100 000-slot resource cost one comparison (and a changed ``rdmaHcaMax`` only builds or drops
the difference).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from devplugin_core import (
    ContainerEdits,
    Device,
    DeviceNode,
    HostFS,
    Part,
    PciDevice,
    Resource,
    Scan,
    Scanner,
)
from devplugin_core.toolkit import RDMA_CM, Candidate, Selector, match_values

from .config import ResourceConfig, Selectors
from .inventory import Hca, ProblemLog, build_inventory
from .ports import HcaRef

__all__ = ["CDI_NAME", "RdmaScanner", "SharedHcas", "build_selector"]

log = logging.getLogger("devplugin.rdma_shared")

#: The CDI device of the slots' own edits (``rdma_cm``); each HCA is one more, ``hca-<bdf>``.
CDI_NAME = "rdma_cm"
_FINGERPRINT_DIRS = (
    "/sys/bus/pci/devices",
    "/sys/class/infiniband",
    "/sys/class/infiniband_verbs",
    "/sys/class/infiniband_mad",
)


def build_selector(selectors: Selectors, *, link_types: bool = True) -> Selector:
    """Upstream's filters in upstream's order: vendors, deviceIDs, drivers, ifNames, linkTypes
    (``link_types=False``: all but the last, which needs the netdev's details)."""
    return Selector.of(
        match_values("vendors", "vendor", selectors.vendors),
        match_values("deviceIDs", "device", selectors.device_ids),
        match_values("drivers", "driver", selectors.drivers),
        match_values("ifNames", "netdev", selectors.if_names),
        match_values("linkTypes", "link_type", selectors.link_types) if link_types else None,
    )


def _numa(hcas: Sequence[Hca], exclude: bool) -> tuple[int, ...]:
    """The common NUMA node of all HCAs when known and agreed, else none."""
    nodes = {h.numa_node for h in hcas}
    if exclude or len(nodes) != 1:
        return ()
    node = nodes.pop()
    return () if node is None else (node,)


@dataclass(frozen=True)
class SharedHcas:
    """The payload of every slot of a resource: the HCAs behind it."""

    hcas: tuple[HcaRef, ...]


class _Slots:
    """The slots of one ``configList`` entry, rebuilt only when what they show changed."""

    def __init__(self, config: ResourceConfig, resource: Resource) -> None:
        self.config = config
        self.resource = resource
        self.name = config.full_name
        self.selector = build_selector(config.effective_selectors)
        self.prefilter = build_selector(config.effective_selectors, link_types=False)
        self._cached: tuple[Hashable, tuple[Device, ...]] | None = None
        self._last_count = -1

    def scan(self, scan: Scan, hcas: Sequence[Hca], rdma_cm: DeviceNode | None) -> None:
        matched = []
        for hca in hcas:
            why = self.selector.mismatch(hca.candidate)
            if why is None and hca.problem:
                why = hca.problem
            if why is None:
                matched.append(hca)
            else:
                scan.reject(hca.address, why, self.resource)
        if not hcas:
            scan.reject(
                "host",
                "no PCI network functions (class 0x02) under /sys/bus/pci/devices",
                self.resource,
            )
        devices = self._slots(matched, rdma_cm)
        scan.add(self.resource, *devices)
        if len(devices) != self._last_count:
            self._last_count = len(devices)
            if devices:
                log.info("%s: %d slots over %s", self.name, len(devices), devices[0].health_key)
            else:
                log.warning(
                    "%s: no usable RDMA HCA matched; advertising 0 devices "
                    "(`devplugin discover rdma-shared` tells why)",
                    self.name,
                )

    def _slots(self, matched: Sequence[Hca], rdma_cm: DeviceNode | None) -> tuple[Device, ...]:
        count = self.config.rdma_hca_max
        if not matched or count == 0 or rdma_cm is None:
            self._cached = None
            return ()
        parts = tuple(
            Part(hca.address, ContainerEdits(device_nodes=hca.nodes), f"hca-{hca.address}")
            for hca in matched
        )
        numa = _numa(matched, self.config.exclude_topology)
        key = ",".join(h.address for h in matched)
        attributes = {
            "hcas": key,
            "rdma_devices": ",".join(n for h in matched for n in h.rdma_devices),
            "netdevs": ",".join(h.ref.netdev for h in matched if h.ref.netdev) or "-",
            "device_nodes": str(1 + sum(len(h.nodes) for h in matched)),
        }
        payload = SharedHcas(tuple(h.ref for h in matched))
        identity = (parts, rdma_cm, numa, payload, tuple(attributes.items()))
        old = self._cached[1] if self._cached is not None and self._cached[0] == identity else ()
        if len(old) == count:
            return old
        if len(old) > count:  # only rdmaHcaMax went down: keep the first slots
            devices = old[:count]
        else:  # first build, something the slots show changed, or rdmaHcaMax went up
            template = old[0] if old else Device(
                "0",
                numa,
                edits=ContainerEdits(device_nodes=(rdma_cm,)),
                parts=parts,
                payload=payload,
                attributes=attributes,
                health_key=key,
                cdi_name=CDI_NAME,
            )  # fmt: skip
            devices = old + tuple(template.with_ids(str(i) for i in range(len(old), count)))
        self._cached = (identity, devices)
        return devices


class RdmaScanner(Scanner):
    """One inventory pass, then every resource's slots."""

    def __init__(
        self, entries: Sequence[tuple[ResourceConfig, Resource]], *, hotplug: bool
    ) -> None:
        self.slots = [_Slots(config, resource) for config, resource in entries]
        self.hotplug = hotplug
        self.problems = ProblemLog()
        self._netdevs: frozenset[str] = frozenset()  # of RDMA functions, watched for renames

    def scan(self, scan: Scan) -> None:
        inv = build_inventory(scan.host, self.problems, self._wanted)
        self._netdevs = frozenset(h.candidate.netdev for h in inv.hcas if h.candidate.netdev)
        for slots in self.slots:
            slots.scan(scan, inv.hcas, inv.rdma_cm)

    def _wanted(self, dev: PciDevice) -> bool:
        """Whether some resource may select ``dev``, by every filter but linkTypes: the others
        (on a large host most VFs) are rejected without reading their netdevs and RDMA
        devices. The rejection names the same first failing filter as a full read would."""
        c = Candidate(dev.address, dev.vendor, dev.device, dev.driver or "", netdev=dev.netdev)
        return any(slots.prefilter.mismatch(c) is None for slots in self.slots)

    def fingerprint(self, host: HostFS) -> Hashable:
        """PCI functions, RDMA devices and their char devices, rdma_cm, and which netdev names
        of network functions are still there (a udev rename changes ``ifNames`` matches; pod
        veths coming and going do not count): a change (hot-plug, driver load, rename) triggers
        a rescan, and while nothing changes the periodic rescans are skipped (a full pass still
        runs every tenth interval). Off when the interval is 0."""
        if not self.hotplug:
            return None
        listings = tuple(tuple(host.listdir(d)) for d in _FINGERPRINT_DIRS)
        present = self._netdevs.intersection(host.listdir("/sys/class/net"))
        return (listings, frozenset(present), host.exists(RDMA_CM))
