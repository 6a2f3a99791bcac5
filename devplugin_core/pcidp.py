"""Conventions shared with sriov-network-device-plugin and its forks (Rebellions' NPU plugin).

Both upstream plugins hand containers the same environment: ``PCIDEVICE_<PREFIX>_<NAME>`` with
the comma-joined device IDs and ``PCIDEVICE_<PREFIX>_<NAME>_INFO`` with a JSON map
``{id: {provider: {key: value}}}`` encoded like Go's ``encoding/json`` (keys sorted at every
level, no spaces). Multus, the SR-IOV CNIs and workloads parse exactly that, so the helpers here
reproduce it byte for byte. ``additionalInfo`` (``"*"`` then a per-PCI-address override) ends
up under the ``extra`` provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

__all__ = [
    "additional_info",
    "go_json",
    "pcidevice_env",
    "pcidevice_env_name",
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


def additional_info(table: Mapping[str, Mapping[str, str]], address: str) -> dict[str, str]:
    """``additionalInfo`` for one device: the ``"*"`` entry, overridden per PCI address."""
    merged = dict(table.get("*", {}))
    merged.update(table.get(address, {}))
    return merged
