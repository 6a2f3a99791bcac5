"""VF and SF health (upstream has none): PF link down or device gone means Unhealthy.

Each pool's checker works from its devices' :class:`~.pools.VfInfo` payloads. Per tick it
costs one listing of ``/sys/bus/pci/devices`` (``/sys/bus/auxiliary/devices`` for SFs,
``/sys/bus/vdpa/devices`` for vDPA pools) and one link lookup per PF (the uplink netdev from
the payload; the PF's ``net/`` is re-listed only when that name is gone) — never a PCI rescan.
An SF's PF is its parent, whose uplink representor carries its traffic; a vDPA pool's VF is
also Unhealthy when its vDPA device is gone. Link changes arrive as netlink events
(:mod:`.netlink`), which wake the check at once; the periodic tick (1 s by default) is the
fallback when netlink is unavailable and also catches vanished functions (and SFs and vDPA
devices), which are reported ``gone`` so that the framework rescans at once. A VF's (or SF's)
own netdev is never looked at: it leaves the host namespace whenever a pod uses the device,
which is not a fault. PFs pooled whole (no VFs) are only checked for existence: a
passed-through PF's link lives in the pod.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from devplugin_core import Device, HealthChecker, HostFS, Observation
from devplugin_core.toolkit import SYS_PCI_DEVICES

from .aux import SYS_AUX
from .links import read_link
from .netlink import LinkMonitor
from .pools import PoolSpec, VfInfo
from .vdpa import SYS_VDPA

__all__ = ["DEFAULT_HEALTH_INTERVAL", "PoolHealth"]

DEFAULT_HEALTH_INTERVAL = 1.0

#: PF address -> (its uplink netdev as scanned, the devices under it)
Groups = dict[str, tuple[str, list[Device]]]


class PoolHealth(HealthChecker):
    """Health of one pool's devices, following its ``checkHealthOn*`` keys."""

    timeout = 5.0
    recover_after = 2

    def __init__(
        self,
        host: HostFS,
        spec: PoolSpec,
        monitor: LinkMonitor | None,
        interval: float = DEFAULT_HEALTH_INTERVAL,
    ) -> None:
        self.host = host
        self.monitor = monitor
        self.interval = interval
        self.check_pf = spec.entry.check_health_on_pf
        self.check_exists = spec.entry.check_health_on_device_exist
        self._grouped: tuple[Sequence[Device], Groups] | None = None  # this checker's thread only

    def _by_pf(self, devices: Sequence[Device]) -> Groups:
        """The devices per PF, regrouped only when the scan hands over a new device list."""
        if self._grouped is None or self._grouped[0] is not devices:
            groups: Groups = {}
            for device in devices:
                info = device.payload_as(VfInfo)
                if info.pf:
                    groups.setdefault(info.pf, (info.pf_netdev, []))[1].append(device)
            self._grouped = (devices, groups)
        return self._grouped[1]

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        """A tick costs one listing plus one link lookup per PF; work per device only for the
        devices found unhealthy. An unlistable ``/sys/bus/pci/devices`` fails the check."""
        out: dict[str, Observation] = {}
        if self.check_pf:
            for pf, (netdev, members) in self._by_pf(devices).items():
                link = read_link(self.host, self.monitor, pf, netdev)
                if link.present and not link.down:
                    continue
                problem = (
                    f"PF {pf} vanished"
                    if not link.present
                    else f"PF {pf} ({link.netdev}) link is down"
                )
                for device in members:
                    out[device.health_key] = Observation.bad(problem)
        if self.check_exists:
            listings: dict[str, frozenset[str]] = {}  # one listing per bus, not one stat each

            def present(bus: str, name: str) -> bool:
                if bus not in listings:
                    listings[bus] = self.host.names(bus)
                return name in listings[bus]

            for device in devices:
                info = device.payload_as(VfInfo)
                sf = info.bus == "auxiliary"
                if not present(SYS_AUX if sf else SYS_PCI_DEVICES, device.id):
                    what = "Scalable Function" if sf else "PCI function"
                    out[device.health_key] = Observation.gone(f"{what} {device.id} vanished")
                elif info.vdpa and not present(SYS_VDPA, info.vdpa):
                    out[device.health_key] = Observation.gone(
                        f"vDPA device {info.vdpa} of {device.id} vanished"
                    )
        return out

    async def watch(
        self, devices: Callable[[], Sequence[Device]], wake: Callable[[], None]
    ) -> None:
        if self.monitor is not None and self.check_pf:
            await self.monitor.subscribe(wake)
