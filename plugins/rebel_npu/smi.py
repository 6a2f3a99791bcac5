"""Talking to ``rbln-smi``: bounded calls, JSON parsing in base units, and a polled cache.

``rbln-smi -j`` prints ``{"KMD_version": ..., "devices": [...], "contexts": [...]}``; each
device has ``npu`` (index used by ``group -a``), ``name`` (card, ``RBLN-CA22``), ``device``
(``rbln0``), ``uuid``, ``status`` (``normal``), ``fw_ver``, ``pci.bus_id``, ``temperature``
(``"29C"``), ``card_power`` (``"18109794uW"``), ``memory.used``/``memory.total`` (bytes as
decimal strings), ``util`` (percent, ``"4.4"``). ``rbln-smi -g -j`` adds ``group_id`` (RSD
group, ``"0"`` = the default group). Older SDKs print some numbers as strings; both are accepted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .tools import CommandResult, run_bounded

__all__ = [
    "RblnSmi",
    "SmiDevice",
    "SmiError",
    "SmiMonitor",
    "SmiReport",
    "parse_report",
]

log = logging.getLogger("devplugin.rebel_npu.smi")

_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_NUMBER = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z%°]*)\s*$")
_POWER = {"": 1.0, "w": 1.0, "mw": 1e-3, "uw": 1e-6, "µw": 1e-6, "kw": 1e3}
_BYTES = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


class SmiError(Exception):
    """rbln-smi could not be run, failed, timed out, or printed something unusable."""


def _number(value: Any) -> tuple[float, str] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return (float(value), "") if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    m = _NUMBER.match(value)
    if not m:
        return None
    return float(m[1]), m[2].lower()


def celsius(value: Any) -> float | None:
    """``"29C"``, ``"29.5 °C"``, ``29`` -> 29.0 (None when unreadable)."""
    parsed = _number(value)
    if parsed is None or parsed[1] not in ("", "c", "°c"):
        return None
    return parsed[0]


def watts(value: Any) -> float | None:
    """``"18109794uW"`` -> 18.109794; ``"41.2W"``, ``"900mW"``, a bare number = watts."""
    parsed = _number(value)
    if parsed is None or parsed[1] not in _POWER:
        return None
    return parsed[0] * _POWER[parsed[1]]


def byte_count(value: Any) -> float | None:
    """``"16877879296"`` -> bytes; ``"72.0MiB"``/``"3.5GiB"`` are scaled."""
    parsed = _number(value)
    if parsed is None or parsed[1] not in _BYTES or parsed[0] < 0:
        return None
    return parsed[0] * _BYTES[parsed[1]]


def ratio(value: Any) -> float | None:
    """Utilisation in percent (``"4.4"``, ``"4.4%"``) -> 0.044, clamped to 0..1."""
    parsed = _number(value)
    if parsed is None or parsed[1] not in ("", "%"):
        return None
    return min(max(parsed[0] / 100.0, 0.0), 1.0)


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return str(value).strip()[:128]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


@dataclass(frozen=True)
class SmiDevice:
    """One NPU as rbln-smi reports it, in base units (None = not reported)."""

    bus_id: str
    npu: int | None = None
    card: str = ""
    name: str = ""
    uuid: str = ""
    status: str = ""
    firmware: str = ""
    group_id: str = ""
    temperature: float | None = None
    power: float | None = None
    memory_used: float | None = None
    memory_total: float | None = None
    utilization: float | None = None


@dataclass(frozen=True)
class SmiReport:
    """A parsed ``rbln-smi -j`` (or ``-g -j``) output."""

    kmd_version: str = ""
    devices: tuple[SmiDevice, ...] = ()
    by_bus: Mapping[str, SmiDevice] = field(default_factory=dict)


def _device(entry: Mapping[str, Any]) -> SmiDevice | None:
    pci = entry.get("pci")
    bus = _text(pci.get("bus_id") if isinstance(pci, Mapping) else None).lower()
    if not _BDF.match(bus):
        return None
    memory = entry.get("memory")
    memory = memory if isinstance(memory, Mapping) else {}
    return SmiDevice(
        bus_id=bus,
        npu=_int(entry.get("npu")),
        card=_text(entry.get("name")),
        name=_text(entry.get("device")),
        uuid=_text(entry.get("uuid")),
        status=_text(entry.get("status")),
        firmware=_text(entry.get("fw_ver")),
        group_id=_text(entry.get("group_id")),
        temperature=celsius(entry.get("temperature")),
        power=watts(entry.get("card_power")),
        memory_used=byte_count(memory.get("used")),
        memory_total=byte_count(memory.get("total")),
        utilization=ratio(entry.get("util")),
    )


def parse_report(text: str) -> SmiReport:
    """Parse rbln-smi JSON; entries without a valid ``pci.bus_id`` are skipped."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise SmiError(f"rbln-smi printed invalid JSON: {err}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("devices"), list):
        raise SmiError("rbln-smi JSON has no 'devices' list")
    devices = []
    for entry in data["devices"]:
        dev = _device(entry) if isinstance(entry, Mapping) else None
        if dev is not None:
            devices.append(dev)
    by_bus = MappingProxyType({d.bus_id: d for d in devices})
    return SmiReport(_text(data.get("KMD_version")), tuple(devices), by_bus)


class RblnSmi:
    """Runs one rbln-smi executable with a time limit per call."""

    def __init__(self, executable: str, timeout: float) -> None:
        self.executable = executable
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RblnSmi({self.executable!r})"

    def missing(self) -> str | None:
        """Why the executable cannot be run at all (None if it looks runnable)."""
        if not self.executable:
            return "no rbln-smi configured (rblnSmiPath and rblnSmiHostPath are empty)"
        if not os.path.isfile(self.executable):
            return f"{self.executable} does not exist"
        if not os.access(self.executable, os.X_OK):
            return f"{self.executable} is not executable"
        return None

    def run(self, args: Sequence[str], timeout: float | None = None) -> CommandResult:
        """Run ``rbln-smi args``; raise SmiError unless it exits 0 in time."""
        reason = self.missing()
        if reason:
            raise SmiError(reason)
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        if limit <= 0:
            raise SmiError(f"no time left to run {self.executable} {' '.join(args)}")
        try:
            result = run_bounded([self.executable, *args], limit)
        except OSError as err:
            raise SmiError(f"cannot run {self.executable}: {err.strerror or err}") from None
        if result.timed_out:
            raise SmiError(f"{result.describe()} after {limit:g}s")
        if not result.ok:
            raise SmiError(result.describe())
        return result

    def query(self, *, grouped: bool = False, timeout: float | None = None) -> SmiReport:
        """``rbln-smi -j`` (``-g -j`` with ``grouped``), parsed."""
        args = ["-g", "-j"] if grouped else ["-j"]
        return parse_report(self.run(args, timeout).stdout)

    def probe(self) -> str | None:
        """None when ``rbln-smi -g -j`` works, else why not."""
        try:
            self.query(grouped=True)
        except SmiError as err:
            return str(err)
        return None


class SmiMonitor:
    """The latest ``rbln-smi -j`` report, refreshed at most every ``interval`` seconds.

    Shared by the health checks and the metrics of every resource. :meth:`refresh` blocks
    (bounded by the rbln-smi timeout) and runs in a worker thread; :meth:`watch` is the
    per-resource event-loop side that refreshes and wakes the health check.
    """

    def __init__(
        self, smi: RblnSmi | None, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.smi = smi
        self.interval = interval
        self.clock = clock
        self.report: SmiReport | None = None
        self.report_at = 0.0
        self.version = 0
        self.last_success_time = 0.0
        self.polls = {"ok": 0, "error": 0}
        self.error = ""
        self._last_attempt: float | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.smi is not None

    def refresh(self, *, force: bool = False) -> bool:
        """Poll rbln-smi unless polled less than ``interval`` ago (or another call is running);
        returns True when a new report was stored. ``force`` polls now, waiting for a running
        poll to finish first."""
        if self.smi is None or not self._lock.acquire(blocking=force):
            return False
        try:
            now = self.clock()
            if (
                not force
                and self._last_attempt is not None
                and now - self._last_attempt < self.interval
            ):
                return False
            self._last_attempt = now
            try:
                report = self.smi.query()
            except SmiError as err:
                self.polls["error"] += 1
                if str(err) != self.error:
                    log.warning(
                        "rbln-smi -j failed (NPU metrics and rbln-smi health signals paused): %s",
                        err,
                    )
                self.error = str(err)
                return False
            if self.error:
                log.info("rbln-smi -j works again")
            self.error = ""
            self.polls["ok"] += 1
            self.report, self.report_at = report, self.clock()
            self.last_success_time = time.time()
            self.version += 1
            return True
        finally:
            self._lock.release()

    def fresh(self) -> SmiReport | None:
        """The report if it is recent enough to act on (three intervals plus a timeout)."""
        if self.report is None or self.smi is None:
            return None
        limit = 3 * self.interval + self.smi.timeout
        return self.report if self.clock() - self.report_at <= limit else None

    async def watch(self, wake: Callable[[], None]) -> None:
        """Refresh in a worker thread every ``interval`` and call ``wake`` on new data."""
        seen = self.version
        while True:
            await asyncio.to_thread(self.refresh)
            if self.version != seen:
                seen = self.version
                wake()
            await asyncio.sleep(self.interval)
