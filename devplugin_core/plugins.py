"""Finding installed plugins through the ``devplugin.plugins`` entry-point group.

An entry point's value is a :class:`~devplugin_core.api.PluginSpec` or a zero-argument callable
returning one. Plugin names are hyphenated (``rdma-shared``); underscores are accepted.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

from .api import PluginSpec
from .errors import PluginNotFoundError

__all__ = ["ENTRY_POINT_GROUP", "get_plugin", "installed_plugins", "normalise_name"]

log = logging.getLogger("devplugin.plugins")

ENTRY_POINT_GROUP = "devplugin.plugins"


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _load(ep: metadata.EntryPoint) -> PluginSpec[Any]:
    obj = ep.load()
    spec = obj if isinstance(obj, PluginSpec) else obj()
    if not isinstance(spec, PluginSpec):
        raise TypeError(f"entry point {ep.name} = {ep.value} is not a PluginSpec")
    return spec


def installed_plugins() -> dict[str, PluginSpec[Any]]:
    """Every installed plugin by name; broken entry points are logged and skipped."""
    found: dict[str, PluginSpec[Any]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = _load(ep)
        except Exception as err:
            log.warning("cannot load plugin entry point %s (%s): %s", ep.name, ep.value, err)
            continue
        found[normalise_name(spec.name)] = spec
    return dict(sorted(found.items()))


def get_plugin(name: str) -> PluginSpec[Any]:
    """The installed plugin called ``name``; raises PluginNotFoundError listing the others."""
    wanted = normalise_name(name)
    plugins = installed_plugins()
    if wanted in plugins:
        return plugins[wanted]
    known = ", ".join(plugins) or "none"
    raise PluginNotFoundError(f"no plugin named {name!r} is installed (installed: {known})")
