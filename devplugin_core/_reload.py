"""The plugin's config: loaded once, reloaded on file change or SIGHUP.

A reload that fails to read, decode, build or pass preflight is logged and counted, and the
running config keeps serving (``devplugin_config_valid`` turns 0 until a good file lands).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._api import Plugin, PluginContext, PluginSpec
from ._config import ConfigDocument, decode, encode, load_document
from ._errors import ConfigError, DevicePluginError
from ._metrics import Metrics

log = logging.getLogger("devplugin.config")

__all__ = ["ConfigSource", "LoadedConfig", "load_config"]

C = TypeVar("C")


@dataclass(frozen=True)
class LoadedConfig(Generic[C]):
    """A decoded config with where it came from and the warnings met."""

    config: C
    source: str
    digest: str
    warnings: tuple[str, ...]


def load_config(spec: PluginSpec[C], path: str | None) -> LoadedConfig[C]:
    """Read and decode the plugin's config; raises :class:`ConfigError` naming the file."""
    explicit = path is not None
    path = path or spec.default_config_file
    document: ConfigDocument | None = None
    if path and (explicit or os.path.exists(path) or not spec.config_optional):
        document = load_document(path)
    if document is None:
        data: Any = {}
        source, digest = "<built-in defaults>", ""
    else:
        data, source, digest = document.data, document.path, document.digest
    try:
        result = decode(spec.config_model, data)
    except ConfigError as err:
        raise err.with_source(source) from None
    return LoadedConfig(result.value, source, digest, tuple(result.warnings))


class ConfigSource(Generic[C]):
    """Loads ``spec``'s config file and builds the :class:`Plugin` from it."""

    def __init__(
        self, spec: PluginSpec[C], path: str | None, context: PluginContext, metrics: Metrics
    ) -> None:
        self.spec = spec
        self.path = path
        self.context = context
        self.metrics = metrics
        self.loaded: LoadedConfig[C] | None = None
        self._attempted_digest = ""
        self._lock = asyncio.Lock()

    def load(self) -> tuple[LoadedConfig[C], Plugin]:
        """Load, decode and build (no I/O beyond reading the file)."""
        loaded = load_config(self.spec, self.path)
        try:
            plugin = self.spec.make(loaded.config, self.context)
        except ConfigError as err:
            raise err.with_source(loaded.source) if not err.source else err from None
        return loaded, plugin

    async def _preflight(self, loaded: LoadedConfig[C]) -> None:
        if self.spec.preflight is not None:
            await asyncio.to_thread(self.spec.preflight, loaded.config, self.context)

    async def first(self) -> tuple[LoadedConfig[C], Plugin]:
        """The config to start with (errors propagate: exit 2)."""
        loaded, plugin = self.load()
        self._warn(loaded)
        await self._preflight(loaded)
        self._accepted(loaded)
        return loaded, plugin

    async def reload(self, reason: str) -> tuple[LoadedConfig[C], Plugin] | None:
        """A new config and plugin when the file changed and is valid, else None."""
        async with self._lock:
            if self.loaded is not None and self.loaded.digest and not self._file_changed():
                return None
            try:
                loaded, plugin = self.load()
                await self._preflight(loaded)
            except DevicePluginError as err:
                self.metrics.config_reloads.labels("failed").inc()
                self.metrics.config_valid.set(0)
                log.error(
                    "config reload (%s) rejected, keeping the running config: %s", reason, err
                )
                return None
            self.metrics.config_valid.set(1)
            if self.loaded is not None and loaded.digest == self.loaded.digest:
                return None
            self._warn(loaded)
            self._accepted(loaded, reason)
            return loaded, plugin

    def _warn(self, loaded: LoadedConfig[C]) -> None:
        for warning in loaded.warnings:
            log.warning("config %s: %s", loaded.source, warning)

    def _accepted(self, loaded: LoadedConfig[C], reason: str = "") -> None:
        self.loaded = loaded
        self.metrics.config_reloads.labels("ok").inc()
        self.metrics.config_last_success.set(time.time())
        self.metrics.config_valid.set(1)
        effective = json.dumps(encode(loaded.config), sort_keys=True)
        if reason:
            log.info("config reloaded (%s); effective config: %s", reason, effective)
        else:
            log.info("effective config: %s", effective)

    def _file_changed(self) -> bool:
        """Cheap check before a reload: did the file's bytes change since the last load?"""
        assert self.loaded is not None
        try:
            with open(self.loaded.source, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return True  # let the full load report the problem
        last = self._attempted_digest or self.loaded.digest
        self._attempted_digest = digest
        return digest != last

    async def watch(self, on_change: Any) -> None:
        """Call ``await on_change()`` whenever the loaded file changes (until cancelled)."""
        from ._config_watch import ConfigWatch

        assert self.loaded is not None
        async with ConfigWatch(self.loaded.source) as watch:
            async for _ in watch.changes():
                await on_change()
