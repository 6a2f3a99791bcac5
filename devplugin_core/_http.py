"""A tiny asyncio HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

It runs on the event loop and binds exactly the address it is given; it can serve TLS from a
cert/key pair. A scrape runs the collectors (plugins read sysfs there) in one worker thread with
a deadline of :data:`SCRAPE_TIMEOUT` seconds: a slow collector makes that scrape answer 503,
never stalls the loop (ListAndWatch, Allocate), and scrapes meanwhile share the one running
collection instead of piling up threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ._aio import bounded

log = logging.getLogger("devplugin.http")

__all__ = ["HttpServer", "parse_address", "serve_http"]

_MAX_REQUEST = 8192
SCRAPE_TIMEOUT = 3.0


def parse_address(address: str) -> tuple[str, int]:
    """``":9461"`` -> ("", 9461) (all interfaces); ``"10.0.0.5:9461"``; ``"[::1]:9461"``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address must be HOST:PORT or :PORT, got {address!r}")
    host = host.strip("[]")
    return host, int(port)


class HttpServer:
    """Serves the registry at ``/metrics`` and the probes ``/healthz`` and ``/readyz``."""

    def __init__(
        self,
        address: str,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
        healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok"),
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        self.host, self.requested_port = parse_address(address)
        self.registry = registry
        self.ready = ready
        self.healthy = healthy
        self._collector = concurrent.futures.ThreadPoolExecutor(1, "devplugin-scrape")
        self._scrape: asyncio.Future[bytes] | None = None
        self.ssl: ssl.SSLContext | None = None
        self._tls_files = (certfile or "", keyfile or "")
        self._tls_stamp: tuple[float, float] = (0.0, 0.0)
        if certfile or keyfile:
            if not (certfile and keyfile):
                raise ValueError("--metrics-tls-cert and --metrics-tls-key must be given together")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.ssl = context
            self.reload_tls()
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def _stamp(self) -> tuple[float, float]:
        return tuple(os.stat(f).st_mtime for f in self._tls_files)  # type: ignore[return-value]

    def reload_tls(self, *, only_if_changed: bool = False) -> bool:
        """(Re)load the certificate and key; new connections use them. Returns True if loaded.

        A broken pair on a reload is logged and the previous certificate keeps serving.
        """
        if self.ssl is None:
            return False
        certfile, keyfile = self._tls_files
        try:
            stamp = self._stamp()
            if only_if_changed and stamp == self._tls_stamp:
                return False
            self.ssl.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as err:
            if self._tls_stamp == (0.0, 0.0):
                raise ValueError(f"cannot load metrics TLS certificate {certfile}: {err}") from err
            log.error(
                "cannot reload metrics TLS certificate %s (keeping the old one): %s", certfile, err
            )
            return False
        if self._tls_stamp != (0.0, 0.0):
            log.info("reloaded metrics TLS certificate %s", certfile)
        self._tls_stamp = stamp
        return True

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host or None, self.requested_port, ssl=self.ssl, reuse_address=True
        )
        sockets: list[Any] = list(self._server.sockets or [])
        self.port = sockets[0].getsockname()[1] if sockets else self.requested_port
        scheme = "https" if self.ssl else "http"
        shown = self.host or "0.0.0.0"
        log.info("serving metrics and probes on %s://%s:%d", scheme, shown, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await bounded(self._server.wait_closed(), 2)
            self._server = None
        self._collector.shutdown(wait=False, cancel_futures=True)

    async def watch_tls(self) -> None:
        """Pick up rotated certificates (cert-manager, kubelet-style rotation) within a minute."""
        while True:
            await asyncio.sleep(60)
            self.reload_tls(only_if_changed=True)

    async def scrape(self) -> tuple[int, bytes]:
        """(status, body) of one ``/metrics`` request (see the module docstring)."""
        if self._scrape is None or self._scrape.done():
            loop = asyncio.get_running_loop()
            self._scrape = loop.run_in_executor(self._collector, generate_latest, self.registry)
        try:
            return 200, await bounded(asyncio.shield(self._scrape), SCRAPE_TIMEOUT)
        except TimeoutError:
            log.warning("metrics collection still running after %gs; answering 503", SCRAPE_TIMEOUT)
            return 503, f"metrics collection did not finish within {SCRAPE_TIMEOUT:g}s\n".encode()
        except Exception as err:
            log.exception("metrics collection failed")
            return 503, f"metrics collection failed: {err}\n".encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _MAX_REQUEST:
                raise ValueError("request too large")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif path == "/metrics":
                status, body = await self.scrape()
                ctype = CONTENT_TYPE_LATEST if status == 200 else "text/plain"
            elif path == "/healthz":
                ok, detail = self.healthy()
                status, ctype, body = (200 if ok else 503), "text/plain", (detail + "\n").encode()
            elif path == "/readyz":
                ok, detail = self.ready()
                status, ctype, body = (200 if ok else 503), "text/plain", (detail + "\n").encode()
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {
                200: "OK",
                404: "Not Found",
                405: "Method Not Allowed",
                503: "Service Unavailable",
            }[status]
            header = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(header + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
            ValueError,
            ssl.SSLError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def serve_http(
    address: str | None,
    default_port: int | None,
    registry: CollectorRegistry,
    ready: Callable[[], tuple[bool, str]],
    healthy: Callable[[], tuple[bool, str]],
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> HttpServer | None:
    """Start the server on ``address`` (None: the plugin's default port; "": off). Raises
    DevicePluginError naming the address when it cannot serve."""
    from ._errors import DevicePluginError

    if address is None:
        address = f":{default_port}" if default_port else ""
    if not address:
        return None
    try:
        server = HttpServer(address, registry, ready, healthy, certfile=certfile, keyfile=keyfile)
        await server.start()
    except ValueError as err:
        raise DevicePluginError(f"metrics endpoint: {err}") from None
    except OSError as err:
        raise DevicePluginError(
            f"cannot serve metrics on {address!r}: {err.strerror or err}"
        ) from None
    return server
