"""A fake ``rbln-smi`` for tests and the demo (standard library only; run as a script).

Usage: ``python fakesmi.py --state STATE.json ARGS...`` where ARGS is one of ``-j``,
``-g -j``, ``group -c K -a N,M``, ``group -d K[,L]``. The state file (next to the launcher
written by :func:`devplugin_plugins.rebel_npu.testing.install_fake_smi`) holds::

    {"kmd_version": "...", "devices": [<rbln-smi -g -j device entries>],
     "dev_dir": "<fake host>/dev" or null,   # where /dev/rsdK nodes are created and removed
     "fail": ["query"|"group-query"|"create"|"destroy"|"all", ...],   # exit 1
     "hang": [same names],                                             # sleep "forever"
     "create_noop": false,      # 'group -c' exits 0 but changes nothing
     "calls": [[args...], ...]} # every invocation, appended

Group rules follow upstream's use of the real tool: ``-c`` needs a new id K >= 1 and NPUs that
are all in the default group 0; ``-d`` needs existing non-default groups and moves their NPUs
back to group 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def locked_state(path: str) -> Iterator[dict[str, Any]]:
    """The state file, read and written back under its flock (every writer takes it: a test
    changing the state while a call runs would otherwise lose one of the two writes)."""
    with open(path + ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with open(path) as fh:
            state: dict[str, Any] = json.load(fh)
        yield state
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(state, fh, indent=1)
        os.replace(tmp, path)


def _ids(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        if not part.strip().isdigit():
            raise ValueError(f"invalid id list {text!r}")
        out.append(int(part))
    return out


def _command(args: list[str]) -> str:
    if sorted(args) == ["-j"]:
        return "query"
    if sorted(args) == ["-g", "-j"]:
        return "group-query"
    if len(args) == 5 and args[0] == "group" and args[1] == "-c" and args[3] == "-a":
        return "create"
    if len(args) == 3 and args[0] == "group" and args[1] == "-d":
        return "destroy"
    return "usage"


def _output(state: dict[str, Any], grouped: bool) -> str:
    devices = []
    for dev in state["devices"]:
        entry = dict(dev)
        if not grouped:
            entry.pop("group_id", None)
        devices.append(entry)
    return json.dumps(
        {"KMD_version": state.get("kmd_version", "1.3.73"), "devices": devices, "contexts": []},
        indent=2,
    )


def _node(state: dict[str, Any], group: int, create: bool) -> None:
    if not state.get("dev_dir"):
        return
    path = os.path.join(state["dev_dir"], f"rsd{group}")
    if create:
        with open(path, "a"):
            pass
    elif os.path.exists(path):
        os.unlink(path)


def _run(state: dict[str, Any], command: str, args: list[str]) -> tuple[int, str]:
    if command == "query":
        return 0, _output(state, grouped=False)
    if command == "group-query":
        return 0, _output(state, grouped=True)
    by_npu = {int(d["npu"]): d for d in state["devices"]}
    existing = {int(d.get("group_id") or 0) for d in state["devices"]} - {0}
    if command == "create":
        group, npus = int(args[2]), _ids(args[4])
        if group < 1 or group in existing:
            return 1, f"error: RSD group {group} is invalid or exists\n"
        for npu in npus:
            if npu not in by_npu:
                return 1, f"error: no NPU {npu}\n"
            if str(by_npu[npu].get("group_id", "0")) != "0":
                return 1, f"error: NPU {npu} already belongs to group {by_npu[npu]['group_id']}\n"
        if not state.get("create_noop"):
            for npu in npus:
                by_npu[npu]["group_id"] = str(group)
            _node(state, group, True)
        return 0, f"RSD group {group} created\n"
    groups = _ids(args[2])
    for group in groups:
        if group not in existing:
            return 1, f"error: RSD group {group} does not exist\n"
    for dev in state["devices"]:
        if int(dev.get("group_id") or 0) in groups:
            dev["group_id"] = "0"
    for group in groups:
        _node(state, group, False)
    return 0, f"RSD group(s) {args[2]} destroyed\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--state":
        print("usage: fakesmi.py --state FILE ARGS...", file=sys.stderr)
        return 2
    path, args = argv[1], argv[2:]
    command = _command(args)
    if command == "usage":
        print(f"rbln-smi: unsupported arguments {args}", file=sys.stderr)
        return 2
    with locked_state(path) as state:
        state.setdefault("calls", []).append(args)
        behaviour = {"hang": state.get("hang", []), "fail": state.get("fail", [])}
        if command in behaviour["hang"] or "all" in behaviour["hang"]:
            hang = True
        else:
            hang = False
            if command in behaviour["fail"] or "all" in behaviour["fail"]:
                code, text = 1, f"error: simulated failure of {command}\n"
            else:
                try:
                    code, text = _run(state, command, args)
                except ValueError as err:
                    code, text = 2, f"error: {err}\n"
    if hang:
        time.sleep(3600)
        return 1
    (sys.stdout if code == 0 else sys.stderr).write(text)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
