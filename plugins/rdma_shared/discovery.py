"""Discovery of one resource: select HCAs, then advertise ``rdmaHcaMax`` shared slots.

Every resource filters the shared inventory on its own (an HCA may serve several resources, as
upstream; this is not the first-pool-wins assignment of the SR-IOV plugin). All matched HCAs
form one bag: slot IDs are upstream's ``"0"`` … ``"N-1"`` (kubelet checkpoints stay valid when
a node swaps the upstream plugin for this one), and every slot carries the *same*
:class:`~devplugin_core.ContainerEdits` object (every char device of every matched HCA,
``rdma_cm`` once), one health key and one CDI name. The slot tuple is rebuilt only when
something it shows changed, so rescans of a 100 000-slot resource cost one comparison (and a
changed ``rdmaHcaMax`` only builds or drops the difference).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

from devplugin_core import (
    ContainerEdits,
    Device,
    DeviceNode,
    Discoverer,
    DiscoveryPass,
    HostFS,
    Selector,
    match_values,
)
from devplugin_core.rdma import RDMA_CM

from .config import ResourceConfig, Selectors
from .inventory import Hca, inventory
from .state import PluginState, ResourceView

__all__ = ["CDI_NAME", "SharedHcaDiscoverer", "build_selector"]

log = logging.getLogger("devplugin.rdma_shared")

#: One CDI device per resource: all slots share the same edits.
CDI_NAME = "hcas"
_FINGERPRINT_DIRS = (
    "/sys/bus/pci/devices",
    "/sys/class/infiniband",
    "/sys/class/infiniband_verbs",
    "/sys/class/infiniband_mad",
)


def build_selector(selectors: Selectors) -> Selector:
    """Upstream's filters in upstream's order: vendors, deviceIDs, drivers, ifNames, linkTypes."""
    return Selector.of(
        match_values("vendors", "vendor", selectors.vendors),
        match_values("deviceIDs", "device", selectors.device_ids),
        match_values("drivers", "driver", selectors.drivers),
        match_values("ifNames", "netdev", selectors.if_names),
        match_values("linkTypes", "link_type", selectors.link_types),
    )


def _numa(hcas: Sequence[Hca], exclude: bool) -> tuple[int, ...]:
    """The common NUMA node of all HCAs when known and agreed, else none."""
    nodes = {h.numa_node for h in hcas}
    if exclude or len(nodes) != 1:
        return ()
    node = nodes.pop()
    return () if node is None else (node,)


class SharedHcaDiscoverer(Discoverer):
    """The shared slots of one ``configList`` entry."""

    def __init__(
        self,
        config: ResourceConfig,
        state: PluginState,
        *,
        hotplug: bool = True,
        leader: bool = True,
    ) -> None:
        self.config = config
        self.name = config.full_name
        self.state = state
        self.hotplug = hotplug
        self.leader = leader  # the one resource whose fingerprint covers the whole host
        self.selector = build_selector(config.effective_selectors)
        self._cached: tuple[Hashable, tuple[Device, ...]] | None = None
        self._last_count = -1
        self._netdevs: frozenset[str] = frozenset()  # of RDMA functions, watched for renames

    def discover(self, scan: DiscoveryPass) -> tuple[Device, ...]:
        inv = inventory(scan, self.state.problems)
        self._netdevs = frozenset(h.candidate.netdev for h in inv.hcas if h.candidate.netdev)
        matched = []
        for hca in inv.hcas:
            why = self.selector.mismatch(hca.candidate)
            if why is None and hca.problem:
                why = hca.problem
            if why is None:
                matched.append(hca)
            else:
                scan.reject(hca.address, why, self.name)
        if not inv.hcas:
            scan.reject(
                "host",
                "no PCI network functions (class 0x02) under /sys/bus/pci/devices",
                self.name,
            )
        devices = self._slots(matched, inv.rdma_cm)
        key = devices[0].health_key if devices else ""
        hcas = tuple(h.ref for h in matched) if devices else ()
        self.state.publish(ResourceView(self.name, hcas, len(devices)), key)
        if len(devices) != self._last_count:
            self._last_count = len(devices)
            if devices:
                log.info("%s: %d slots over %s", self.name, len(devices), key)
            else:
                log.warning(
                    "%s: no usable RDMA HCA matched; advertising 0 devices "
                    "(`devplugin discover rdma-shared` tells why)",
                    self.name,
                )
        return devices

    def _slots(self, matched: Sequence[Hca], rdma_cm: DeviceNode | None) -> tuple[Device, ...]:
        count = self.config.rdma_hca_max
        if not matched or count == 0 or rdma_cm is None:
            self._cached = None
            return ()
        nodes: dict[str, DeviceNode] = {}
        for hca in matched:
            for node in hca.nodes:
                nodes.setdefault(node.host_path, node)
        nodes.setdefault(RDMA_CM, rdma_cm)
        numa = _numa(matched, self.config.exclude_topology)
        key = ",".join(h.address for h in matched)
        attributes = {
            "hcas": key,
            "rdma_devices": ",".join(n for h in matched for n in h.rdma_devices),
            "netdevs": ",".join(h.ref.netdev for h in matched if h.ref.netdev) or "-",
            "device_nodes": str(len(nodes)),
        }
        identity = (tuple(nodes.values()), numa, key, tuple(attributes.items()))
        old = self._cached[1] if self._cached is not None and self._cached[0] == identity else ()
        if len(old) == count:
            return old
        if len(old) > count:  # only rdmaHcaMax went down: keep the first slots
            devices = old[:count]
        else:  # first build, something the slots show changed, or rdmaHcaMax went up
            template = (
                old[0]
                if old
                else Device(
                    "0",
                    numa,
                    edits=ContainerEdits(device_nodes=tuple(nodes.values())),
                    attributes=attributes,
                    health_key=key,
                    cdi_name=CDI_NAME,
                )
            )
            devices = old + tuple(template.with_id(str(i)) for i in range(len(old), count))
        self._cached = (identity, devices)
        return devices

    def fingerprint(self, host: HostFS) -> Hashable:
        """PCI functions, RDMA devices and their char devices, rdma_cm, and which netdev names
        of network functions are still there (a udev rename changes ``ifNames`` matches; pod
        veths coming and going do not count): a change (hot-plug, driver load, rename) triggers
        a rescan, and while nothing changes the periodic rescans are skipped (a full pass still
        runs every tenth interval). One resource (the leader) answers for the whole host; off
        when the interval is 0."""
        if not self.hotplug or not self.leader:
            return None
        listings = tuple(tuple(host.listdir(d)) for d in _FINGERPRINT_DIRS)
        present = self._netdevs.intersection(host.listdir("/sys/class/net"))
        return (listings, frozenset(present), host.exists(RDMA_CM))
