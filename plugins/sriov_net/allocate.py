"""Allocate and GetPreferredAllocation for one pool.

Allocate re-reads each requested function (driver, IOMMU group, uio, RDMA and vDPA devices;
for an SF its RDMA devices), takes what its selector adds (RDMA, vhost-net, vDPA,
``additionalInfo``) from the device's :class:`~.pools.VfInfo`, and returns its device nodes
plus ``PCIDEVICE_<PREFIX>_<NAME>`` and ``..._INFO`` exactly as upstream formats them — except
that the ``uio`` and ``vdpa`` entries are complete on the first allocation too (upstream fills
them only after the device specs were computed once). netDevice and auxNetDevice pools also
write the device-info files.

The answer is reusable: it names every sysfs entry it was read from (an SF's directory; a
function's ``driver`` link, its ``iommu_group`` link when bound to vfio-pci, its ``uio`` entry
and vDPA device; the ``infiniband`` entries of either) and the device-info file it wrote, so
the framework serves it again only while all of them are the same files — a rebind, a
recreated RDMA device or a device-info file removed by the CNI makes the next Allocate read
the function again and rewrite the file. The answers are built ahead (``build_ahead``): a
device-info file exists, current, for every VF of a netDevice or auxNetDevice pool, not only
for the VFs handed out.

Preferred allocation (upstream has none): keep ``must_include``, fit the request into one NUMA
node when possible, and inside it spread the VFs over as many PFs as possible (a PF or cable
failure then takes out fewer of a pod's VFs) — or, with ``allocationPolicy: packed``, fill as
few PFs as possible.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from devplugin_core import (
    AllocationError,
    AllocationRequest,
    Allocator,
    ContainerEdits,
    Device,
    HostFS,
    HostReadError,
    PreferredRequest,
    numa_level,
    prefer_packed,
)
from devplugin_core.toolkit import SYS_PCI_DEVICES, pcidevice_env

from .aux import SYS_AUX
from .deviceinfo import DeviceInfoFiles, aux_document, pci_document, vdpa_document
from .pools import PoolSpec, VfInfo
from .specs import VFIO_DRIVER, FunctionState, build_specs, read_state
from .vdpa import SYS_VDPA

__all__ = ["PoolAllocator", "pf_level"]


def pf_level(device: Device) -> Hashable:
    """Grouping key: the VF's PF (``None`` for functions without one)."""
    return device.payload_as(VfInfo).pf or None


class PoolAllocator(Allocator):
    """What a container gets for VFs of one pool."""

    def __init__(self, host: HostFS, spec: PoolSpec, device_info: DeviceInfoFiles | None) -> None:
        self.host = host
        self.spec = spec
        self.device_info = device_info if spec.writes_device_info else None

    reusable = True  # each answer names what it was read from (_witnesses, the device-info file)
    build_ahead = True  # the first Allocate of a VF is a cache hit; its file is written then

    def _witnesses(self, state: FunctionState, payload: VfInfo) -> list[str]:
        """The sysfs entries ``state`` was read from, as local paths: each one is recreated
        when what it says changes (the device nodes themselves are checked anyway)."""
        if payload.bus == "auxiliary":
            base = f"{SYS_AUX}/{state.address}"
            paths = [base]
        else:
            base = f"{SYS_PCI_DEVICES}/{state.address}"
            paths = [f"{base}/driver"]  # gone with the function, replaced by a rebind
            if state.driver == VFIO_DRIVER and state.iommu_group is not None:
                paths.append(f"{base}/iommu_group")
            if state.uio:
                paths.append(f"{base}/uio/{state.uio[0]}")
            if state.vdpa is not None:
                paths.append(f"{SYS_VDPA}/{state.vdpa.name}")
        if payload.needs.rdma:  # none yet: the missing directory makes the answer one-off
            names = state.rdma_names
            paths += [f"{base}/infiniband/{n}" for n in names] if names else [f"{base}/infiniband"]
        return [self.host.local(p) for p in paths]

    def _state(self, device: Device, payload: VfInfo) -> FunctionState:
        what = "Scalable Function" if payload.bus == "auxiliary" else "PCI function"
        try:
            state = read_state(
                self.host,
                device.id,
                vdpa=bool(payload.needs.vdpa),
                bus=payload.bus,
                driver=payload.driver,
            )
        except HostReadError as err:
            raise AllocationError(f"cannot read {device.id}: {err}", [device.id]) from None
        if state is None:
            raise AllocationError(f"{what} {device.id} no longer exists", [device.id])
        wanted = payload.needs.vdpa
        if wanted and (state.vdpa is None or state.vdpa.kind != wanted):
            now = "has none" if state.vdpa is None else f"has {state.vdpa.state()}"
            raise AllocationError(
                f"{device.id}: the pool wants a {wanted} vDPA device, the function {now}",
                [device.id],
            )
        return state

    @staticmethod
    def _document(device: Device, payload: VfInfo, state: FunctionState) -> dict[str, object]:
        if payload.bus == "auxiliary":
            return aux_document(device.id, payload.pf, state.rdma_names)
        if payload.needs.vdpa and state.vdpa is not None:
            vdpa = state.vdpa
            return vdpa_document(device.id, vdpa.name, vdpa.kind, vdpa.path)
        return pci_document(device.id, state.rdma_names)

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        parts = []
        info = {}
        documents: dict[str, dict[str, object]] = {}
        for device in request.devices:
            payload = device.payload_as(VfInfo)
            state = self._state(device, payload)
            request.depends_on(*self._witnesses(state, payload))
            nodes, info[device.id] = build_specs(self.host, state, payload.needs)
            documents[device.id] = self._document(device, payload, state)
            parts.append(ContainerEdits(device_nodes=nodes))
        env = pcidevice_env(self.spec.prefix, self.spec.resource_name, request.ids, info)
        if self.device_info is not None:
            for device_id in request.ids:
                try:
                    written = self.device_info.write(
                        self.spec.name, device_id, document=documents[device_id]
                    )
                except OSError as err:
                    raise AllocationError(
                        f"cannot write the device-info file for {device_id} in "
                        f"{self.device_info.directory}: {err}",
                        [device_id],
                    ) from None
                request.depends_on(written)
        return ContainerEdits(env=env).merge(*parts)

    def preferred(self, request: PreferredRequest) -> Sequence[str]:
        devices = (*request.available, *request.must_include)
        levels = [numa_level] if any(d.numa_nodes for d in devices) else []
        if self.spec.entry.allocation_policy == "packed":
            return prefer_packed(request, levels=[*levels, pf_level])
        return prefer_packed(request, levels=levels, spread=pf_level)
