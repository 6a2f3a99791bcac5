"""Conventions shared with sriov-network-device-plugin and its forks (Rebellions' NPU plugin).

**Config.** Both read ``{"resourceList": [...]}``: :class:`ResourceEntry` holds the per-pool
keys every entry has (``resourceName`` with upstream's name rule, ``resourcePrefix``,
``deviceType``, ``excludeTopology``, ``additionalInfo``); plugins subclass it with their
selectors. :func:`resource_list` decodes the list choosing the entry model by ``deviceType``;
:func:`full_names` applies the duplicate and kubelet-name checks (which need the default
prefix). Value decoders keep upstream's exact matching but warn about values that can never
match (``0x15b3``, short PCI addresses): :func:`hex_ids`, :func:`pci_addresses`, :func:`strings`.

**Environment.** Both hand containers the same environment: ``PCIDEVICE_<PREFIX>_<NAME>`` with
the comma-joined device IDs and ``PCIDEVICE_<PREFIX>_<NAME>_INFO`` with a JSON map
``{id: {provider: {key: value}}}`` encoded like Go's ``encoding/json`` (keys sorted at every
level, no spaces). Multus, the SR-IOV CNIs and workloads parse exactly that, so the helpers here
reproduce it byte for byte. ``additionalInfo`` (``"*"`` then a per-PCI-address override) ends
up under the ``extra`` provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ._config import DecodeContext, option
from ._errors import ConfigError
from ._model import extended_resource_name_error
from ._pci import PCI_ADDRESS
from ._selectors import hex_id_warnings

__all__ = [
    "RESOURCE_NAME",
    "AcceleratorSelectors",
    "ResourceEntry",
    "additional_info",
    "additional_info_table",
    "full_names",
    "go_json",
    "hex_ids",
    "pci_addresses",
    "pcidevice_env",
    "pcidevice_env_name",
    "resource_list",
    "strings",
]

InfoMap = Mapping[str, Mapping[str, Mapping[str, str]]]


def go_json(value: object) -> str:
    """JSON as Go's ``encoding/json`` writes maps: sorted keys, compact, HTML-safe escapes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def pcidevice_env_name(prefix: str, resource_name: str, *, kind: str = "PCIDEVICE") -> str:
    """``PCIDEVICE_INTEL_COM_SRIOV_NET``: upper case, only ``.`` and ``/`` become ``_``
    (a ``-`` stays, as upstream — not a valid shell identifier, but what consumers read)."""
    raw = f"{kind}_{prefix}_{resource_name}"
    return raw.replace(".", "_").replace("/", "_").upper()


def pcidevice_env(
    prefix: str,
    resource_name: str,
    ids: Iterable[str],
    info: InfoMap,
    *,
    extra_kinds: Iterable[str] = (),
) -> dict[str, str]:
    """The upstream env vars for one allocation: the ID list, its ``_INFO`` map, and the same ID
    list under each of ``extra_kinds`` (e.g. ``PCI_RESOURCE`` for KubeVirt)."""
    ids = list(ids)
    name = pcidevice_env_name(prefix, resource_name)
    env = {name: ",".join(ids), f"{name}_INFO": go_json({i: info.get(i, {}) for i in ids})}
    for kind in extra_kinds:
        env[pcidevice_env_name(prefix, resource_name, kind=kind)] = ",".join(ids)
    return env


def additional_info(table: Mapping[str, Mapping[str, str]] | None, address: str) -> dict[str, str]:
    """``additionalInfo`` for one device: the ``"*"`` entry, overridden per PCI address."""
    if not table:
        return {}
    merged = dict(table.get("*", {}))
    merged.update(table.get(address, {}))
    return merged


#: Upstream's ``resourceName`` rule (``utils.ValidResourceName``); ``-`` allowed since 2023.
RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

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


def additional_info_table(
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
        decoder=additional_info_table,
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

    #: The prefix used when neither ``resourcePrefix`` nor a caller-supplied default is set.
    DEFAULT_PREFIX: ClassVar[str] = ""

    def prefix(self, default: str = "") -> str:
        """The effective resource prefix of this pool."""
        return self.resource_prefix or default or self.DEFAULT_PREFIX

    def full_name(self, default_prefix: str = "") -> str:
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


def _naming(err: ConfigError, item: Mapping[str, Any]) -> ConfigError:
    """``err`` with the entry's ``resourceName`` appended, when it has a usable one."""
    name = _key(item, "resourceName")
    if not isinstance(name, str) or not name:
        return err
    return ConfigError(
        err.field,
        f"{err.message} (resource {name!r})",
        err.value,
        source=err.source,
        show_value=err.show_value,
    )


def resource_list(
    models: Mapping[str, type[ResourceEntry]],
    *,
    unsupported: Mapping[str, str] | None = None,
    default_type: str = "netDevice",
    allow_empty: bool = False,
) -> Decoder:
    """Decoder for ``resourceList``: a non-empty list whose entries are decoded with the model
    of their ``deviceType`` (absent or empty = ``default_type``). Types in ``unsupported`` fail
    with their reason; other unknown types fail listing the supported ones. ``allow_empty``: an
    absent, null or empty list is valid (the plugin has built-in defaults)."""
    blocked = dict(unsupported or {})

    def decode_entry(item: dict[str, Any], where: str, ctx: DecodeContext) -> ResourceEntry:
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
        return ctx.decode_model(model, item, where)

    def decode_list(value: Any, path: str, ctx: DecodeContext) -> tuple[ResourceEntry, ...]:
        if value is None and allow_empty:
            return ()
        if value is None:
            raise ConfigError(path, "is required", show_value=False)
        if not isinstance(value, list):
            raise ConfigError(path, "must be a list of resource objects", value)
        if not value and not allow_empty:
            raise ConfigError(path, "needs at least one resource (nothing to serve)")
        out = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(where, "must be an object", item)
            try:
                out.append(decode_entry(item, where, ctx))
            except ConfigError as err:
                raise _naming(err, item) from None
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
