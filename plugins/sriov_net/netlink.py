"""Link state from rtnetlink events (pyroute2), for PF health without polling.

One :class:`LinkMonitor` per plugin build serves every pool. It runs a dedicated thread that
joins ``RTMGRP_LINK``, dumps the links once and then applies ``RTM_NEWLINK``/``RTM_DELLINK``
events, keeping ``ifindex -> (name, up)``; subscribers (the pools' health watchers) are woken on
the event loop whenever a link's usability changes. The thread owns a network namespace when one
is given (``setns`` affects only the calling thread, so nothing forks — forking after gRPC
started is unsafe). Any failure ends the thread with a warning; :meth:`LinkMonitor.state` then
answers ``None`` and health falls back to sysfs polling.

pyroute2 is imported here only, inside the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import select
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["LinkMonitor", "enter_netns"]

log = logging.getLogger("devplugin.sriov_net.netlink")

CLONE_NEWNET = 0x40000000
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def enter_netns(netns: str) -> None:
    """Move the calling thread into ``netns`` (a name under /var/run/netns or a path)."""
    path = netns if netns.startswith("/") else f"/var/run/netns/{netns}"
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns = getattr(os, "setns", None)
        if setns is not None:  # Python >= 3.12
            setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns({path}): {os.strerror(code)}")
    finally:
        os.close(fd)


def link_usable(operstate: str, flags: int) -> bool:
    """Operationally up, or ``UNKNOWN`` (drivers without operstate) with carrier and admin up."""
    if operstate == "UP":
        return True
    return operstate == "UNKNOWN" and bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)


class _Session:
    """One netlink thread's view: its links, whether the dump completed, how to stop it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.links: dict[int, tuple[str, bool]] = {}
        self.synced = False
        stop_r, stop_w = os.pipe()
        self.stop_r, self.stop_w = stop_r, stop_w

    def state(self, name: str) -> bool | None:
        with self.lock:
            if not self.synced:
                return None
            for link_name, up in self.links.values():
                if link_name == name:
                    return up
        return None

    def reset(self) -> None:
        with self.lock:
            self.links.clear()
            self.synced = False

    def apply(self, messages: Iterable[Any], *, dump: bool = False) -> bool:
        """Apply link messages; True when a link's usability (or existence) changed."""
        changed = False
        with self.lock:
            for msg in messages:
                event = msg.get("event")
                if event == "NLMSG_DONE" and dump:
                    self.synced = changed = True
                    continue
                index = msg.get("index")
                if event not in ("RTM_NEWLINK", "RTM_DELLINK") or index is None:
                    continue
                old = self.links.get(index)
                if event == "RTM_DELLINK":
                    changed = self.links.pop(index, None) is not None or changed
                    continue
                name = msg.get_attr("IFLA_IFNAME") or (old[0] if old else "")
                new = (
                    name,
                    link_usable(msg.get_attr("IFLA_OPERSTATE") or "", msg.get("flags") or 0),
                )
                if new != old:
                    self.links[index] = new
                    changed = True
        return changed


class LinkMonitor:
    """Latest link usability by name, kept current by a netlink thread while anyone listens."""

    def __init__(self, netns: str = "") -> None:
        self.netns = netns
        self.error = ""
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self._subscribers: list[Callable[[], None]] = []

    # -- queries (any thread) ------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True once the initial dump arrived and while events are being received."""
        session = self._session
        return session is not None and session.synced

    def state(self, name: str) -> bool | None:
        """Whether link ``name`` is usable; ``None`` when netlink does not know it."""
        session = self._session
        return session.state(name) if session is not None else None

    # -- subscription (event loop) -------------------------------------------------------------
    async def subscribe(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` on every relevant link change until cancelled."""
        loop = asyncio.get_running_loop()
        self._subscribers.append(wake)
        if self._thread is None or not self._thread.is_alive():
            self._start(loop)
        try:
            await asyncio.Event().wait()
        finally:
            self._subscribers.remove(wake)
            if not self._subscribers:
                self._stop()

    def _notify(self) -> None:
        for wake in list(self._subscribers):
            wake()

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        session = _Session()
        self._session = session
        self.error = ""
        self._thread = threading.Thread(
            target=self._run, args=(loop, session), name="sriov-net-netlink", daemon=True
        )
        self._thread.start()

    def _stop(self) -> None:
        session, self._session, self._thread = self._session, None, None
        if session is not None:
            with contextlib.suppress(OSError):
                os.write(session.stop_w, b"x")
            os.close(session.stop_w)

    # -- the thread ----------------------------------------------------------------------------
    def _open(self) -> Any:
        from pyroute2 import IPRSocket
        from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_GETLINK, RTMGRP_LINK
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        sock = IPRSocket(groups=RTMGRP_LINK)
        sock.bind()
        sock.put(ifinfmsg(), msg_type=RTM_GETLINK, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
        return sock

    def _run(self, loop: asyncio.AbstractEventLoop, session: _Session) -> None:
        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self._notify)

        sock: Any = None
        try:
            if self.netns:
                enter_netns(self.netns)
            sock, dumping = self._open(), True
            while True:
                readable, _, _ = select.select([sock.socket, session.stop_r], [], [])
                if session.stop_r in readable:
                    break
                try:
                    messages = sock.get()
                except OSError as err:
                    if err.errno != errno.ENOBUFS:
                        raise
                    log.warning("netlink receive buffer overflowed; re-reading every link")
                    sock.close()
                    session.reset()
                    sock, dumping = self._open(), True
                    continue
                if session.apply(messages, dump=dumping):
                    notify()
                dumping = dumping and not session.synced
        except Exception as err:
            self.error = str(err)
            where = f" in netns {self.netns}" if self.netns else ""
            log.warning(
                "netlink link monitor%s stopped (%s); PF links are polled from sysfs", where, err
            )
        finally:
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.close()
            os.close(session.stop_r)
            session.reset()
            notify()
