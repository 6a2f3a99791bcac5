"""Finding plugins: installed ones through the ``devplugin.plugins`` entry-point group, or a
plugin under development named by ``module:ATTR`` or ``path/to/file.py[:ATTR]`` (ATTR defaults
to ``SPEC``), so a vendor can try a plugin before packaging it (as ``kopf run file.py``).

An entry point's value is a :class:`~devplugin_core._api.PluginSpec` or a zero-argument callable
returning one. Plugin names are hyphenated (``rdma-shared``); underscores are accepted.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from ._api import PluginSpec
from ._errors import PluginNotFoundError

if TYPE_CHECKING:
    from importlib import metadata

__all__ = ["ENTRY_POINT_GROUP", "get_plugin", "installed_plugins", "normalise_name"]

log = logging.getLogger("devplugin.plugins")

ENTRY_POINT_GROUP = "devplugin.plugins"


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _as_spec(obj: Any, where: str) -> PluginSpec[Any]:
    spec = obj if isinstance(obj, PluginSpec) or not callable(obj) else obj()
    if not isinstance(spec, PluginSpec):
        raise TypeError(f"{where} is not a PluginSpec (got {type(spec).__name__})")
    return spec


def _load(ep: metadata.EntryPoint) -> PluginSpec[Any]:
    return _as_spec(ep.load(), f"entry point {ep.name} = {ep.value}")


def _entry_points() -> metadata.EntryPoints:
    from importlib import metadata  # ~10 ms of imports: only when the quick lookup fails

    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _quick_entry_point(wanted: str) -> str | None:
    """The value (``module:ATTR``) of the first ``devplugin.plugins`` entry point called
    ``wanted``, read from the ``entry_points.txt`` files on ``sys.path`` in path order, as
    importlib.metadata finds it; None when there is none (the full lookup then runs)."""
    for entry in sys.path:
        directory = entry or "."
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for dist in names:
            if not dist.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(
                    os.path.join(directory, dist, "entry_points.txt"), encoding="utf-8"
                ) as fh:
                    lines = fh.read().splitlines()
            except OSError:
                continue
            group = ""
            for line in lines:
                line = line.strip()
                if line.startswith("["):
                    group = line.strip("[]").strip()
                elif group == ENTRY_POINT_GROUP and "=" in line:
                    key, _, value = line.partition("=")
                    if normalise_name(key) == wanted:
                        return value.split("[", 1)[0].strip()
    return None


def _load_value(name: str, value: str) -> PluginSpec[Any]:
    module_name, _, attrs = value.partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return _as_spec(obj, f"entry point {name} = {value}")


def _load_reference(reference: str) -> PluginSpec[Any]:
    """``module:ATTR`` or ``file.py[:ATTR]``."""
    target, attr = reference, "SPEC"
    head, sep, tail = reference.rpartition(":")
    if sep and tail.isidentifier():
        target, attr = head, tail
    try:
        if target.endswith(".py"):
            path = os.path.abspath(target)
            if not os.path.isfile(path):
                raise PluginNotFoundError(f"plugin file {target!r} does not exist")
            name = f"devplugin_local_{os.path.splitext(os.path.basename(path))[0]}"
            loader = importlib.util.spec_from_file_location(name, path)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            sys.path.insert(0, os.path.dirname(path))  # the file's own helper modules
            loader.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # a module of the project being developed
            module = importlib.import_module(target)
    except ImportError as err:
        raise PluginNotFoundError(f"cannot import plugin {reference!r}: {err}") from None
    if not hasattr(module, attr):
        raise PluginNotFoundError(f"plugin {reference!r}: {target} has no attribute {attr!r}")
    return _as_spec(getattr(module, attr), f"{target}:{attr}")


def installed_plugins() -> dict[str, PluginSpec[Any]]:
    """Every installed plugin by name; broken entry points are logged and skipped."""
    found: dict[str, PluginSpec[Any]] = {}
    for ep in _entry_points():
        try:
            spec = _load(ep)
        except Exception as err:
            log.warning("cannot load plugin entry point %s (%s): %s", ep.name, ep.value, err)
            continue
        found[normalise_name(spec.name)] = spec
    return dict(sorted(found.items()))


def get_plugin(name: str) -> PluginSpec[Any]:
    """The installed plugin called ``name``, or the one ``module:ATTR`` / ``file.py[:ATTR]``
    names; raises PluginNotFoundError listing the installed ones."""
    if ":" in name or name.endswith(".py"):
        return _load_reference(name)
    wanted = normalise_name(name)
    value = _quick_entry_point(wanted)
    if value is not None:
        try:
            return _load_value(name, value)  # import only the plugin asked for (start-up)
        except Exception as err:
            log.warning("cannot load plugin entry point %s (%s): %s", name, value, err)
    for ep in _entry_points():
        if normalise_name(ep.name) == wanted:  # import only the plugin asked for (start-up)
            try:
                return _load(ep)
            except Exception as err:
                log.warning("cannot load plugin entry point %s (%s): %s", ep.name, ep.value, err)
    plugins = installed_plugins()
    if wanted in plugins:
        return plugins[wanted]
    known = ", ".join(plugins) or "none"
    raise PluginNotFoundError(f"no plugin named {name!r} is installed (installed: {known})")
