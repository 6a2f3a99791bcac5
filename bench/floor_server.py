"""The floor: the cheapest grpc.aio server this machine can run, answering every Allocate
with one pre-built response (no lookup, no validation) on a unix socket.

    python bench/floor_server.py SOCKET [ANSWER_FILE]

``ANSWER_FILE`` holds a serialized AllocateResponse (the bench passes each plugin's own answer,
so the floor sends the same bytes); without it a one-NPU answer is used.

Issue 14 asks how close our Allocate comes to this; ``bench/run_all.py`` times it with
``bench/sync_client.py`` beside the plugins.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from devplugin_core._proto import deviceplugin_v1beta1_pb2 as pb
from devplugin_core._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc

RESPONSE = pb.AllocateResponse(
    container_responses=[
        pb.ContainerAllocateResponse(
            envs={"RBLN_DEVICES": "0"},
            devices=[
                pb.DeviceSpec(host_path="/dev/rbln0", container_path="/dev/rbln0", permissions="rw")
            ],
        )
    ]
)


class Floor(pb_grpc.DevicePluginServicer):  # type: ignore[misc]
    async def GetDevicePluginOptions(
        self, request: object, context: object
    ) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions()

    async def Allocate(self, request: object, context: object) -> pb.AllocateResponse:
        return RESPONSE


async def main(socket: str, answer_file: str | None) -> None:
    global RESPONSE
    if answer_file:
        with open(answer_file, "rb") as fh:
            RESPONSE = pb.AllocateResponse.FromString(fh.read())
    server = grpc.aio.server()
    pb_grpc.add_DevicePluginServicer_to_server(Floor(), server)
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
