"""A complete device plugin for a made-up PCI accelerator, the Acme widget (vendor abcd)."""

from dataclasses import dataclass

from devplugin_core import (Allocator, AllocationRequest, ContainerEdits, Device, DeviceNode,
                            Discoverer, DiscoveryPass, PluginSpec, Resource, option, scan_pci)


@dataclass(frozen=True)
class WidgetConfig:
    resource_name: str = option("resourceName", default="acme.com/widget")


class WidgetDiscoverer(Discoverer):
    def discover(self, scan: DiscoveryPass) -> list[Device]:
        devices = []
        for dev in scan_pci(scan.host, classes=[0x12], rdma=False).devices.values():
            if dev.vendor != "abcd" or dev.driver != "widget":
                scan.reject(dev.address, "not an Acme widget bound to the widget driver")
                continue
            minor = scan.host.read_attr(f"/sys/bus/pci/devices/{dev.address}/widget_id")
            numa = () if dev.numa_node is None else (dev.numa_node,)
            node = DeviceNode(f"/dev/widget{minor}")
            devices.append(Device(dev.address, numa, edits=ContainerEdits(device_nodes=[node])))
        return devices


class WidgetAllocator(Allocator):
    def allocate(self, request: AllocationRequest) -> ContainerEdits:
        env = ContainerEdits(env={"ACME_WIDGETS": ",".join(request.ids)})
        return super().allocate(request).merge(env)


SPEC = PluginSpec(
    name="acme-widget", summary="Acme widgets (example plugin)", config_model=WidgetConfig,
    config_optional=True,
    build=lambda config, ctx: [Resource(config.resource_name, WidgetDiscoverer(), WidgetAllocator())],
)
