"""A kubelet-like client in its own process: one synchronous grpcio stub on one persistent
unix-socket channel, as issue 14 measures the Go plugins.

    python bench/sync_client.py SOCKET --ids ID[,ID...] [--calls 300] [--warmup 20]
        [--preferred AVAILABLE_IDS --size N]

The channel is waited ready, ``--warmup`` calls are made first, GC is paused while timing, and
``--calls`` Allocate calls of one device each go round-robin over ``--ids``. An empty RPC
(GetDevicePluginOptions) is timed the same way beside it. Prints one JSON object (ms).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import grpc

from devplugin_core._proto import deviceplugin_v1beta1_pb2 as pb
from devplugin_core._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _time(call, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    gc.disable()
    try:
        for i in range(count):
            t = time.perf_counter()
            call(i)
            samples.append(1000 * (time.perf_counter() - t))
    finally:
        gc.enable()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("--ids", required=True)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--preferred", default="")
    parser.add_argument("--size", type=int, default=0)
    args = parser.parse_args()
    ids = args.ids.split(",")
    channel = grpc.insecure_channel(
        f"unix://{args.socket}", options=[("grpc.default_authority", "localhost")]
    )
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = pb_grpc.DevicePluginStub(channel)
    requests = [
        pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[i])])
        for i in ids
    ]

    def allocate(i: int) -> None:
        stub.Allocate(requests[i % len(requests)], timeout=10)

    def empty(_: int) -> None:
        stub.GetDevicePluginOptions(pb.Empty(), timeout=10)

    out: dict[str, object] = {}
    for name, call in (("allocate", allocate), ("empty_rpc", empty)):
        _time(call, args.warmup)
        samples = _time(call, args.calls)
        out[name] = {"p50": _pct(samples, 0.5), "p99": _pct(samples, 0.99), "n": len(samples)}
    if args.preferred:
        available = args.preferred.split(",")
        request = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available, allocation_size=args.size
                )
            ]
        )

        def preferred(_: int) -> None:
            stub.GetPreferredAllocation(request, timeout=10)

        _time(preferred, args.warmup)
        samples = _time(preferred, args.calls)
        out["preferred"] = {
            "p50": _pct(samples, 0.5),
            "p99": _pct(samples, 0.99),
            "n": len(samples),
        }
    channel.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
