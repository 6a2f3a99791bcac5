"""The rebel-npu config: upstream's ``resourceList`` (accelerator pools) plus our own keys.

Every key is optional; an empty document is the zero-config default (one resource per product
family). Upstream files (``deployments/rbln/configmap.yaml``'s ``config.json``) load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from devplugin_core import ConfigError, one_or_many, option
from devplugin_core.toolkit import AcceleratorSelectors, ResourceEntry, full_names, resource_list

__all__ = [
    "DEFAULT_PREFIX",
    "HealthConfig",
    "PoolConfig",
    "RebelNpuConfig",
    "Selectors",
]

DEFAULT_PREFIX = "rebellions.ai"


def _bounded(value: float, low: float, high: float, name: str) -> None:
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low:g} and {high:g}", value)


def _absolute_or_empty(value: str, name: str) -> None:
    if value and (not value.startswith("/") or ".." in value.split("/")):
        raise ConfigError(name, "must be an absolute path without '..' (or empty)", value)


#: Upstream accelerator selectors (vendors, devices, drivers, pciAddresses): a device must match
#: every non-empty list (AND) and one value of each list (OR).
Selectors = AcceleratorSelectors


@dataclass(frozen=True, kw_only=True)
class PoolConfig(ResourceEntry):
    """One ``resourceList`` entry: an extended resource and the selectors filling it."""

    DEFAULT_PREFIX: ClassVar[str] = DEFAULT_PREFIX

    device_type: str = option(
        "deviceType", default="accelerator", doc="only 'accelerator' (the default here)"
    )
    selectors: tuple[Selectors, ...] = option(
        "selectors",
        default=(Selectors(),),
        decoder=one_or_many(Selectors),
        doc="one selector object or a list (a device matching any of them joins)",
    )


@dataclass(frozen=True)
class HealthConfig:
    """How devices are checked (see the README for the signals)."""

    interval: float = option(
        "interval", default=0.5, doc="seconds between the cheap sysfs and /dev checks"
    )
    recover_after: int = option(
        "recoverAfter", default=2, doc="good checks in a row before Healthy again"
    )
    use_rbln_smi: bool = option(
        "useRblnSmi", default=True, doc="also use the status rbln-smi -j reports"
    )
    healthy_statuses: tuple[str, ...] = option(
        "healthyStatuses", default=("normal",), doc="rbln-smi status values that are healthy"
    )
    max_temperature: float = option(
        "maxTemperatureCelsius", default=0.0, doc="Unhealthy at or above this temperature (0 = off)"
    )

    def __post_init__(self) -> None:
        _bounded(self.interval, 0.05, 60, "interval")
        _bounded(self.recover_after, 1, 100, "recoverAfter")
        _bounded(self.max_temperature, 0, 200, "maxTemperatureCelsius")
        if not self.healthy_statuses:
            raise ConfigError("healthyStatuses", "needs at least one status")


@dataclass(frozen=True)
class RebelNpuConfig:
    """The whole config document."""

    resource_list: tuple[PoolConfig, ...] = option(
        "resourceList",
        default=(),
        decoder=resource_list(
            {"accelerator": PoolConfig}, default_type="accelerator", allow_empty=True
        ),
        doc="upstream pools; empty = ATOM and REBEL families under rebellions.ai",
    )
    rbln_stat_host_path: str = option(
        "rblnStatHostPath",
        default="/usr/bin/rbln-stat",
        doc="host file mounted read-only at /usr/bin/rbln-stat",
    )
    rbln_smi_host_path: str = option(
        "rblnSmiHostPath",
        default="/usr/bin/rbln-smi",
        doc="host file mounted read-only at /usr/bin/rbln-smi",
    )
    rbln_smi_path: str = option(
        "rblnSmiPath",
        default="",
        doc="executable the plugin runs ('' = host root + rblnSmiHostPath)",
    )
    rsd_groups: Literal["auto", "create", "off"] = option(
        "rsdGroups", default="auto", doc="RSD group per allocation: auto, create or off"
    )
    rsd_lock_file: str = option(
        "rsdLockFile",
        default="/var/run/rbln-device-plugin.lock",
        doc="flock file serialising RSD group changes",
    )
    rsd_timeout: float = option(
        "rsdTimeout", default=8.0, doc="seconds an allocation may spend on its RSD group"
    )
    rbln_smi_timeout: float = option(
        "rblnSmiTimeout", default=5.0, doc="seconds one rbln-smi call may take"
    )
    rbln_smi_interval: float = option(
        "rblnSmiInterval", default=10.0, doc="minimum seconds between rbln-smi -j polls (0 = never)"
    )
    health: HealthConfig = option("health", default_factory=HealthConfig)

    def __post_init__(self) -> None:
        for key, value in (
            ("rblnStatHostPath", self.rbln_stat_host_path),
            ("rblnSmiHostPath", self.rbln_smi_host_path),
            ("rblnSmiPath", self.rbln_smi_path),
            ("rsdLockFile", self.rsd_lock_file),
        ):
            _absolute_or_empty(value, key)
        if not self.rsd_lock_file:
            raise ConfigError("rsdLockFile", "must be set")
        _bounded(self.rsd_timeout, 0.1, 60, "rsdTimeout")
        _bounded(self.rbln_smi_timeout, 0.1, 60, "rblnSmiTimeout")
        if self.rbln_smi_interval != 0:
            _bounded(self.rbln_smi_interval, 0.1, 3600, "rblnSmiInterval")
        full_names(self.resource_list, DEFAULT_PREFIX)

    def smi_executable(self, host_root: str) -> str:
        """The rbln-smi the plugin runs: ``rblnSmiPath``, else the host's copy seen through the
        host root ('' when neither is configured)."""
        if self.rbln_smi_path:
            return self.rbln_smi_path
        if not self.rbln_smi_host_path:
            return ""
        root = host_root.rstrip("/")
        return f"{root}{self.rbln_smi_host_path}"
