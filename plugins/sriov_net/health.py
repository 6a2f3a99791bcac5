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
from devplugin_core.pci import SYS_PCI_DEVICES

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

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        out: dict[str, Observation] = {}
        pfs: dict[str, PfLink] = {}
        present = self._present() if self.check_exists else None
        for device in devices:
            problem = None
            if present is not None and device.id not in present:
                problem = f"PCI function {device.id} vanished"
            pf = device.attributes.get("pf")
            if problem is None and self.check_pf and pf:
                if pf not in pfs:
                    pfs[pf] = self.links.read(pf)
                link = pfs[pf]
                if not link.present:
                    problem = f"PF {pf} vanished"
                elif link.down:
                    problem = f"PF {pf} ({link.netdev}) link is down"
            if problem is not None:
                out[device.health_key] = Observation.bad(problem)
        self.inventory.healthy[self.spec.name] = {d.id: d.health_key not in out for d in devices}
        return out

    def _present(self) -> frozenset[str]:
        """The PCI functions that exist: one directory listing per tick instead of one stat per
        device (a 1 000-VF pool checked every second)."""
        try:
            return frozenset(self.host.listdir(SYS_PCI_DEVICES))
        except HostReadError:
            return frozenset()

    async def watch(
        self, devices: Callable[[], Sequence[Device]], wake: Callable[[], None]
    ) -> None:
        if self.monitor is not None and self.check_pf:
            await self.monitor.subscribe(wake)
