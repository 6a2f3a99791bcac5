"""The extension points vendors implement: Scanner, Allocator, HealthChecker, PluginSpec.

A *plugin* is a config model plus a ``build(config, ctx)`` function returning a :class:`Plugin`:
one :class:`Scanner` that reads the host in one pass and reports the devices of every
:class:`Resource`, plus plugin-wide settings. Each resource names an extended resource and the
components that serve it: an :class:`Allocator` (what a container gets) and optionally a
:class:`HealthChecker` (which devices are healthy). Plugins are published through the Python
entry-point group ``devplugin.plugins``::

    [project.entry-points."devplugin.plugins"]
    acme-widget = "acme_plugin:SPEC"

Data flows one way: the scanner mints :class:`~devplugin_core._model.Device` values (with a
typed ``payload`` for the allocator and health checker), health checks report
:class:`Observation` s about them, the framework joins both into snapshots for the kubelet,
and Allocate hands the requested Device objects back to the Allocator. Plugins never see gRPC.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ._errors import ConfigError
from ._hostfs import DEFAULT_DEVICE_ALLOWLIST, HostFS
from ._model import ContainerEdits, Device, validate_resource_name
from ._store import Snapshot

__all__ = [
    "AllocationRequest",
    "Allocator",
    "HealthChecker",
    "MetricsCollector",
    "Observation",
    "Plugin",
    "PluginContext",
    "PluginFlag",
    "PluginSpec",
    "PreferredRequest",
    "Rejection",
    "Resource",
    "Scan",
    "Scanner",
    "numa_level",
]

C = TypeVar("C")


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


# -- allocation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AllocationRequest:
    """One container's Allocate request, resolved against the current snapshot (every device
    known and healthy; parts whose host paths vanished are already left out)."""

    resource: str
    devices: tuple[Device, ...]
    _witnesses: list[str] = field(default_factory=list, repr=False, compare=False)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(d.id for d in self.devices)

    def depends_on(self, *paths: str) -> None:
        """A reusable allocator names the files its answer was read from or wrote (paths in
        the plugin's own filesystem, e.g. ``host.local("/sys/bus/pci/devices/…/driver")``).
        The answer is reused only while each path still leads to the same file (device and
        inode, symlinks followed: a rebind, a recreated sysfs entry or a file replaced by
        rename shows); a path that cannot be stat'ed now makes the answer one-off."""
        self._witnesses.extend(paths)


@dataclass(frozen=True)
class PreferredRequest:
    """GetPreferredAllocation: pick ``size`` of ``available``, keeping ``must_include``."""

    resource: str
    available: tuple[Device, ...]
    must_include: tuple[Device, ...]
    size: int


class Allocator:
    """Decides what a container gets for a set of devices.

    The default :meth:`allocate` merges every device's own edits (with its parts); subclasses
    extend it through ``super().allocate(request).merge(...)``. :meth:`preferred` defaults to
    NUMA packing; :meth:`pre_start` is only advertised to the kubelet when overridden.
    Both :meth:`allocate` and :meth:`pre_start` run in a worker thread with a time limit.

    ``reusable``: set it to True when :meth:`allocate` depends only on the devices it is given
    and on files it names with :meth:`AllocationRequest.depends_on` (no other host reads, no
    side effects beyond files so named, such as groups created). The framework then answers a
    repeated request from a cache while the resource's snapshot is unchanged, after
    re-verifying every host path of the answer and every named file with one ``stat`` each (a
    swapped, replaced or vanished one falls back to a full Allocate). :meth:`reuse_key` says
    which requests share an answer.
    """

    @property
    def reusable(self) -> bool:
        """Whether answers may be reused (see the class docstring); default False."""
        return False

    @property
    def build_ahead(self) -> bool:
        """With ``reusable``: whether the framework may build every healthy device's
        one-device answer ahead of any request (a second after the device list changes, in
        the background), so that the first Allocate of a device is answered from the cache
        too. Side effects of :meth:`allocate` (a file it writes) then happen ahead of time.
        Default False."""
        return False

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        """Container edits for ``request.devices`` (already validated: known and healthy)."""
        return ContainerEdits().merge(*(d.all_edits for d in request.devices))

    def preferred(self, request: PreferredRequest) -> Sequence[str]:
        """Preferred device IDs; default: fewest NUMA nodes, honouring ``must_include``."""
        from ._allocation import prefer_packed

        return prefer_packed(request, levels=[numa_level])

    def pre_start(self, devices: Sequence[Device]) -> None:
        """Called before every container start when overridden; raise to fail the start."""

    def reuse_key(self, devices: Sequence[Device]) -> Hashable:
        """Requests with equal keys get the same answer (default: the device IDs in order)."""
        return tuple(d.id for d in devices)

    @property
    def pre_start_required(self) -> bool:
        return type(self).pre_start is not Allocator.pre_start


def numa_level(device: Device) -> Hashable:
    """Grouping key used by the default preferred allocation: the device's NUMA node(s)."""
    return device.numa_nodes or None


# -- health ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """One health check result for a health key (a device ID unless devices share a key).

    ``rescan``: the host changed under this key (a function or one of several HCAs vanished):
    the framework rescans at once instead of waiting for the next interval.
    """

    healthy: bool
    reason: str = ""
    rescan: bool = False

    @classmethod
    def ok(cls) -> Observation:
        return _OK

    @classmethod
    def bad(cls, reason: str) -> Observation:
        return cls(False, reason)

    @classmethod
    def gone(cls, reason: str) -> Observation:
        """Unhealthy because the host device vanished; triggers a rescan."""
        return cls(False, reason, rescan=True)


_OK = Observation(True)


class HealthChecker(abc.ABC):
    """Tells which devices are healthy; devices must be able to recover.

    :meth:`check` runs in the health thread (its own while it hangs) every ``interval``
    seconds (``0``: only when :meth:`watch` calls ``wake``), bounded by ``timeout``; it returns
    observations keyed by :attr:`Device.health_key`. Keys it leaves out count as healthy. The
    framework applies the hysteresis: Unhealthy at the first bad observation, Healthy again
    after ``recover_after`` consecutive good ones. A check that raises, or runs past ``timeout``,
    marks every device it covers bad; one still running after ``hang_limit`` seconds fails
    ``/healthz`` so that the kubelet restarts the plugin.
    """

    interval: float = 5.0
    timeout: float = 5.0
    recover_after: int = 2
    hang_limit: float = 0.0  # 0: max(60 s, 10 x timeout)

    @abc.abstractmethod
    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        """Observations for the given devices' health keys."""

    async def watch(
        self, devices: Callable[[], Sequence[Device]], wake: Callable[[], None]
    ) -> None:
        """Optional event source (netlink, inotify...): call ``wake()`` when health may have
        changed. Runs on the event loop for the resource's lifetime; must never block it."""
        return None

    @property
    def hang_bound(self) -> float:
        """Seconds after which a still-running check fails ``/healthz``."""
        return self.hang_limit or max(60.0, 10 * self.timeout)


def _check_health_settings(name: str, checker: HealthChecker) -> None:
    where = f"{name}: {type(checker).__name__}"
    for attr, value, ok, rule in (
        ("interval", checker.interval, checker.interval >= 0, ">= 0 (0: only on wake())"),
        ("timeout", checker.timeout, checker.timeout > 0, "> 0"),
        ("recover_after", checker.recover_after, checker.recover_after >= 1, ">= 1"),
        ("hang_limit", checker.hang_limit, checker.hang_limit >= 0, ">= 0 (0: default)"),
    ):
        if not ok:
            raise ConfigError(f"{where}.{attr}", f"must be {rule}", value)


# -- resources and scans ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Resource:
    """One extended resource: its name and the components that serve it.

    ``device_allowlist`` / ``mount_allowlist``: host path prefixes that device nodes and mount
    sources must resolve under (checked inside the host root at every scan and Allocate).
    ``allocate_timeout``: seconds an Allocate may take (the kubelet itself waits forever).
    Resources compare by identity: a scan that reports a new Resource object under a known
    name swaps its components in without restarting its endpoint.
    """

    name: str
    allocator: Allocator = field(default_factory=Allocator)
    health: HealthChecker | None = None
    device_allowlist: tuple[str, ...] = DEFAULT_DEVICE_ALLOWLIST
    mount_allowlist: tuple[str, ...] = ()
    allocate_timeout: float = 10.0

    def __post_init__(self) -> None:
        validate_resource_name(self.name, "resource name")
        for attr in ("device_allowlist", "mount_allowlist"):
            prefixes = tuple(getattr(self, attr))
            object.__setattr__(self, attr, prefixes)
            for prefix in prefixes:
                if not prefix.startswith("/") or ".." in prefix.split("/"):
                    raise ConfigError(
                        f"{self.name}: {attr}", "entries must be absolute, without '..'", prefix
                    )
        if not self.allocate_timeout > 0:
            raise ConfigError(
                f"{self.name}: allocate_timeout", "must be > 0", self.allocate_timeout
            )
        if self.health is not None:
            _check_health_settings(self.name, self.health)


@dataclass(frozen=True)
class Rejection:
    """Why a candidate device was not advertised (shown by ``devplugin discover``)."""

    subject: str
    reason: str
    resource: str = ""


class Scan:
    """One pass over the host, filled in by :meth:`Scanner.scan`.

    :meth:`add` puts devices into a resource (a resource with devices is served; the plugin's
    configured resources are served even while empty), :meth:`reject` records why a candidate
    was left out so that ``devplugin discover`` can explain it.
    """

    def __init__(self, host: HostFS, resources: Iterable[Resource] = ()) -> None:
        self.host = host
        self.rejections: list[Rejection] = []
        self._rejected: set[Rejection] = set()  # O(1) dedup: a big host has 1000s of these
        self._resources: dict[str, Resource] = {}
        self._devices: dict[str, list[Device]] = {}
        for resource in resources:
            self._serve(resource)

    def _serve(self, resource: Resource) -> list[Device]:
        known = self._resources.get(resource.name)
        if known is None:
            self._resources[resource.name] = resource
            return self._devices.setdefault(resource.name, [])
        if known is not resource:
            raise ValueError(f"two different Resource objects are named {resource.name!r}")
        return self._devices[resource.name]

    def add(self, resource: Resource, *devices: Device) -> None:
        """Advertise ``devices`` under ``resource`` (in this order)."""
        self._serve(resource).extend(devices)

    def reject(self, subject: str, reason: str, resource: Resource | str = "") -> None:
        """Record that ``subject`` (a PCI address, netdev...) was left out, and why."""
        name = resource.name if isinstance(resource, Resource) else resource
        item = Rejection(subject, reason, name)
        if item not in self._rejected:
            self._rejected.add(item)
            self.rejections.append(item)

    @property
    def tree(self) -> dict[str, tuple[Resource, list[Device]]]:
        """Resource name -> (resource, devices), in the order resources were first named."""
        return {n: (r, self._devices[n]) for n, r in self._resources.items()}


class Scanner(abc.ABC):
    """Reports the devices of every resource of a plugin from one pass over the host.

    :meth:`scan` runs in a worker thread with a time limit, at start, periodically, after a
    config reload and whenever a health check or an Allocate noticed that the host changed. It
    reports the *whole* current state; the framework diffs. It must not raise for one bad
    device: skip it and call ``scan.reject`` with the reason (and the path).
    """

    @abc.abstractmethod
    def scan(self, scan: Scan) -> None:
        """Fill ``scan`` with every resource's devices as the host has them now."""

    def fingerprint(self, host: HostFS) -> Hashable:
        """A cheap value that changes when a full rescan is needed; ``None`` (the default)
        means the plugin has none. Polled every ``Plugin.fingerprint_interval`` seconds and
        taken before and after each scan (in the scan thread); the one after is the baseline."""
        return None


class MetricsCollector(Protocol):
    """Plugin metrics, built at scrape time (in a worker thread, with a deadline)."""

    def collect(self, snapshots: Mapping[str, Snapshot]) -> Iterable[Any]:
        """Prometheus metric families for the current ``snapshots`` (resource name ->
        what is advertised, with each device's health and payload)."""
        ...


@dataclass(frozen=True)
class Plugin:
    """What a plugin's build function returns for one config.

    ``resources``: served even while they have no devices (configured pools); a scan may add
    devices to others, which are then served while they have devices. ``rescan_interval``:
    seconds between full scans (0 disables periodic scans). ``fingerprint_interval``: seconds
    between :meth:`Scanner.fingerprint` polls. ``max_skipped_rescans``: a periodic scan whose
    fingerprint shows no change is skipped, at most this many in a row. ``collectors``: plugin
    metrics. ``close``: called (in a worker thread) once this build is no longer used, after a
    reload replaced it or at exit: release vendor handles and stop threads here.
    ``description``: shown in the logs at start.
    """

    scanner: Scanner
    resources: tuple[Resource, ...] = ()
    rescan_interval: float = 60.0
    fingerprint_interval: float = 5.0
    max_skipped_rescans: int = 9
    collectors: tuple[MetricsCollector, ...] = ()
    close: Callable[[], None] | None = None
    description: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resources", tuple(self.resources))
        object.__setattr__(self, "collectors", tuple(self.collectors))
        names = [r.name for r in self.resources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError("resources", "resource names must be unique", dupes)
        for attr in ("rescan_interval", "fingerprint_interval"):
            value = getattr(self, attr)
            if value < 0:
                raise ConfigError(attr, "must be >= 0 (0 disables)", value)
        if self.max_skipped_rescans < 0:
            raise ConfigError("max_skipped_rescans", "must be >= 0", self.max_skipped_rescans)
        if not isinstance(self.scanner, Scanner):
            raise TypeError(f"Plugin.scanner must be a Scanner, got {type(self.scanner).__name__}")


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
    """A plugin: a config model plus a function from config to a running :class:`Plugin`.

    ``config_model``: a dataclass decoded by :func:`devplugin_core.decode`.
    ``build(config, ctx)``: returns the :class:`Plugin`; it may raise ConfigError for
    cross-field problems and must not do I/O beyond cheap checks. ``default_config_file``:
    used when ``--config-file`` is not given. ``config_optional``: the plugin runs on built-in
    defaults when no file is given or found. ``preflight(config, ctx)``: host checks before
    serving (run in a worker thread); raise DevicePluginError to refuse to start.
    ``on_start(config, ctx)``: one-time host housekeeping when ``devplugin run`` starts
    serving, e.g. removing stale files of our own (worker thread, after preflight; never for
    ``discover``/``validate`` nor on a reload). ``demo(fake_host)``: adds devices to a testing
    FakeHost and returns the config document for ``devplugin demo`` (None for defaults).
    """

    name: str
    summary: str
    config_model: type[C]
    build: Callable[[C, PluginContext], Plugin]
    default_config_file: str | None = None
    config_optional: bool = False
    default_metrics_port: int | None = None
    flags: tuple[PluginFlag, ...] = ()
    preflight: Callable[[C, PluginContext], None] | None = None
    on_start: Callable[[C, PluginContext], None] | None = None
    demo: Callable[[Any], Mapping[str, Any] | None] | None = None
    #: Where the plugin's documentation lives (a path in its source tree or a URL).
    docs: str = ""

    def make(self, config: C, ctx: PluginContext) -> Plugin:
        """Call :attr:`build` and check that it returned a :class:`Plugin`."""
        built = self.build(config, ctx)
        if not isinstance(built, Plugin):
            raise TypeError(f"{self.name}: build() returned {type(built).__name__}, not Plugin")
        return built

    def replace(self, **changes: Any) -> PluginSpec[C]:
        return dataclasses.replace(self, **changes)
