"""VF health (upstream has none): PF link down or PCI function gone means Unhealthy.

Per tick a pool costs one listing of ``/sys/bus/pci/devices`` and one ``net/`` listing plus a
state lookup per PF — never a PCI rescan. Link changes arrive as netlink events
(:mod:`.netlink`), which wake the check at once; the periodic tick (1 s by default) is the
fallback when netlink is unavailable and also catches vanished functions. A VF's own netdev is
never looked at: it leaves the host namespace whenever a pod uses the VF, which is not a fault.
PFs pooled whole (no VFs) are only checked for existence: a passed-through PF's link lives in
the pod.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from devplugin_core import Device, HealthChecker, HostFS, HostReadError, Observation

from .discovery import Inventory, PoolSpec
from .links import PfLink, PfLinks
from .netlink import LinkMonitor

__all__ = ["DEFAULT_HEALTH_INTERVAL", "PoolHealth"]

DEFAULT_HEALTH_INTERVAL = 1.0


class PoolHealth(HealthChecker):
    """Health of one pool's devices, following its ``checkHealthOn*`` keys."""

    timeout = 5.0
    recover_after = 2

    def __init__(
        self,
        host: HostFS,
        spec: PoolSpec,
        links: PfLinks,
        inventory: Inventory,
        monitor: LinkMonitor | None,
        interval: float = DEFAULT_HEALTH_INTERVAL,
    ) -> None:
        self.host = host
        self.spec = spec
        self.links = links
        self.inventory = inventory
        self.monitor = monitor
        self.interval = interval
        self.check_pf = spec.entry.check_health_on_pf
        self.check_exists = spec.entry.check_health_on_device_exist
        self._grouped: tuple[Sequence[Device], dict[str, list[Device]]] | None = None

    def _by_pf(self, devices: Sequence[Device]) -> dict[str, list[Device]]:
        """The devices per PF, regrouped only when discovery hands over a new device list."""
        if self._grouped is None or self._grouped[0] is not devices:
            groups: dict[str, list[Device]] = {}
            for device in devices:
                pf = device.attributes.get("pf")
                if pf:
                    groups.setdefault(pf, []).append(device)
            self._grouped = (devices, groups)
        return self._grouped[1]

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        """A tick costs one listing plus one link lookup per PF; work per device only for the
        devices found unhealthy."""
        out: dict[str, Observation] = {}
        if self.check_pf:
            for pf, members in self._by_pf(devices).items():
                link: PfLink = self.links.read(pf)
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
            present = self._present()
            for device in devices:
                if device.id not in present:
                    out[device.health_key] = Observation.bad(f"PCI function {device.id} vanished")
        self.inventory.unhealthy[self.spec.name] = frozenset(out)
        return out

    def _present(self) -> frozenset[str]:
        """The PCI functions that exist: one directory listing per tick instead of one stat per
        device (a 1 000-VF pool checked every second)."""
        try:
            return self.inventory.present_functions()
        except HostReadError:
            return frozenset()

    async def watch(
        self, devices: Callable[[], Sequence[Device]], wake: Callable[[], None]
    ) -> None:
        if self.monitor is not None and self.check_pf:
            await self.monitor.subscribe(wake)
