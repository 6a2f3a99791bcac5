"""A complete device plugin for a made-up PCI accelerator, the Acme widget (vendor abcd)."""

from dataclasses import dataclass

import devplugin_core as dp


@dataclass(frozen=True)
class WidgetConfig:
    resource_name: str = dp.option("resourceName", default="acme.com/widget")


class WidgetDiscoverer(dp.Discoverer):
    def discover(self, scan: dp.DiscoveryPass) -> list[dp.Device]:
        devices = []
        for dev in dp.scan_pci(scan.host, classes=[0x12], rdma=False).devices.values():
            if dev.vendor != "abcd" or dev.driver != "widget":
                scan.reject(dev.address, "not an Acme widget bound to the widget driver")
                continue
            minor = scan.host.read_attr(f"/sys/bus/pci/devices/{dev.address}/widget_id")
            edits = dp.ContainerEdits(device_nodes=[dp.DeviceNode(f"/dev/widget{minor}")])
            numa = () if dev.numa_node is None else (dev.numa_node,)
            devices.append(dp.Device(dev.address, numa, edits=edits))
        return devices


class WidgetAllocator(dp.Allocator):
    def allocate(self, request: dp.AllocationRequest) -> dp.ContainerEdits:
        env = dp.ContainerEdits(env={"ACME_WIDGETS": ",".join(request.ids)})
        return super().allocate(request).merge(env)


def build(config: WidgetConfig, ctx: dp.PluginContext) -> list[dp.Resource]:
    return [dp.Resource(config.resource_name, WidgetDiscoverer(), WidgetAllocator())]


SPEC = dp.PluginSpec("acme-widget", "Acme widgets (example)", WidgetConfig, build,
                     config_optional=True)  # fmt: skip
