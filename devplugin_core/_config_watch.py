"""Watch a config file for changes, the way Kubernetes ConfigMap volumes change.

A ConfigMap volume swaps a ``..data`` symlink inside the directory, so the file itself is never
written in place: the *directory* is watched (inotify via watchdog) and every event (debounced)
is reported; the consumer re-reads and compares contents. A slow poll of the file's resolved
path and mtime covers filesystems without inotify.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from types import TracebackType

from ._aio import Signal

__all__ = ["ConfigWatch"]


class ConfigWatch:
    """Async context manager yielding once per (debounced) change of ``path``."""

    def __init__(self, path: str, *, debounce: float = 0.1, poll_interval: float = 10.0) -> None:
        self.path = os.path.abspath(path)
        self.directory = os.path.dirname(self.path)
        self.debounce = debounce
        self.poll_interval = poll_interval
        self._signal = Signal()
        self._observer: object | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _stamp(self) -> tuple[str, float, int] | None:
        try:
            real = os.path.realpath(self.path)
            st = os.stat(real)
            return real, st.st_mtime, st.st_size
        except OSError:
            return None

    async def __aenter__(self) -> ConfigWatch:
        self._loop = asyncio.get_running_loop()
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watch = self

        name = os.path.basename(self.path)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                paths = [getattr(event, "src_path", ""), getattr(event, "dest_path", "")]
                names = {os.path.basename(os.fsdecode(p)) for p in paths if p}
                # our file, or a ConfigMap volume's ..data / ..<timestamp> swap
                if not any(n == name or n.startswith("..") for n in names):
                    return
                loop = watch._loop
                if loop is not None and not loop.is_closed():
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(watch._signal.fire)

        observer = Observer()
        observer.daemon = True
        try:
            observer.schedule(Handler(), self.directory, recursive=False)
            observer.start()
            self._observer = observer
        except OSError:
            self._observer = None  # fall back to polling
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        observer = self._observer
        if observer is not None:
            observer.stop()  # type: ignore[attr-defined]
            await asyncio.to_thread(observer.join, 2.0)  # type: ignore[attr-defined]
            self._observer = None

    async def changes(self) -> AsyncIterator[None]:
        """Yield after each burst of changes has been quiet for ``debounce`` seconds."""
        seen = self._signal.generation
        stamp = self._stamp()
        while True:
            generation = await self._signal.wait(seen, timeout=self.poll_interval)
            if generation == seen and self._stamp() == stamp:
                continue  # quiet poll period
            while True:  # debounce: wait until no event for `debounce` seconds
                before = self._signal.generation
                await asyncio.sleep(self.debounce)
                if self._signal.generation == before:
                    break
            seen = self._signal.generation
            stamp = self._stamp()
            yield
