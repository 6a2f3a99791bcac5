"""Plugin metrics (``devplugin_sriov_*``), built at scrape time from the last discovery.

* ``devplugin_sriov_pool_vfs{resource}`` and ``devplugin_sriov_pool_vfs_healthy{resource}``:
  devices per pool and how many passed the last health check (the kubelet's view, with
  hysteresis, is the framework's ``devplugin_devices``);
* ``devplugin_sriov_vf_info{resource,device,pf,vf,driver,numa_node}`` = 1, a join helper;
* ``devplugin_sriov_pf_link_up{pf,netdev}`` (1/0; absent while unknown) and
  ``devplugin_sriov_pf_vfs_enabled{pf}`` (``sriov_numvfs``) for the PFs of pooled VFs;
* VF traffic counters where the PF driver exposes them in sysfs
  (``/sys/bus/pci/devices/<pf>/sriov/<vf>/stats/``, Intel's i40e/ice): bytes and packets in
  both directions, drops, errors, multicast and broadcast, as ``..._total`` counters labelled
  ``resource``, ``device``, ``pf``, ``vf``.

Allocated counts per pod come from the framework's PodResources attribution.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from devplugin_core import HostFS, HostReadError
from devplugin_core.pci import SYS_PCI_DEVICES

from .discovery import Inventory
from .links import PfLinks

__all__ = ["VF_STATS", "SriovCollector"]

#: sysfs stat file -> (metric name without ``_total``, help).
VF_STATS = {
    "rx_bytes": ("devplugin_sriov_vf_receive_bytes", "Bytes received by the VF."),
    "tx_bytes": ("devplugin_sriov_vf_transmit_bytes", "Bytes transmitted by the VF."),
    "rx_packets": ("devplugin_sriov_vf_receive_packets", "Packets received by the VF."),
    "tx_packets": ("devplugin_sriov_vf_transmit_packets", "Packets transmitted by the VF."),
    "rx_dropped": ("devplugin_sriov_vf_receive_dropped", "Received packets dropped."),
    "tx_dropped": ("devplugin_sriov_vf_transmit_dropped", "Packets dropped on transmit."),
    "rx_errors": ("devplugin_sriov_vf_receive_errors", "Receive errors."),
    "tx_errors": ("devplugin_sriov_vf_transmit_errors", "Transmit errors."),
    "rx_multicast": ("devplugin_sriov_vf_receive_multicast_packets", "Multicast packets received."),
    "rx_broadcast": ("devplugin_sriov_vf_receive_broadcast_packets", "Broadcast packets received."),
}
_VF_LABELS = ["resource", "device", "pf", "vf"]


class SriovCollector:
    """A Prometheus collector over an :class:`Inventory` (registered by the framework)."""

    def __init__(self, host: HostFS, inventory: Inventory, links: PfLinks) -> None:
        self.host = host
        self.inventory = inventory
        self.links = links

    def _stats(self, pf: str, vf: int) -> dict[str, int]:
        base = f"{SYS_PCI_DEVICES}/{pf}/sriov/{vf}/stats"
        out = {}
        try:
            names = self.host.listdir(base)
        except HostReadError:
            return {}
        for name in names:
            if name not in VF_STATS:
                continue
            try:
                value = self.host.read_int(f"{base}/{name}")
            except HostReadError:
                continue
            if value is not None and value >= 0:
                out[name] = value
        return out

    def collect(self) -> Iterator[Metric]:
        total = GaugeMetricFamily(
            "devplugin_sriov_pool_vfs", "Devices in the pool.", labels=["resource"]
        )
        healthy = GaugeMetricFamily(
            "devplugin_sriov_pool_vfs_healthy",
            "Devices of the pool that passed the last health check.",
            labels=["resource"],
        )
        info = GaugeMetricFamily(
            "devplugin_sriov_vf_info",
            "One series per pooled device; always 1.",
            labels=["resource", "device", "pf", "vf", "driver", "numa_node"],
        )
        counters = {
            name: CounterMetricFamily(metric, text, labels=_VF_LABELS)
            for name, (metric, text) in VF_STATS.items()
        }
        pfs: set[str] = set()
        for resource, members in sorted(self.inventory.members.items()):
            sick = self.inventory.unhealthy.get(resource, frozenset())
            total.add_metric([resource], len(members))
            healthy.add_metric([resource], sum(1 for a in members if a not in sick))
            for address, member in sorted(members.items()):
                c = member.candidate
                vf = "" if c.vf_index is None else str(c.vf_index)
                numa = "" if member.numa_node is None else str(member.numa_node)
                info.add_metric([resource, address, c.pf_address, vf, c.driver, numa], 1)
                if c.pf_address:
                    pfs.add(c.pf_address)
                    if c.vf_index is not None:
                        for name, value in self._stats(c.pf_address, c.vf_index).items():
                            counters[name].add_metric([resource, address, c.pf_address, vf], value)
        link = GaugeMetricFamily(
            "devplugin_sriov_pf_link_up",
            "1 if the PF's link is up, 0 if down.",
            labels=["pf", "netdev"],
        )
        enabled = GaugeMetricFamily(
            "devplugin_sriov_pf_vfs_enabled", "VFs enabled on the PF (sriov_numvfs).", labels=["pf"]
        )
        for pf in sorted(pfs):
            state = self.links.read(pf)
            if state.present and state.up is not None:
                link.add_metric([pf, state.netdev], 1 if state.up else 0)
            try:
                numvfs = self.host.read_int(f"{SYS_PCI_DEVICES}/{pf}/sriov_numvfs")
            except HostReadError:
                numvfs = None
            if numvfs is not None:
                enabled.add_metric([pf], numvfs)
        yield total
        yield healthy
        yield info
        yield link
        yield enabled
        yield from counters.values()
