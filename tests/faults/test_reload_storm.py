"""Hot-reload storms: 100 writes to the config file within about a second, half of them
invalid (truncated JSON, wrong types, unpaired surrogates, binary junk), some atomic renames as
ConfigMap volumes do and some in-place rewrites as editors do.

The plugin keeps serving throughout — Allocate calls for devices every variant advertises
succeed while the storm rages, no ListAndWatch stream ends, no endpoint re-registers — and ends
in the last valid config written (its device count reaches the kubelet). Invalid writes after
that are refused and change nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from pathlib import Path

import grpc

from devplugin_core.testing import FakeKubelet

from .helpers import Node, serve, wait_registered, write_json

INVALID: list[bytes] = [
    b"{",
    b'{"configList": "x", "resourceList": "x"}',
    b"[1, 2, 3]",
    b'{"configList": [{"resourceName": "\\ud800"}], "resourceList": [{"resourceName": "\\ud800"}]}',
    b"\xff\xfe\x00garbage",
    b'{"configList": 7, "resourceList": 7, "rsdTimeout": 1e999}',
    b'{"configList": [{"resourceName": "../../etc", "rdmaHcaMax": 1e400}], "resourceList": {}}',
]
WRITES = 100
PACE = 0.01  # storm pacing: 100 writes in about one second (fault generation, not a wait)


def _write(path: Path, content: bytes, atomic: bool) -> None:
    if atomic:  # a ConfigMap volume swaps the file in one rename
        tmp = path.with_name(path.name + ".swap")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    else:  # an editor truncates and rewrites in place
        with open(path, "wb") as fh:
            fh.write(content)


def _reloads(runtime: object, result: str) -> float:
    value = runtime.registry.get_sample_value(  # type: ignore[attr-defined]
        "devplugin_config_reloads_total", {"result": result}
    )
    return value or 0.0


async def test_reload_storm_ends_in_the_last_valid_config_while_serving(
    node: Node, fake_kubelet: FakeKubelet, scratch: Path
) -> None:
    case = node.case
    assert case.scaled is not None
    scaled = case.scaled
    rng = random.Random(f"storm-{case.name}")
    counts = [rng.randint(1, case.scaled_max) for _ in range(WRITES // 2)]
    plan = [(n, json.dumps(scaled(node.config, n)).encode()) for n in counts]
    plan += [(None, rng.choice(INVALID)) for _ in range(WRITES - len(plan))]
    rng.shuffle(plan)
    last = max(i for i, (n, _) in enumerate(plan) if n is not None)
    plan.append(plan.pop(last))  # the storm's final write is a valid one
    final_count, final_content = plan[-1]
    assert final_count is not None
    config = scratch / "storm.json"
    write_json(config, node.config)

    async with serve(node, fake_kubelet, config=config) as runtime:
        await wait_registered(fake_kubelet, case, 1)
        stop = asyncio.Event()
        failures: list[str] = []
        allocations = 0

        async def allocate_throughout() -> None:
            nonlocal allocations
            while not stop.is_set():
                for resource, device in case.stable.items():
                    try:
                        await fake_kubelet.allocate(resource, [device])
                        allocations += 1
                    except grpc.aio.AioRpcError as err:
                        failures.append(f"{resource} {device}: {err.code().name} {err.details()}")

        load = asyncio.create_task(allocate_throughout())
        sighups = []
        try:
            for index, (_, content) in enumerate(plan):
                _write(config, content, atomic=index % 2 == 0)
                if index % 4 == 3:  # SIGHUP-style reloads read the file mid-storm too
                    sighups.append(asyncio.create_task(runtime.reload("sighup")))
                await asyncio.sleep(PACE)
            await asyncio.gather(*sighups)
            assert _reloads(runtime, "failed") > 0  # some mid-storm reads met invalid files
            digest = hashlib.sha256(final_content).hexdigest()
            await fake_kubelet.wait_until(
                lambda: runtime.loaded is not None and runtime.loaded.digest == digest,
                timeout=30,
                what="the last valid config applied",
            )
            await fake_kubelet.wait_for_devices(
                case.scaled_resource, lambda d: len(d) == final_count, timeout=20
            )
            applied = runtime.loaded
            # invalid writes after the storm are refused and change nothing
            for content in INVALID[:3]:
                refused = _reloads(runtime, "failed")
                _write(config, content, atomic=True)
                await fake_kubelet.wait_until(
                    lambda before=refused: _reloads(runtime, "failed") > before,
                    timeout=20,
                    what="an invalid config refused",
                )
                assert runtime.loaded is applied
        finally:
            stop.set()
            await load
        assert not failures, failures[:5]
        assert allocations > 0
        assert len(fake_kubelet.devices(case.scaled_resource)) == final_count
        for resource in case.resources:  # served throughout: no stream ended, no re-register
            assert fake_kubelet.registration_count(resource) == 1, resource
            assert not fake_kubelet.connections[resource].ended, resource
        assert runtime._failed is None
