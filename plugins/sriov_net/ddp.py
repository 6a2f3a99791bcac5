"""DDP profiles for ``ddpProfiles`` selectors: the package an Intel E810/700 NIC runs.

Upstream (``pciNetDevice.GetDDPProfiles``, ``utils/devlink.go``, ``utils/ddp.go``) asks devlink
for ``fw.app.name`` (``devlink dev info pci/<address>``) and falls back to
``ddptool -l -a -j -s <address>``. We keep that order, with three changes:

* devlink is read with one ``DEVLINK_CMD_INFO_GET`` dump per scan (generic netlink through
  pyroute2, in a worker thread bounded to a few seconds) instead of two requests per device,
  and with the arguments in the right order (upstream's HEAD swaps bus and device, so its
  devlink path is never taken);
* ``ddptool`` (in no Debian package and not in our image) is run only when it is on the PATH,
  bounded too; after a timeout it is not run again in that scan;
* a function without a PF (a PF pooled whole) is asked about itself (upstream asks about an
  empty PF address and so only ever tries ddptool for it).

The reads sit behind :class:`DdpSource` (two methods) so that tests can fake them; one
:class:`DdpProfiles` per scan caches what was read. A device whose profile cannot be read never
matches a ``ddpProfiles`` selector, and :meth:`DdpProfiles.lookup` says why.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .netlink import enter_netns

__all__ = [
    "DDPTOOL_NO_PROFILE",
    "DdpError",
    "DdpProfiles",
    "DdpRef",
    "DdpSource",
    "DdpTimeout",
    "SystemDdp",
    "parse_devlink_info",
]

log = logging.getLogger("devplugin.sriov_net.ddp")

FW_APP_NAME = "fw.app.name"
DDPTOOL_NO_PROFILE = 8  # upstream's ddpNoDDPProfile: ddptool's exit code when no package runs
DEFAULT_TIMEOUT = 3.0
_VERSION_KINDS = ("RUNNING", "STORED", "FIXED")  # where fw.app.name may be; running wins


class DdpError(Exception):
    """A DDP source could not answer (the message says why, for ``devplugin discover``)."""


class DdpTimeout(DdpError):
    """A DDP source did not answer in time."""


class DdpSource(Protocol):
    """Where DDP package names come from."""

    def devlink_app_names(self) -> Mapping[str, str]:
        """PCI address -> ``fw.app.name`` of every devlink instance that reports one.
        Raises DdpError when devlink cannot be asked."""
        ...

    def ddptool(self, address: str) -> str | None:
        """The package name ddptool reports (``""``: none loaded); ``None``: ddptool is not on
        the PATH. Raises DdpError when it fails, DdpTimeout when it times out (then it is not
        asked again in that scan)."""
        ...


def parse_devlink_info(messages: Iterable[Any]) -> dict[str, str]:
    """``fw.app.name`` per ``pci`` device from ``DEVLINK_CMD_INFO_GET`` replies (pyroute2
    ``devlinkcmd`` messages); a running version wins over stored and fixed ones."""
    names: dict[str, str] = {}
    for msg in messages:
        if msg.get_attr("DEVLINK_ATTR_BUS_NAME") != "pci":
            continue
        device = msg.get_attr("DEVLINK_ATTR_DEV_NAME")
        for kind in _VERSION_KINDS:
            for version in msg.get_attrs(f"DEVLINK_ATTR_INFO_VERSION_{kind}"):
                if version.get_attr("DEVLINK_ATTR_INFO_VERSION_NAME") == FW_APP_NAME:
                    value = version.get_attr("DEVLINK_ATTR_INFO_VERSION_VALUE")
                    if device and value and device not in names:
                        names[device] = value
    return names


def _devlink_socket() -> Any:
    from pyroute2.netlink.devlink import DevlinkSocket

    return DevlinkSocket()


def _dump_info(socket_factory: Callable[[], Any]) -> list[Any]:
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
    from pyroute2.netlink.devlink import DEVLINK_NAMES, devlinkcmd

    sock = socket_factory()
    try:
        sock.bind()
        msg = devlinkcmd()
        msg["cmd"] = DEVLINK_NAMES["DEVLINK_CMD_INFO_GET"]
        msg["version"] = 1
        return list(sock.nlm_request(msg, msg_type=sock.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP))
    finally:
        sock.close()


class SystemDdp:
    """The real sources: devlink over generic netlink, then ``ddptool`` if installed.

    ``netns``: network namespace whose devlink instances to dump (the plugin's own by
    default; devlink instances of PCI devices live in the host's). Each devlink dump runs in a
    fresh daemon thread bounded by ``timeout``; while one that timed out is still stuck, no new
    one starts.
    """

    def __init__(
        self,
        netns: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        socket_factory: Callable[[], Any] = _devlink_socket,
        ddptool_path: Callable[[], str | None] = lambda: shutil.which("ddptool"),
    ) -> None:
        self.netns = netns
        self.timeout = timeout
        self._socket_factory = socket_factory
        self._ddptool_path = ddptool_path
        self._stuck: threading.Thread | None = None

    def devlink_app_names(self) -> Mapping[str, str]:
        if self._stuck is not None and self._stuck.is_alive():
            raise DdpError(
                f"an earlier devlink query has not answered within {self.timeout:g}s yet"
            )
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                if self.netns:
                    enter_netns(self.netns)
                box["messages"] = _dump_info(self._socket_factory)
            except BaseException as err:  # reported to the caller
                box["error"] = err
            finally:
                done.set()

        thread = threading.Thread(target=work, name="sriov-net-devlink", daemon=True)
        thread.start()
        if not done.wait(self.timeout):
            self._stuck = thread
            raise DdpTimeout(f"devlink did not answer within {self.timeout:g}s")
        err = box.get("error")
        if err is not None:
            raise DdpError(f"devlink unavailable: {_describe(err)}")
        return parse_devlink_info(box["messages"])

    def ddptool(self, address: str) -> str | None:
        path = self._ddptool_path()
        if path is None:
            return None
        argv = [path, "-l", "-a", "-j", "-s", address]
        try:
            proc = subprocess.run(  # a fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DdpTimeout(f"ddptool did not answer within {self.timeout:g}s") from None
        except OSError as err:
            raise DdpError(f"cannot run {path}: {err}") from None
        if proc.returncode == DDPTOOL_NO_PROFILE:
            return ""
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
            tail = f": {detail.splitlines()[-1][:200]}" if detail else ""
            raise DdpError(f"ddptool exited with {proc.returncode}{tail}")
        return _ddptool_name(proc.stdout)


def _ddptool_name(stdout: bytes) -> str:
    """``DDPInventory.DDPpackage.name`` of ``ddptool -j`` output (upstream getDDPNameFromStdout)."""
    try:
        document = json.loads(stdout)
        name = document["DDPInventory"]["DDPpackage"]["name"]
    except (ValueError, KeyError, TypeError) as err:
        raise DdpError(f"cannot parse ddptool output: {err}") from None
    if not isinstance(name, str):
        raise DdpError("cannot parse ddptool output: the package name is not a string")
    return name


def _describe(err: BaseException) -> str:
    code = getattr(err, "code", None)
    if code == 2:  # ENOENT from the generic netlink family lookup
        return "the kernel has no devlink generic netlink family"
    return str(err) or type(err).__name__


@dataclass(frozen=True)
class Lookup:
    """What was found for one device: the profile (``None``: none readable) and why not."""

    profile: str | None
    why: str = ""


class DdpProfiles:
    """One scan's DDP reads: the devlink dump at most once, ddptool at most once per device."""

    def __init__(self, source: DdpSource) -> None:
        self.source = source
        self._devlink: Mapping[str, str] | None = None
        self._devlink_error = ""
        self._tool: dict[str, Lookup] = {}
        self._tool_broken = ""
        self._results: dict[tuple[str, str], Lookup] = {}

    def _app_names(self) -> Mapping[str, str]:
        if self._devlink is None:
            try:
                self._devlink = self.source.devlink_app_names()
            except DdpError as err:
                self._devlink, self._devlink_error = {}, str(err)
                log.info("DDP profiles: %s", err)
        return self._devlink

    def _ddptool(self, address: str) -> Lookup:
        if self._tool_broken:
            return Lookup(None, self._tool_broken)
        if address not in self._tool:
            try:
                name = self.source.ddptool(address)
            except DdpError as err:
                if isinstance(err, DdpTimeout):
                    self._tool_broken = f"{err} (not run again in this scan)"
                self._tool[address] = Lookup(None, str(err))
            else:
                if name is None:
                    self._tool[address] = Lookup(None, "ddptool is not on the PATH")
                elif not name:
                    self._tool[address] = Lookup(None, "ddptool reports no DDP package")
                else:
                    self._tool[address] = Lookup(name)
        return self._tool[address]

    def lookup(self, address: str, pf: str = "") -> Lookup:
        """The profile of function ``address`` (a VF of ``pf``, or a function without PF)."""
        key = (address, pf)
        if key not in self._results:
            self._results[key] = self._read(address, pf or address)
        return self._results[key]

    def _read(self, address: str, anchor: str) -> Lookup:
        names = self._app_names()
        if anchor in names:  # upstream: IsDevlinkDDPSupportedByDevice(PF), then VF, then PF
            return Lookup(names.get(address) or names[anchor])
        devlink = self._devlink_error or f"devlink info of pci/{anchor} has no {FW_APP_NAME}"
        tool = self._ddptool(address)
        if tool.profile:
            return tool
        return Lookup(None, f"{devlink}; {tool.why}")

    def cached(self, address: str, pf: str = "") -> Lookup | None:
        """What :meth:`lookup` found, if it was asked (for display only)."""
        return self._results.get((address, pf))

    def ref(self, address: str, pf: str = "") -> DdpRef:
        return DdpRef(self, address, pf)


@dataclass(frozen=True, eq=False)
class DdpRef:
    """A device's DDP profile, read only when a selector asks (``ddpProfiles`` comes after
    every cheap selector, as upstream's filter order)."""

    profiles: DdpProfiles
    address: str
    pf: str = ""

    def get(self) -> Lookup:
        return self.profiles.lookup(self.address, self.pf)

    def peek(self) -> Lookup | None:
        return self.profiles.cached(self.address, self.pf)
