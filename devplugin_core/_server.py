"""The gRPC edge: DevicePlugin and plugin-watcher Registration servicers for one resource.

Errors are mapped to gRPC status codes here and only here: unknown IDs -> INVALID_ARGUMENT,
unhealthy devices or refused host paths -> FAILED_PRECONDITION, a timed-out or failed allocator
-> INTERNAL / DEADLINE_EXCEEDED. GetPreferredAllocation never fails: on trouble it answers with
an empty preference, which the kubelet treats as "choose yourself" (an error would reject the pod).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from ._errors import (
    AllocationError,
    HostPathError,
    UnhealthyDeviceError,
    UnknownDeviceError,
)
from ._proto import deviceplugin_v1beta1_pb2 as pb
from ._proto import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from ._proto import pluginregistration_v1_pb2 as reg_pb
from ._proto import pluginregistration_v1_pb2_grpc as reg_grpc
from ._render import container_response
from ._resource import ResourceRuntime
from ._store import Snapshot

log = logging.getLogger("devplugin.server")

__all__ = ["DevicePluginService", "WatcherRegistrationService", "add_to_server"]


class DevicePluginService(pb_grpc.DevicePluginServicer):  # type: ignore[misc]
    """``v1beta1.DevicePlugin`` for one resource (one socket)."""

    def __init__(
        self,
        rt: ResourceRuntime,
        closing: asyncio.Event | None = None,
        quiet: asyncio.Event | None = None,
    ) -> None:
        self.rt = rt
        self.closing = closing or asyncio.Event()
        #: set while a newer instance owns the resource: streams stay open but send nothing
        self.quiet = quiet or asyncio.Event()

    async def GetDevicePluginOptions(
        self, request: pb.Empty, context: object
    ) -> pb.DevicePluginOptions:
        return pb.DevicePluginOptions(
            pre_start_required=self.rt.resource.allocator.pre_start_required,
            get_preferred_allocation_available=True,
        )

    async def ListAndWatch(
        self, request: pb.Empty, context: object
    ) -> AsyncIterator[pb.ListAndWatchResponse]:
        rt = self.rt
        rt.stream_opened()
        log.info("%s: ListAndWatch stream opened (%d open)", rt.name, rt.streams)
        sent = 0
        closing = asyncio.ensure_future(self.closing.wait())
        newer: asyncio.Future[Snapshot] | None = None
        try:
            while True:
                newer = asyncio.ensure_future(rt.state.wait_newer(sent))
                await asyncio.wait({newer, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not newer.done():
                    newer.cancel()
                    return  # the endpoint is shutting down: end the stream cleanly
                snapshot = newer.result()
                sent = snapshot.version
                if self.quiet.is_set():
                    continue  # standing by: the newer instance's stream speaks for us
                yield rt.wire(snapshot)  # type: ignore[misc]
                rt.metrics.updates.labels(rt.name).inc()
        finally:
            closing.cancel()
            if newer is not None:
                newer.cancel()
            rt.stream_closed()
            log.info("%s: ListAndWatch stream closed (%d open)", rt.name, rt.streams)

    async def Allocate(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Bytes in, bytes out (see :func:`add_to_server`): a request the kubelet repeats is
        answered from :meth:`ResourceRuntime.kept_answer` without decoding it."""
        rt = self.rt
        result = "ok"
        try:
            kept = rt.kept_answer(request)
            if kept is not None:
                return kept
            message = pb.AllocateRequest.FromString(request)
            if len(message.container_requests) == 1:  # what the kubelet sends
                ids = message.container_requests[0].devices_ids
                return await rt.answer(ids, request)
            responses = []
            for creq in message.container_requests:
                edits = await rt.allocate(list(creq.devices_ids))
                responses.append(container_response(edits))
            if not responses:
                responses.append(pb.ContainerAllocateResponse())
            return pb.AllocateResponse(container_responses=responses).SerializeToString()
        except UnknownDeviceError as err:
            result = "unknown_device"
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except UnhealthyDeviceError as err:
            result = "unhealthy_device"
            await self._abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except HostPathError as err:
            result = "refused_path"
            log.error("%s: Allocate refused: %s", rt.name, err)
            await self._abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except AllocationError as err:
            result = "error"
            log.error("%s: Allocate failed: %s", rt.name, err)
            await self._abort(context, grpc.StatusCode.INTERNAL, str(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            result = "cancelled"
            raise
        except Exception as err:
            result = "error"
            log.exception("%s: Allocate crashed", rt.name)
            await self._abort(context, grpc.StatusCode.INTERNAL, f"allocation failed: {err}")
        finally:
            rt.count_allocation(result)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _abort(
        context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
    ) -> None:
        await context.abort(code, message)

    async def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: object
    ) -> pb.PreferredAllocationResponse:
        rt = self.rt
        start = time.monotonic()
        responses = []
        result = "ok"
        for creq in request.container_requests:
            try:
                ids = await rt.preferred(
                    list(creq.available_deviceIDs),
                    list(creq.must_include_deviceIDs),
                    creq.allocation_size,
                )
            except asyncio.CancelledError:
                raise
            except Exception as err:
                result = "error"
                reason = "timed out" if isinstance(err, TimeoutError) else repr(err)
                log.warning("%s: GetPreferredAllocation answered empty: %s", rt.name, reason)
                ids = []
            responses.append(pb.ContainerPreferredAllocationResponse(deviceIDs=ids))
        rt.metrics.preferred.labels(rt.name, result).inc()
        rt.metrics.preferred_duration.labels(rt.name).observe(time.monotonic() - start)
        return pb.PreferredAllocationResponse(container_responses=responses)

    async def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreStartContainerResponse:
        rt = self.rt
        try:
            await rt.pre_start(list(request.devices_ids))
        except UnknownDeviceError as err:
            rt.metrics.prestart.labels(rt.name, "unknown_device").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except AllocationError as err:
            rt.metrics.prestart.labels(rt.name, "error").inc()
            await context.abort(grpc.StatusCode.INTERNAL, str(err))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as err:
            rt.metrics.prestart.labels(rt.name, "error").inc()
            log.exception("%s: PreStartContainer crashed", rt.name)
            await context.abort(grpc.StatusCode.INTERNAL, f"pre-start failed: {err}")
        rt.metrics.prestart.labels(rt.name, "ok").inc()
        return pb.PreStartContainerResponse()


def add_to_server(service: DevicePluginService, server: grpc.aio.Server) -> None:
    """Serve ``service`` as ``v1beta1.DevicePlugin``: the generated handlers, except that
    Allocate takes and returns bytes (its answers are kept serialized)."""
    handlers = {
        "GetDevicePluginOptions": grpc.unary_unary_rpc_method_handler(
            service.GetDevicePluginOptions,
            request_deserializer=pb.Empty.FromString,
            response_serializer=pb.DevicePluginOptions.SerializeToString,
        ),
        "ListAndWatch": grpc.unary_stream_rpc_method_handler(
            service.ListAndWatch,
            request_deserializer=pb.Empty.FromString,
            response_serializer=pb.ListAndWatchResponse.SerializeToString,
        ),
        "GetPreferredAllocation": grpc.unary_unary_rpc_method_handler(
            service.GetPreferredAllocation,
            request_deserializer=pb.PreferredAllocationRequest.FromString,
            response_serializer=pb.PreferredAllocationResponse.SerializeToString,
        ),
        "Allocate": grpc.unary_unary_rpc_method_handler(service.Allocate),  # bytes both ways
        "PreStartContainer": grpc.unary_unary_rpc_method_handler(
            service.PreStartContainer,
            request_deserializer=pb.PreStartContainerRequest.FromString,
            response_serializer=pb.PreStartContainerResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("v1beta1.DevicePlugin", handlers),)
    )
    server.add_registered_method_handlers("v1beta1.DevicePlugin", handlers)


class WatcherRegistrationService(reg_grpc.RegistrationServicer):  # type: ignore[misc]
    """``pluginregistration.Registration`` for plugin-watcher mode (served on the same socket)."""

    def __init__(
        self, resource: str, endpoint: str, on_status: Callable[[bool, str], None]
    ) -> None:
        self.resource = resource
        self.endpoint = endpoint
        self.on_status = on_status

    async def GetInfo(self, request: reg_pb.InfoRequest, context: object) -> reg_pb.PluginInfo:
        return reg_pb.PluginInfo(
            type="DevicePlugin",
            name=self.resource,
            endpoint=self.endpoint,
            supported_versions=["v1beta1"],
        )

    async def NotifyRegistrationStatus(
        self, request: reg_pb.RegistrationStatus, context: object
    ) -> reg_pb.RegistrationStatusResponse:
        self.on_status(request.plugin_registered, request.error)
        return reg_pb.RegistrationStatusResponse()
