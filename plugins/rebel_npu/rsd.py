"""RSD groups: every allocation gets its own group device, mapped to ``/dev/rsd0`` inside.

An RSD ("Rebellions Scalable Design") group is the unit the runtime drives NPUs through; group 0
(host ``/dev/rsd0``) holds every NPU not in another group, so handing it out would let a pod
reach NPUs it was not allocated. Per allocation, under a lock shared by threads and processes
and within ``rsdTimeout``:

1. ``rbln-smi -g -j`` -> NPU index and current group of every PCI address;
2. a non-default group holding exactly the requested NPUs (left by a deleted pod) is reused;
   any other non-default group touching them is destroyed (``rbln-smi group -d``);
3. ``rbln-smi group -c K -a <npu,...>`` with the lowest free K >= 1, then ``-g -j`` again to
   check that group K holds exactly those NPUs;
4. the container gets host ``/dev/rsdK`` as ``/dev/rsd0``.

Any failure raises :class:`AllocationError`; there is no fallback to the shared group.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Literal

from devplugin_core import AllocationError, DeviceNode, HostFS

from .smi import RblnSmi, SmiError, SmiReport
from .tools import DeadlineLock, LockTimeout

__all__ = ["RsdGroups"]

log = logging.getLogger("devplugin.rebel_npu.rsd")

Mode = Literal["auto", "create", "off"]
DEFAULT_GROUP = "0"
CONTAINER_NODE = "/dev/rsd0"


class RsdGroups:
    """The RSD policy of one plugin instance (shared by all its resources)."""

    def __init__(
        self, configured: Mode, smi: RblnSmi | None, host: HostFS, lock_file: str, timeout: float
    ) -> None:
        self.configured = configured
        self.smi = smi
        self.host = host
        self.timeout = timeout
        self.lock = DeadlineLock(lock_file)
        self.reason = ""
        self.results = {"created": 0, "reused": 0, "failed": 0}
        self._effective: Literal["create", "off"] | None = (
            "off" if configured == "off" else "create" if configured == "create" else None
        )
        self._resolve_lock = threading.Lock()

    @property
    def effective(self) -> Literal["create", "off"]:
        """``create`` or ``off``; ``auto`` is resolved (probing rbln-smi) on first use."""
        return self._effective or self.resolve()

    def peek(self) -> str:
        """The effective mode without probing (``auto`` until resolved)."""
        return self._effective or "auto"

    def resolve(self) -> Literal["create", "off"]:
        """Settle ``auto``: create when ``rbln-smi -g -j`` works, else off with a warning."""
        with self._resolve_lock:
            if self._effective is not None:
                return self._effective
            problem = self.smi.probe() if self.smi is not None else "rbln-smi is not configured"
            lock_dir = os.path.dirname(self.lock.path) or "/"
            if problem is None and not os.path.isdir(lock_dir):
                problem = f"the directory of rsdLockFile {self.lock.path} does not exist"
            if problem is None:
                self._effective = "create"
                log.info(
                    "RSD groups: auto -> create (rbln-smi %s works)",
                    self.smi.executable if self.smi else "",
                )
            else:
                self._effective = "off"
                self.reason = problem
                log.warning(
                    "RSD GROUPS DISABLED: rsdGroups is 'auto' and rbln-smi is not usable (%s). "
                    "Containers get no RSD group device; multi-NPU workloads that need one will "
                    "fail. Fix rbln-smi (rblnSmiPath) or set rsdGroups explicitly.",
                    problem,
                )
            return self._effective

    def node_for(self, ids: Sequence[str]) -> DeviceNode | None:
        """The group device for an allocation of ``ids`` (PCI addresses), None when off."""
        if self.effective == "off":
            return None
        try:
            group = self._assign(sorted(ids))
        except AllocationError as err:
            self.results["failed"] += 1
            log.error("%s", err)
            raise
        return DeviceNode(f"/dev/rsd{group}", CONTAINER_NODE, "rw")

    # -- the group transaction ------------------------------------------------------------------
    def _fail(self, ids: Sequence[str], reason: str) -> AllocationError:
        return AllocationError(
            f"cannot give {', '.join(ids)} their own RSD group: {reason} "
            f"(rsdGroups={self.configured}; not falling back to the shared /dev/rsd0)",
            ids,
        )

    def _query(self, deadline: float) -> SmiReport:
        assert self.smi is not None
        return self.smi.query(grouped=True, timeout=deadline - time.monotonic())

    def _assign(self, ids: list[str]) -> int:
        if self.smi is None:
            raise self._fail(ids, "rbln-smi is not configured")
        deadline = time.monotonic() + self.timeout
        try:
            with self.lock.hold(deadline):
                return self._assign_locked(ids, deadline)
        except LockTimeout as err:
            raise self._fail(ids, f"timed out after {self.timeout:g}s waiting: {err}") from None
        except SmiError as err:
            raise self._fail(ids, str(err)) from None
        except OSError as err:
            raise self._fail(ids, f"lock file {self.lock.path}: {err.strerror or err}") from None

    def _assign_locked(self, ids: list[str], deadline: float) -> int:
        assert self.smi is not None
        report = self._query(deadline)
        npus: list[int] = []
        for address in ids:
            dev = report.by_bus.get(address)
            if dev is None or dev.npu is None:
                raise self._fail(ids, f"rbln-smi does not list {address} with an NPU index")
            npus.append(dev.npu)
        if len(set(npus)) != len(npus):
            raise self._fail(ids, f"rbln-smi reports duplicate NPU indices {npus}")
        groups: dict[int, set[str]] = {}
        for dev in report.devices:
            if dev.group_id in ("", DEFAULT_GROUP):
                continue
            if not dev.group_id.isdigit():
                raise self._fail(ids, f"rbln-smi reports an unexpected group id {dev.group_id!r}")
            groups.setdefault(int(dev.group_id), set()).add(dev.bus_id)
        wanted = set(ids)
        touching = sorted(g for g, members in groups.items() if members & wanted)
        if len(touching) == 1 and groups[touching[0]] == wanted:
            group = touching[0]
            self._wait_for_node(ids, group, deadline)
            self.results["reused"] += 1
            log.info("reusing RSD group %d for %s", group, ",".join(ids))
            return group
        if touching:
            self.smi.run(
                ["group", "-d", ",".join(str(g) for g in touching)], deadline - time.monotonic()
            )
            log.info("destroyed stale RSD group(s) %s holding %s", touching, ",".join(ids))
        used = set(groups) - set(touching)
        group = next(k for k in range(1, len(used) + 2) if k not in used)
        self.smi.run(
            ["group", "-c", str(group), "-a", ",".join(str(n) for n in npus)],
            deadline - time.monotonic(),
        )
        check = self._query(deadline)
        members = {d.bus_id for d in check.devices if d.group_id == str(group)}
        if members != wanted:
            self._cleanup(group, deadline)
            raise self._fail(
                ids,
                f"after 'group -c {group}' rbln-smi shows group {group} "
                f"holding {sorted(members) or 'nothing'}",
            )
        self._wait_for_node(ids, group, deadline)
        self.results["created"] += 1
        log.info(
            "created RSD group %d for %s (NPUs %s)", group, ",".join(ids), ",".join(map(str, npus))
        )
        return group

    def _cleanup(self, group: int, deadline: float) -> None:
        assert self.smi is not None
        try:
            self.smi.run(["group", "-d", str(group)], deadline - time.monotonic())
        except SmiError as err:
            log.warning("could not destroy RSD group %d after a failed check: %s", group, err)

    def _wait_for_node(self, ids: Sequence[str], group: int, deadline: float) -> None:
        """The driver creates ``/dev/rsdK``; give it until the deadline (at most 1 s)."""
        if group < 1:
            raise self._fail(ids, "refusing the default group 0")
        path = f"/dev/rsd{group}"
        stop = min(deadline, time.monotonic() + 1.0)
        while not self.host.exists(path):
            if time.monotonic() >= stop:
                raise self._fail(ids, f"group {group} exists but {path} did not appear")
            time.sleep(0.02)
