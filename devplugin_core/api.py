"""The extension points vendors implement: Discoverer, Allocator, HealthChecker, PluginSpec.

A *resource* is an extended resource name plus a Discoverer (which devices exist), an Allocator
(what a container gets) and optionally a HealthChecker (which devices are healthy). A *plugin* is
a config model plus a function from config to resources, published through the Python entry-point
group ``devplugin.plugins``::

    [project.entry-points."devplugin.plugins"]
    acme-widget = "acme_plugin:SPEC"

Data flows one way: discovery mints :class:`~devplugin_core.model.Device` values, health checks
report :class:`Observation` s about them, the framework joins both into snapshots for the kubelet,
and Allocate hands the requested Device objects back to the Allocator. Plugins never see gRPC.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .hostfs import DEFAULT_DEVICE_ALLOWLIST, HostFS
from .model import ContainerEdits, Device, validate_resource_name

__all__ = [
    "AllocationRequest",
    "Allocator",
    "Discoverer",
    "DiscoveryPass",
    "HealthChecker",
    "Observation",
    "PluginContext",
    "PluginFlag",
    "PluginSpec",
    "PreferredRequest",
    "Rejection",
    "Resource",
    "ResourceSet",
]

C = TypeVar("C")
T = TypeVar("T")


@dataclass(frozen=True)
class PluginContext:
    """What a plugin's build function and its components may use.

    ``host``: the host filesystem view (``--host-root``). ``options``: values of the plugin's own
    flags (:class:`PluginFlag`), keyed by attribute name (``resource_prefix``). ``cdi_enabled``:
    whether ``--cdi-dir`` is set.
    """

    host: HostFS
    options: Mapping[str, Any] = field(default_factory=dict)
    cdi_enabled: bool = False

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


@dataclass(frozen=True)
class Rejection:
    """Why a candidate device was not advertised (shown by ``devplugin discover``)."""

    subject: str
    reason: str
    resource: str = ""


class DiscoveryPass:
    """One discovery pass over the host, shared by every resource of a plugin.

    :meth:`cached` lets resources share expensive work within the pass (one PCI scan, one pool
    assignment for first-match-wins selectors); :meth:`reject` records why a candidate was left
    out so ``devplugin discover`` can explain it.
    """

    def __init__(self, host: HostFS) -> None:
        self.host = host
        self.rejections: list[Rejection] = []
        self._rejected: set[Rejection] = set()  # O(1) dedup: a big host has 1000s of these
        self._cache: dict[Hashable, Any] = {}

    def cached(self, key: Hashable, factory: Callable[[], T]) -> T:
        """The value of ``factory()``, computed at most once per pass for ``key``."""
        if key not in self._cache:
            self._cache[key] = factory()
        value: T = self._cache[key]
        return value

    def reject(self, subject: str, reason: str, resource: str = "") -> None:
        """Record that ``subject`` (a PCI address, netdev...) was left out, and why."""
        item = Rejection(subject, reason, resource)
        if item not in self._rejected:
            self._rejected.add(item)
            self.rejections.append(item)


class Discoverer(abc.ABC):
    """Reports the current devices of one resource.

    :meth:`discover` is called in a worker thread (with a time limit) at start, periodically and
    after a config reload. It returns the *whole* current list; the framework diffs. It must not
    raise for one bad device: skip it, log the path and call ``scan.reject``.
    """

    @abc.abstractmethod
    def discover(self, scan: DiscoveryPass) -> Sequence[Device]:
        """All devices of this resource right now."""

    def fingerprint(self, host: HostFS) -> Hashable:
        """A cheap value that changes when a full rediscovery is needed (default: never).

        Polled more often than the full rescan (e.g. ``sriov_numvfs`` of every PF).
        """
        return None


@dataclass(frozen=True)
class AllocationRequest:
    """One container's Allocate request, resolved against the current snapshot."""

    resource: str
    devices: tuple[Device, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.devices)


@dataclass(frozen=True)
class PreferredRequest:
    """GetPreferredAllocation: pick ``size`` of ``available``, keeping ``must_include``."""

    resource: str
    available: tuple[Device, ...]
    must_include: tuple[Device, ...]
    size: int


class Allocator:
    """Decides what a container gets for a set of devices.

    The default :meth:`allocate` merges every device's own :attr:`Device.edits`; subclasses
    extend it through ``super().allocate(request).merge(...)``. :meth:`preferred` defaults to
    NUMA packing; :meth:`pre_start` is only advertised to the kubelet when overridden.
    Both :meth:`allocate` and :meth:`pre_start` run in a worker thread with a time limit.
    """

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        """Container edits for ``request.devices`` (already validated: known and healthy)."""
        return ContainerEdits().merge(*(d.edits for d in request.devices))

    def preferred(self, request: PreferredRequest) -> Sequence[str]:
        """Preferred device IDs; default: fewest NUMA nodes, honouring ``must_include``."""
        from .allocation import prefer_packed

        return prefer_packed(request, levels=[numa_level])

    def pre_start(self, devices: Sequence[Device]) -> None:
        """Called before every container start when overridden; raise to fail the start."""

    @property
    def pre_start_required(self) -> bool:
        return type(self).pre_start is not Allocator.pre_start


def numa_level(device: Device) -> Hashable:
    """Grouping key used by the default preferred allocation: the device's NUMA node(s)."""
    return device.numa_nodes or None


@dataclass(frozen=True)
class Observation:
    """One health check result for a health key (a device ID unless devices share a key)."""

    healthy: bool
    reason: str = ""

    @classmethod
    def ok(cls) -> Observation:
        return _OK

    @classmethod
    def bad(cls, reason: str) -> Observation:
        return cls(False, reason)


_OK = Observation(True)


class HealthChecker(abc.ABC):
    """Tells which devices are healthy; devices must be able to recover.

    :meth:`check` runs in a worker thread every ``interval`` seconds (and at once when
    :meth:`watch` calls ``wake``), bounded by ``timeout``; it returns observations keyed by
    :attr:`Device.health_key`. Keys it leaves out count as healthy. The framework applies the
    hysteresis: Unhealthy at the first bad observation, Healthy again after ``recover_after``
    consecutive good ones. A check that raises or times out marks every device it covers bad.
    """

    interval: float = 5.0
    timeout: float = 5.0
    recover_after: int = 2

    @abc.abstractmethod
    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        """Observations for the given devices' health keys."""

    async def watch(
        self, devices: Callable[[], Sequence[Device]], wake: Callable[[], None]
    ) -> None:
        """Optional event source (netlink, inotify...): call ``wake()`` when health may have
        changed. Runs on the event loop for the resource's lifetime; must never block it."""
        return None


@dataclass(frozen=True)
class Resource:
    """One extended resource: its name and the three components that serve it.

    ``device_allowlist`` / ``mount_allowlist``: host path prefixes that device nodes and mount
    sources must resolve under (checked inside the host root on every Allocate).
    """

    name: str
    discoverer: Discoverer
    allocator: Allocator = field(default_factory=Allocator)
    health: HealthChecker | None = None
    device_allowlist: tuple[str, ...] = DEFAULT_DEVICE_ALLOWLIST
    mount_allowlist: tuple[str, ...] = ()
    allocate_timeout: float = 10.0

    def __post_init__(self) -> None:
        validate_resource_name(self.name, "resource name")


@dataclass(frozen=True)
class ResourceSet:
    """What a plugin's build function returns: resources plus plugin-wide settings.

    ``rediscover_interval``: seconds between full rescans (0 disables). ``fingerprint_interval``:
    seconds between cheap :meth:`Discoverer.fingerprint` polls. ``collectors``: extra Prometheus
    collectors (objects with a ``collect()`` method) for plugin metrics, built at scrape time.
    ``max_skipped_rescans``: when every discoverer has a fingerprint, a periodic rescan whose
    fingerprints show no change since the last pass is skipped — at most this many in a row, so
    a full pass still runs at least every ``max_skipped_rescans + 1`` intervals (0: always scan).
    """

    resources: tuple[Resource, ...]
    rediscover_interval: float = 60.0
    fingerprint_interval: float = 5.0
    max_skipped_rescans: int = 9
    collectors: tuple[Any, ...] = ()
    description: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resources", tuple(self.resources))
        names = [r.name for r in self.resources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            from .errors import ConfigError

            raise ConfigError("resources", "resource names must be unique", dupes)


@dataclass(frozen=True)
class PluginFlag:
    """A plugin-specific command-line flag (also read from ``DEVPLUGIN_<NAME>``)."""

    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] = str

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


@dataclass(frozen=True)
class PluginSpec(Generic[C]):
    """A plugin: a config model plus a function from config to resources.

    ``config_model``: a dataclass decoded by :func:`devplugin_core.config.decode`.
    ``build(config, ctx)``: returns the resources (a :class:`ResourceSet` or a plain sequence of
    :class:`Resource`); it may raise ConfigError for cross-field problems and must not do I/O
    beyond cheap checks. ``default_config_file``: used when ``--config-file`` is not given.
    ``config_optional``: the plugin runs on built-in defaults when no file is given or found.
    ``preflight(config, ctx)``: host checks before serving (run in a worker thread); raise
    DevicePluginError to refuse to start. ``on_start(config, ctx)``: one-time host housekeeping
    when ``devplugin run`` starts serving, e.g. removing stale files of our own (worker thread,
    after preflight; never for ``discover``/``validate`` nor on a reload).
    ``demo(fake_host)``: adds devices to a testing FakeHost and returns the config document for
    ``devplugin demo`` (None for defaults).
    """

    name: str
    summary: str
    config_model: type[C]
    build: Callable[[C, PluginContext], ResourceSet | Sequence[Resource]]
    default_config_file: str | None = None
    config_optional: bool = False
    default_metrics_port: int | None = None
    flags: tuple[PluginFlag, ...] = ()
    preflight: Callable[[C, PluginContext], None] | None = None
    on_start: Callable[[C, PluginContext], None] | None = None
    demo: Callable[[Any], Mapping[str, Any] | None] | None = None
    #: Where the plugin's documentation lives (a path in its source tree or a URL).
    docs: str = ""

    def resources(self, config: C, ctx: PluginContext) -> ResourceSet:
        """Call :attr:`build` and normalise the result to a :class:`ResourceSet`."""
        built = self.build(config, ctx)
        if isinstance(built, ResourceSet):
            return built
        return ResourceSet(tuple(built))

    def replace(self, **changes: Any) -> PluginSpec[C]:
        return dataclasses.replace(self, **changes)
