"""Plugin metrics (``devplugin_sriov_*``), built at scrape time from the advertised snapshots.

Everything about a device comes from its snapshot (its :class:`~.discovery.VfInfo` payload and
its health); only the PF link state, ``sriov_numvfs`` and the VF counters are read from sysfs,
in the scrape thread.

* ``devplugin_sriov_pool_vfs{resource}`` and ``devplugin_sriov_pool_vfs_healthy{resource}``:
  devices per pool and how many of them are advertised Healthy;
* ``devplugin_sriov_vf_info{resource,device,pf,vf,driver,numa_node}`` = 1, a join helper
  (for an SF: ``pf`` is its parent, ``vf`` its SF number);
* ``devplugin_sriov_pf_link_up{pf,netdev}`` (1/0; absent while unknown) and
  ``devplugin_sriov_pf_vfs_enabled{pf}`` (``sriov_numvfs``) for the PFs of pooled VFs and SFs;
* VF traffic counters where the PF driver exposes them in sysfs
  (``/sys/bus/pci/devices/<pf>/sriov/<vf>/stats/``, Intel's i40e/ice): bytes and packets in
  both directions, drops, errors, multicast and broadcast, as ``..._total`` counters labelled
  ``resource``, ``device``, ``pf``, ``vf``.

Allocated counts per pod come from the framework's PodResources attribution.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from devplugin_core import HostFS, HostReadError, Snapshot
from devplugin_core.toolkit import SYS_PCI_DEVICES

from .links import read_link
from .netlink import LinkMonitor
from .pools import VfInfo

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
    """The plugin's :class:`~devplugin_core.MetricsCollector` (nothing shared with the scan
    or the health checks but the netlink monitor's link states)."""

    def __init__(self, host: HostFS, monitor: LinkMonitor | None) -> None:
        self.host = host
        self.monitor = monitor

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

    def collect(self, snapshots: Mapping[str, Snapshot]) -> Iterator[Metric]:
        total = GaugeMetricFamily(
            "devplugin_sriov_pool_vfs", "Devices in the pool.", labels=["resource"]
        )
        healthy = GaugeMetricFamily(
            "devplugin_sriov_pool_vfs_healthy",
            "Devices of the pool advertised Healthy.",
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
        pfs: dict[str, str] = {}  # PF -> its uplink as scanned
        for resource, snapshot in sorted(snapshots.items()):
            total.add_metric([resource], len(snapshot.devices))
            healthy.add_metric(
                [resource], sum(1 for d in snapshot.devices if snapshot.healthy(d.id))
            )
            for device in sorted(snapshot.devices, key=lambda d: d.id):
                vf_info = device.payload_as(VfInfo)
                pf = vf_info.pf
                vf = "" if vf_info.vf_index is None else str(vf_info.vf_index)
                numa = "" if vf_info.numa_node is None else str(vf_info.numa_node)
                info.add_metric([resource, device.id, pf, vf, vf_info.driver, numa], 1)
                if pf:
                    pfs.setdefault(pf, vf_info.pf_netdev)
                    if vf_info.vf_index is not None and vf_info.bus == "pci":
                        for name, value in self._stats(pf, vf_info.vf_index).items():
                            counters[name].add_metric([resource, device.id, pf, vf], value)
        link = GaugeMetricFamily(
            "devplugin_sriov_pf_link_up",
            "1 if the PF's link is up, 0 if down.",
            labels=["pf", "netdev"],
        )
        enabled = GaugeMetricFamily(
            "devplugin_sriov_pf_vfs_enabled", "VFs enabled on the PF (sriov_numvfs).", labels=["pf"]
        )
        for pf, netdev in sorted(pfs.items()):
            state = read_link(self.host, self.monitor, pf, netdev)
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
