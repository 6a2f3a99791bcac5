"""A complete device plugin for a made-up PCI accelerator, the Acme widget (vendor abcd)."""

from dataclasses import dataclass

import devplugin_core as dp


@dataclass(frozen=True)
class WidgetConfig:
    resource_name: str = dp.option("resourceName", default="acme.com/widget")


@dataclass
class WidgetScanner(dp.Scanner):  # one pass over the PCI bus finds every widget
    resource: dp.Resource

    def scan(self, scan: dp.Scan) -> None:
        for dev in dp.scan_pci(scan.host, classes=[0x12], rdma=False).devices.values():
            if dev.vendor != "abcd" or dev.driver != "widget":
                scan.reject(dev.address, "not an Acme widget bound to the widget driver")
                continue
            minor = scan.host.read_attr(f"/sys/bus/pci/devices/{dev.address}/widget_id")
            edits = dp.ContainerEdits(device_nodes=[dp.DeviceNode(f"/dev/widget{minor}")])
            scan.add(self.resource, dp.Device(dev.address, dev.numa_nodes, edits=edits))


class WidgetAllocator(dp.Allocator):
    def allocate(self, request: dp.AllocationRequest) -> dp.ContainerEdits:
        env = dp.ContainerEdits(env={"ACME_WIDGETS": ",".join(request.ids)})
        return super().allocate(request).merge(env)


def build(config: WidgetConfig, ctx: dp.PluginContext) -> dp.Plugin:
    resource = dp.Resource(config.resource_name, WidgetAllocator())
    return dp.Plugin(WidgetScanner(resource), resources=(resource,))


SPEC = dp.PluginSpec("acme-widget", "Acme widgets (example)", WidgetConfig, build,
                     config_optional=True)  # fmt: skip
