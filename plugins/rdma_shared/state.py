"""What discovery learned, for the health checker and the metrics collector.

Discovery (a worker thread) publishes one :class:`ResourceView` per resource; health checks
(another thread) look HCAs up by health key and scrapes read the views. Publishing replaces
whole immutable values under a lock, so readers never see half an update. One instance lives as
long as one config (``build`` makes a new one on reload).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .inventory import ProblemLog
from .ports import HcaRef

__all__ = ["PluginState", "ResourceView"]


@dataclass(frozen=True)
class ResourceView:
    """One resource after its latest discovery: matched HCAs and slots advertised."""

    name: str
    hcas: tuple[HcaRef, ...] = ()
    advertised: int = 0


class PluginState:
    """Shared, thread-safe discovery results of one plugin instance."""

    def __init__(self) -> None:
        self.problems = ProblemLog()
        self._lock = threading.Lock()
        self._views: dict[str, ResourceView] = {}
        self._by_key: dict[str, tuple[HcaRef, ...]] = {}

    def publish(self, view: ResourceView, health_key: str) -> None:
        """Record ``view``; its HCAs become the ones checked for ``health_key``."""
        with self._lock:
            self._views[view.name] = view
            if health_key:
                # Older keys stay resolvable: the runtime may check the previous device list
                # once more before it adopts the new one. Distinct HCA sets are few.
                self._by_key[health_key] = view.hcas

    def hcas_for(self, health_key: str) -> tuple[HcaRef, ...] | None:
        with self._lock:
            return self._by_key.get(health_key)

    def views(self) -> list[ResourceView]:
        with self._lock:
            return sorted(self._views.values(), key=lambda v: v.name)

    def matched_hcas(self) -> list[HcaRef]:
        """Every HCA matched by at least one resource, once, in PCI address order."""
        seen: dict[str, HcaRef] = {}
        for view in self.views():
            for hca in view.hcas:
                seen.setdefault(hca.address, hca)
        return [seen[a] for a in sorted(seen)]
