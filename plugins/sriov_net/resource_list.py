"""The ``resourceList`` format of sriov-network-device-plugin, independent of any device kind.

Nothing in this module knows about SR-IOV: it is the part of upstream's config schema that every
plugin reading ``{"resourceList": [...]}`` shares (the Rebellions NPU plugin reads the same
format with accelerator selectors) and a candidate to move into ``devplugin_core``:

* :class:`ResourceEntry`: the per-pool keys (``resourceName``, ``resourcePrefix``,
  ``deviceType``, ``excludeTopology``, ``additionalInfo``) with upstream's name rule;
* :class:`AcceleratorSelectors`: upstream's accelerator selector object;
* value decoders that keep upstream's exact matching but warn about values that can never match
  (``0x15b3``, short PCI addresses) — :func:`hex_ids`, :func:`pci_addresses`, :func:`strings`;
* :func:`resource_list` (a field decoder choosing the entry model by ``deviceType``) and
  :func:`full_names` (duplicate and kubelet-name checks, which need the default prefix).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from devplugin_core import (
    ConfigError,
    DecodeContext,
    extended_resource_name_error,
    hex_id_warnings,
    option,
)
from devplugin_core.pci import PCI_ADDRESS

__all__ = [
    "RESOURCE_NAME",
    "AcceleratorSelectors",
    "ResourceEntry",
    "additional_info",
    "full_names",
    "hex_ids",
    "pci_addresses",
    "resource_list",
    "strings",
]

#: Upstream's ``resourceName`` rule (``utils.ValidResourceName``); ``-`` allowed since 2023.
RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

E = TypeVar("E", bound="ResourceEntry")
Decoder = Callable[[Any, str, DecodeContext], Any]


def strings(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """A list of strings (``null`` = empty)."""
    if value is None:
        return ()
    decoded: tuple[str, ...] = ctx.decode(tuple[str, ...], value, path)
    return decoded


def hex_ids(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """Vendor/device IDs, matched exactly; warns about forms sysfs never shows."""
    values = strings(value, path, ctx)
    ctx.warnings.extend(hex_id_warnings(values, path))
    return values


def pci_addresses(value: Any, path: str, ctx: DecodeContext) -> tuple[str, ...]:
    """Full PCI addresses, matched exactly; warns about short or upper-case forms."""
    values = strings(value, path, ctx)
    ctx.warnings.extend(
        f"{path}[{i}]: {v!r} can never match: use the full lower-case form such as 0000:03:02.0"
        for i, v in enumerate(values)
        if not PCI_ADDRESS.match(v)
    )
    return values


def additional_info(
    value: Any, path: str, ctx: DecodeContext
) -> Mapping[str, Mapping[str, str]] | None:
    """``additionalInfo``: ``{"*" | <pci address>: {key: value}}``; ``null``/absent = None."""
    if value is None:
        return None
    table: Mapping[str, Mapping[str, str]] = ctx.decode(
        Mapping[str, Mapping[str, str]], value, path
    )
    ctx.warnings.extend(
        f"{path}[{key!r}]: never used: keys are '*' or a full PCI address such as 0000:03:02.0"
        for key in table
        if key != "*" and not PCI_ADDRESS.match(key)
    )
    return table


@dataclass(frozen=True, kw_only=True)
class ResourceEntry:
    """The keys every upstream ``resourceList`` entry has, whatever its device type."""

    resource_name: str = option("resourceName", doc="pool name, ^[a-zA-Z0-9_-]+$")
    resource_prefix: str = option(
        "resourcePrefix", default="", doc="overrides --resource-prefix for this pool"
    )
    device_type: str = option("deviceType", default="netDevice", doc="netDevice or accelerator")
    exclude_topology: bool = option(
        "excludeTopology", default=False, doc="advertise no NUMA node for this pool's devices"
    )
    additional_info: Mapping[str, Mapping[str, str]] | None = option(
        "additionalInfo",
        default=None,
        decoder=additional_info,
        doc='extra _INFO entries: "*" for every device, then per PCI address',
    )

    def __post_init__(self) -> None:
        if not RESOURCE_NAME.match(self.resource_name):
            raise ConfigError(
                "resourceName",
                "contains invalid characters (allowed: letters, digits, '_' and '-')",
                self.resource_name,
                show_value=True,
            )

    def prefix(self, default: str) -> str:
        """The effective resource prefix of this pool."""
        return self.resource_prefix or default

    def full_name(self, default_prefix: str) -> str:
        """``<prefix>/<resourceName>``, the extended resource name the kubelet sees."""
        return f"{self.prefix(default_prefix)}/{self.resource_name}"


@dataclass(frozen=True, kw_only=True)
class AcceleratorSelectors:
    """Upstream's accelerator selectors: values OR together, keys AND together, in this order."""

    vendors: tuple[str, ...] = option("vendors", default=(), decoder=hex_ids)
    devices: tuple[str, ...] = option("devices", default=(), decoder=hex_ids)
    drivers: tuple[str, ...] = option("drivers", default=(), decoder=strings)
    pci_addresses: tuple[str, ...] = option("pciAddresses", default=(), decoder=pci_addresses)


def _key(item: Mapping[str, Any], key: str) -> Any:
    """``item[key]`` the way Go's decoder finds it: exact key first, then case-insensitive."""
    if key in item:
        return item[key]
    for name, value in item.items():
        if isinstance(name, str) and name.lower() == key.lower():
            return value
    return None


def resource_list(
    models: Mapping[str, type[ResourceEntry]],
    *,
    unsupported: Mapping[str, str] | None = None,
    default_type: str = "netDevice",
) -> Decoder:
    """Decoder for ``resourceList``: a non-empty list whose entries are decoded with the model
    of their ``deviceType`` (absent or empty = ``default_type``). Types in ``unsupported`` fail
    with their reason; other unknown types fail listing the supported ones."""
    blocked = dict(unsupported or {})

    def decode_list(value: Any, path: str, ctx: DecodeContext) -> tuple[ResourceEntry, ...]:
        if value is None:
            raise ConfigError(path, "is required", show_value=False)
        if not isinstance(value, list):
            raise ConfigError(path, "must be a list of resource objects", value)
        if not value:
            raise ConfigError(path, "needs at least one resource (nothing to serve)")
        out = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(where, "must be an object", item)
            kind = _key(item, "deviceType") or default_type
            if not isinstance(kind, str):
                raise ConfigError(f"{where}.deviceType", "must be a string", kind, show_value=True)
            if kind in blocked:
                raise ConfigError(
                    f"{where}.deviceType", f"{kind!r} is not supported yet: {blocked[kind]}", kind
                )
            model = models.get(kind)
            if model is None:
                known = ", ".join(repr(k) for k in models)
                raise ConfigError(
                    f"{where}.deviceType",
                    f"unsupported deviceType (use {known})",
                    kind,
                    show_value=True,
                )
            out.append(ctx.decode_model(model, item, where))
        return tuple(out)

    return decode_list


def full_names(
    entries: Sequence[ResourceEntry], default_prefix: str, path: str = "resourceList"
) -> list[str]:
    """The extended resource name of every entry, in order.

    Raises :class:`ConfigError` naming the entry when a name is taken twice (same effective
    prefix and name, as upstream) or when the kubelet would refuse it.
    """
    seen: dict[str, int] = {}
    names = []
    for index, entry in enumerate(entries):
        name = entry.full_name(default_prefix)
        where = f"{path}[{index}]"
        reason = extended_resource_name_error(name)
        if reason:
            field = "resourceName"
            if "domain" in reason:
                field = "resourcePrefix"
                if not entry.resource_prefix:
                    reason += " (the prefix comes from --resource-prefix)"
            raise ConfigError(
                f"{where}.{field}", f"{name!r} is not a valid extended resource name: {reason}"
            )
        if name in seen:
            raise ConfigError(
                f"{where}.resourceName",
                f"resource {name!r} is already defined by {path}[{seen[name]}]",
                name,
            )
        seen[name] = index
        names.append(name)
    return names
