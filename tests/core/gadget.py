"""A configurable test plugin ("gadget") that exercises every framework feature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from devplugin_core import (
    AllocationRequest,
    Allocator,
    ConfigError,
    ContainerEdits,
    Device,
    DeviceNode,
    Discoverer,
    DiscoveryPass,
    HealthChecker,
    HostFS,
    Mount,
    Observation,
    PluginContext,
    PluginSpec,
    Resource,
    ResourceSet,
    option,
    scan_pci,
)


@dataclass(frozen=True)
class GadgetResource:
    name: str = option("name")
    vendor: str = option(default="abcd")
    mounts: tuple[str, ...] = option(default=())
    extra_nodes: tuple[str, ...] = option("extraNodes", default=())
    mount_allowlist: tuple[str, ...] = option("mountAllowlist", default=("/opt/gadget",))
    pre_start: bool = option("preStart", default=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("name", "must not be empty", self.name)


@dataclass(frozen=True)
class GadgetConfig:
    resources: tuple[GadgetResource, ...] = option(default=())
    health_interval: float = option("healthInterval", default=60.0)
    rediscover_interval: float = option("rediscoverInterval", default=0.0)


class GadgetDiscoverer(Discoverer):
    def __init__(self, config: GadgetResource) -> None:
        self.config = config

    def discover(self, scan: DiscoveryPass) -> Sequence[Device]:
        pci = scan.cached("pci", lambda: scan_pci(scan.host, rdma=False))
        devices = []
        for dev in pci.devices.values():
            if dev.vendor != self.config.vendor:
                scan.reject(
                    dev.address,
                    f"vendor {dev.vendor} is not {self.config.vendor}",
                    self.config.name,
                )
                continue
            minor = int(dev.address[-1])
            nodes = [DeviceNode(f"/dev/gadget{minor}")]
            nodes += [DeviceNode(p) for p in self.config.extra_nodes]
            edits = ContainerEdits(
                device_nodes=nodes, mounts=[Mount(m) for m in self.config.mounts]
            )
            numa = () if dev.numa_node is None else (dev.numa_node,)
            devices.append(
                Device(dev.address, numa, edits=edits, attributes={"driver": dev.driver or ""})
            )
        return devices


class GadgetAllocator(Allocator):
    def __init__(self, pre_start_calls: list[tuple[str, ...]] | None) -> None:
        self.pre_start_calls = pre_start_calls

    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        env = ContainerEdits(env={"GADGETS": ",".join(request.ids)})
        return super().allocate(request).merge(env)


class PreStartAllocator(GadgetAllocator):
    def pre_start(self, devices: Sequence[Device]) -> None:
        assert self.pre_start_calls is not None
        self.pre_start_calls.append(tuple(d.id for d in devices))


class GadgetHealth(HealthChecker):
    """Healthy while ``<device>/gadget_ok`` reads 1 (missing device: unhealthy)."""

    recover_after = 2

    def __init__(self, host: HostFS, interval: float) -> None:
        self.host = host
        self.interval = interval

    def check(self, devices: Sequence[Device]) -> Mapping[str, Observation]:
        out = {}
        for d in devices:
            text = self.host.read_attr(f"/sys/bus/pci/devices/{d.id}/gadget_ok")
            if text is None or text == "1":
                ok = self.host.exists(f"/sys/bus/pci/devices/{d.id}/vendor")
                out[d.health_key] = Observation.ok() if ok else Observation.bad("device vanished")
            else:
                out[d.health_key] = Observation.bad(f"gadget_ok={text}")
        return out


PRE_START_CALLS: list[tuple[str, ...]] = []


def build(config: GadgetConfig, ctx: PluginContext) -> ResourceSet:
    resources = []
    for r in config.resources:
        health = GadgetHealth(ctx.host, config.health_interval)
        allocator = PreStartAllocator(PRE_START_CALLS) if r.pre_start else GadgetAllocator(None)
        resources.append(
            Resource(
                r.name,
                GadgetDiscoverer(r),
                allocator,
                health,
                mount_allowlist=r.mount_allowlist,
            )
        )
    return ResourceSet(tuple(resources), rediscover_interval=config.rediscover_interval)


SPEC = PluginSpec(
    name="gadget",
    summary="test plugin",
    config_model=GadgetConfig,
    build=build,
)


def add_gadgets(host, count: int = 4, vendor: str = "abcd") -> list[str]:  # type: ignore[no-untyped-def]
    """``count`` gadget PCI functions on two NUMA nodes with /dev/gadgetN."""
    addresses = []
    for i in range(count):
        address = f"0000:5e:00.{i}"
        host.add_pci(
            address,
            vendor=vendor,
            device="0001",
            class_code=0x120000,
            driver="gadget",
            numa_node=i % 2,
        )
        host.add_dev(f"/dev/gadget{i}")
        addresses.append(address)
    return addresses


def config(*names: str, **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {"resources": [{"name": n} for n in names]}
    doc.update(extra)
    return doc
