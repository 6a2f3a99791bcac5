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
    HealthChecker,
    HostFS,
    Mount,
    Observation,
    Plugin,
    PluginContext,
    PluginSpec,
    Resource,
    Scan,
    Scanner,
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


class GadgetScanner(Scanner):
    """One PCI scan; every configured resource gets the functions of its vendor."""

    def __init__(self, resources: Sequence[tuple[GadgetResource, Resource]]) -> None:
        self.resources = resources

    def scan(self, scan: Scan) -> None:
        pci = scan_pci(scan.host, rdma=False)
        for config, resource in self.resources:
            for dev in pci.devices.values():
                if dev.vendor != config.vendor:
                    scan.reject(
                        dev.address, f"vendor {dev.vendor} is not {config.vendor}", resource
                    )
                    continue
                minor = int(dev.address[-1])
                nodes = [DeviceNode(f"/dev/gadget{minor}")]
                nodes += [DeviceNode(p) for p in config.extra_nodes]
                edits = ContainerEdits(device_nodes=nodes, mounts=[Mount(m) for m in config.mounts])
                attributes = {"driver": dev.driver or ""}
                device = Device(dev.address, dev.numa_nodes, edits=edits, attributes=attributes)
                scan.add(resource, device)


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


def build(config: GadgetConfig, ctx: PluginContext) -> Plugin:
    pairs = []
    for r in config.resources:
        health = GadgetHealth(ctx.host, config.health_interval)
        allocator = PreStartAllocator(PRE_START_CALLS) if r.pre_start else GadgetAllocator(None)
        pairs.append((r, Resource(r.name, allocator, health, mount_allowlist=r.mount_allowlist)))
    return Plugin(
        GadgetScanner(pairs),
        tuple(res for _, res in pairs),
        rescan_interval=config.rediscover_interval,
    )


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
