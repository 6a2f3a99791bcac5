"""Prometheus metrics of the matched HCAs, built at scrape time (``devplugin_rdma_*``).

Names avoid node_exporter's ``node_infiniband_*`` so both can be scraped side by side.
Per port (labels ``device`` = RDMA device, ``port``, ``pci_address``)::

    devplugin_rdma_port_active                 1 when ACTIVE and LinkUp
    devplugin_rdma_port_state                  logical state number (1 DOWN .. 4 ACTIVE)
    devplugin_rdma_port_phys_state             physical state number (5 LinkUp, 3 Disabled)
    devplugin_rdma_port_info{link_layer}       1 (link layer: InfiniBand / Ethernet)
    devplugin_rdma_port_transmit_bytes_total   port_xmit_data x 4 (the kernel counts 4-byte words)
    devplugin_rdma_port_receive_bytes_total    port_rcv_data x 4
    devplugin_rdma_port_transmit_packets_total port_xmit_packets
    devplugin_rdma_port_receive_packets_total  port_rcv_packets

Per resource (label ``resource``): ``devplugin_rdma_resource_devices`` (slots advertised) and
``devplugin_rdma_resource_hcas`` (HCAs matched). Counters appear only when ``ports/N/counters``
has them. Allocated slot counts come from the framework's PodResources attribution.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from devplugin_core import HostFS, HostReadError, Snapshot

from .discovery import SharedHcas
from .ports import HcaRef, PortRef, read_counter, read_port

__all__ = ["RdmaCollector"]

#: (metric name without _total, help, sysfs counter, multiplier)
_COUNTERS = (
    ("devplugin_rdma_port_transmit_bytes", "Bytes transmitted by the port.", "port_xmit_data", 4),
    ("devplugin_rdma_port_receive_bytes", "Bytes received by the port.", "port_rcv_data", 4),
    (
        "devplugin_rdma_port_transmit_packets",
        "Packets transmitted by the port.",
        "port_xmit_packets",
        1,
    ),
    ("devplugin_rdma_port_receive_packets", "Packets received by the port.", "port_rcv_packets", 1),
)
_PORT_LABELS = ["device", "port", "pci_address"]


class RdmaCollector:
    """Reads the ports of every HCA behind the advertised slots when scraped."""

    def __init__(self, host: HostFS) -> None:
        self.host = host

    def _link_layer(self, port: PortRef) -> str:
        try:
            return self.host.read_attr(f"{port.path}/link_layer") or ""
        except HostReadError:
            return ""

    def collect(self, snapshots: Mapping[str, Snapshot]) -> Iterator[Metric]:
        behind: dict[str, tuple[HcaRef, ...]] = {}
        for name, snapshot in snapshots.items():
            first = snapshot.devices[0] if snapshot.devices else None
            payload = first.payload if first is not None else None
            behind[name] = payload.hcas if isinstance(payload, SharedHcas) else ()
        matched: dict[str, HcaRef] = {}
        for refs in behind.values():
            for hca in refs:
                matched.setdefault(hca.address, hca)
        active = GaugeMetricFamily(
            "devplugin_rdma_port_active",
            "1 if the RDMA port is ACTIVE and its link is up.",
            labels=_PORT_LABELS,
        )
        state = GaugeMetricFamily(
            "devplugin_rdma_port_state",
            "Logical port state (1 DOWN, 2 INIT, 3 ARMED, 4 ACTIVE).",
            labels=_PORT_LABELS,
        )
        phys = GaugeMetricFamily(
            "devplugin_rdma_port_phys_state",
            "Physical port state (5 LinkUp, 3 Disabled, 2 Polling...).",
            labels=_PORT_LABELS,
        )
        info = GaugeMetricFamily(
            "devplugin_rdma_port_info",
            "RDMA port facts; always 1.",
            labels=[*_PORT_LABELS, "link_layer"],
        )
        counters = [
            (CounterMetricFamily(name, text, labels=_PORT_LABELS), source, factor)
            for name, text, source, factor in _COUNTERS
        ]
        for hca in (matched[a] for a in sorted(matched)):
            for port in hca.ports:
                status = read_port(self.host, port)
                if status is None:
                    continue  # vanished since discovery: no stale series
                labels = [port.ibdev, str(port.number), hca.address]
                active.add_metric(labels, 1 if status.active else 0)
                state.add_metric(labels, status.state_id)
                phys.add_metric(labels, status.phys_id)
                info.add_metric([*labels, self._link_layer(port)], 1)
                for family, source, factor in counters:
                    value = read_counter(self.host, port, source)
                    if value is not None:
                        family.add_metric(labels, value * factor)
        devices = GaugeMetricFamily(
            "devplugin_rdma_resource_devices",
            "Shared RDMA slots advertised to the kubelet.",
            labels=["resource"],
        )
        hcas = GaugeMetricFamily(
            "devplugin_rdma_resource_hcas",
            "HCAs (PCI functions) behind the resource's slots.",
            labels=["resource"],
        )
        for name in sorted(snapshots):
            devices.add_metric([name], len(snapshots[name].devices))
            hcas.add_metric([name], len(behind[name]))
        yield from (active, state, phys, info)
        yield from (family for family, _, _ in counters)
        yield devices
        yield hcas
