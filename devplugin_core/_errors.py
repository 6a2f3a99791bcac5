"""Exceptions raised by devplugin_core and by plugins built on it.

::

    DevicePluginError                 base of everything below
    ├── ConfigError                   a config value is wrong: names the file, field path and value
    ├── HostPathError                 a host path escapes the host root or the allow-list
    ├── DiscoveryError                discovery could not run (one bad device is only skipped)
    ├── AllocationError               an Allocate request cannot be honoured (-> gRPC status)
    │   ├── UnknownDeviceError        IDs the resource does not advertise (INVALID_ARGUMENT)
    │   └── UnhealthyDeviceError      IDs currently Unhealthy (FAILED_PRECONDITION)
    ├── RegistrationError             the kubelet refused or never answered Register
    └── PluginNotFoundError           no installed plugin has that name

Errors carry data (``field``, ``value``, ``device_ids``) so callers and tests need not parse
messages. Mapping to gRPC status codes happens only at the gRPC edge (``_server.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "AllocationError",
    "ConfigError",
    "DevicePluginError",
    "DiscoveryError",
    "HostPathError",
    "PluginNotFoundError",
    "RegistrationError",
    "UnhealthyDeviceError",
    "UnknownDeviceError",
]


class DevicePluginError(Exception):
    """Base class of every error raised on purpose by devplugin."""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigError(DevicePluginError):
    """A configuration value is invalid.

    ``field`` is a path such as ``resourceList[2].selectors.pfNames[0]`` ("" for the document
    itself); ``value`` is the offending value (omitted from the message when ``None`` and
    ``show_value`` is false); ``source`` is the file it came from, when known.
    """

    def __init__(
        self,
        field: str,
        message: str,
        value: Any = None,
        *,
        source: str | None = None,
        show_value: bool | None = None,
    ) -> None:
        self.field = field
        self.message = message
        self.value = value
        self.source = source
        self.show_value = value is not None if show_value is None else show_value
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        field = self.field or "<document>"
        text = f"{where}{field}: {self.message}"
        if self.show_value:
            text += f" (got {_short(self.value)})"
        return text

    def with_source(self, source: str) -> ConfigError:
        """The same error, attributed to the file ``source``."""
        return ConfigError(
            self.field, self.message, self.value, source=source, show_value=self.show_value
        )

    def prefixed(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` prepended to the field path."""
        if not prefix:
            return self
        field = (
            prefix
            if not self.field
            else (
                f"{prefix}{self.field}" if self.field.startswith("[") else f"{prefix}.{self.field}"
            )
        )
        return ConfigError(
            field, self.message, self.value, source=self.source, show_value=self.show_value
        )


class HostPathError(DevicePluginError):
    """A host path (from config, sysfs or a tool) failed canonicalisation or the allow-list.

    ``missing``: the path (or a component of it) does not exist, e.g. a hot-removed device's
    node; every other failure is a refusal.
    """

    def __init__(self, path: str, reason: str, *, missing: bool = False) -> None:
        self.path = path
        self.reason = reason
        self.missing = missing
        super().__init__(f"refusing host path {path!r}: {reason}")


class DiscoveryError(DevicePluginError):
    """Discovery failed as a whole (for example the sysfs root is missing)."""


class AllocationError(DevicePluginError):
    """An Allocate/PreStartContainer request cannot be honoured."""

    def __init__(self, message: str, device_ids: Iterable[str] = ()) -> None:
        self.device_ids: Sequence[str] = tuple(device_ids)
        super().__init__(message)


class UnknownDeviceError(AllocationError):
    """The request names device IDs that the resource does not advertise."""

    def __init__(self, resource: str, device_ids: Iterable[str]) -> None:
        ids = tuple(device_ids)
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        super().__init__(f"unknown device IDs for {resource}: {shown}", ids)


class UnhealthyDeviceError(AllocationError):
    """The request names devices that are currently Unhealthy (``details``: why, per device)."""

    def __init__(
        self, resource: str, device_ids: Iterable[str], details: Sequence[str] = ()
    ) -> None:
        ids = tuple(device_ids)
        items = list(details) or list(ids)
        shown = "; ".join(items[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        super().__init__(f"unhealthy devices for {resource}: {shown}", ids)


class RegistrationError(DevicePluginError):
    """The kubelet refused the registration (``refused``) or could not be reached."""

    def __init__(self, message: str, *, refused: bool = True) -> None:
        self.refused = refused
        super().__init__(message)


class PluginNotFoundError(DevicePluginError):
    """No installed plugin has the requested name."""
