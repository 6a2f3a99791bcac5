"""FakeHost: writes faithful sysfs and /dev trees for tests, demos and benchmarks.

Layout (all paths under ``root``; a marker file lets regular files stand in for device nodes)::

    sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/        real directory of a PCI function
        vendor "0x15b3"  device "0x1017"  class "0x020000"  modalias  numa_node "0"
        subsystem_vendor subsystem_device revision
        driver -> ../../../../bus/pci/drivers/mlx5_core        (relative links, as the kernel)
        iommu_group -> ../../../../kernel/iommu_groups/45
        sriov_totalvfs sriov_numvfs virtfnN -> ../0000:3b:00.2 (PF); physfn -> ../0000:3b:00.0 (VF)
        net/<ifname>/{type,operstate,carrier,address,ifindex}
        infiniband/mlx5_0/{node_type,node_guid,fw_ver,hca_type,ports/1/{state,phys_state,
                           link_layer,rate,pkeys/0,counters/...}}
        infiniband_verbs/uverbs0/{ibdev,abi_version,dev}   infiniband_mad/{umad0,issm0}/{ibdev,port}
        uio/uio0/   pools (rebellions)
    sys/bus/pci/devices/<bdf> -> ../../../devices/pci.../<bdf>
    sys/bus/pci/drivers/<driver>/<bdf> -> ../../../../devices/...
    sys/class/net/<if>, sys/class/infiniband/<dev>, sys/class/infiniband_{verbs,mad,cm}/<x> -> ...
    sys/kernel/iommu_groups/<n>/{devices/<bdf> ->, name}
    sys/devices/.../<pf>/mlx5_core.sf.<n>/{sfnum,driver ->,net/<if>/,infiniband/<dev>/,...}
                                                          a Scalable Function (auxiliary bus)
    sys/bus/auxiliary/devices/<driver>.<type>.<n> -> ../../../devices/.../<pf>/<that name>
    sys/devices/.../<vf>/vdpa<n>/{driver ->,vhost-vdpa-<m>/dev | virtio<k>/net/<if>/}
    sys/bus/vdpa/devices/vdpa<n> -> ../../../devices/.../<vf>/vdpa<n>   dev/vhost-vdpa-<m>
    sys/module/ib_core/parameters/netns_mode
    dev/infiniband/{uverbsN,umadN,issmN,rdma_cm}  dev/vfio/{vfio,N}  dev/uioN  dev/rblnN  ...

Every ``add_*`` method returns the address or name it created; mutators (``set_link``,
``set_port_state``, ``remove_pci``, ``unbind``...) change the tree mid-test the way the kernel
would.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._hostfs import FAKE_HOST_MARKER, HostFS

__all__ = ["FakeAux", "FakeHost", "FakePci"]

SYS_AUX = "/sys/bus/auxiliary/devices"
SYS_VDPA = "/sys/bus/vdpa/devices"
VDPA_DRIVERS = {"vhost": "vhost_vdpa", "virtio": "virtio_vdpa"}

_STATE_NAMES = {1: "DOWN", 2: "INIT", 3: "ARMED", 4: "ACTIVE", 5: "ACTIVE_DEFER"}
_PHYS_NAMES = {
    1: "Sleep",
    2: "Polling",
    3: "Disabled",
    4: "PortConfigurationTraining",
    5: "LinkUp",
    6: "LinkErrorRecovery",
    7: "Phy Test",
}


@dataclass
class FakePci:
    """What the builder remembers about one PCI function."""

    address: str
    path: str  # real host path, e.g. /sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0
    vendor: str
    device: str
    class_code: int
    driver: str | None = None
    numa_node: int | None = None
    netdevs: list[str] = field(default_factory=list)
    vfs: list[str] = field(default_factory=list)


@dataclass
class FakeAux:
    """What the builder remembers about one auxiliary-bus device (``mlx5_core.sf.4``): its
    real directory under its parent PCI function, and the netdevs it carries."""

    name: str
    parent: str
    path: str
    sfnum: int | None = None
    netdevs: list[str] = field(default_factory=list)
    representor: str = ""
    nested: list[str] = field(default_factory=list)


class FakeHost:
    """Builds a fake host under ``root``. Use :attr:`host` to read it through a HostFS."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / FAKE_HOST_MARKER).write_text("devplugin fake host\n")
        self.pci: dict[str, FakePci] = {}
        self.aux: dict[str, FakeAux] = {}
        self.vdpa: dict[str, str] = {}  # vDPA device name -> its parent PCI function
        #: ``devlink dev info pci/<address>``: address -> {"fw.app.name": ..., ...} (versions)
        self.devlink_info: dict[str, dict[str, str]] = {}
        self._vhost_vdpa = 0
        self._uverbs = 0
        self._umad = 0
        self._ucm = 0
        self._ifindex = 1
        self._rbln = 0
        for sub in ("sys/bus/pci/devices", "sys/bus/pci/drivers", "sys/class/net", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def host(self) -> HostFS:
        return HostFS(self.root)

    # -- primitives --------------------------------------------------------------------------
    def path(self, host_path: str) -> Path:
        """Local path of an absolute host path."""
        return self.root / host_path.lstrip("/")

    def write(self, host_path: str, content: str | bytes) -> None:
        p = self.path(host_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)

    def remove(self, host_path: str) -> None:
        p = self.path(host_path)
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)

    def symlink(self, host_link: str, host_target: str) -> None:
        """A relative symlink at ``host_link`` pointing to ``host_target`` (as sysfs does)."""
        link = self.path(host_link)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        rel = os.path.relpath(host_target, os.path.dirname(host_link))
        link.symlink_to(rel)

    def add_dev(self, host_path: str) -> str:
        """A device node (a regular file; the fake-host marker makes HostFS accept it)."""
        p = self.path(host_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
        return host_path

    def set_module_param(self, module: str, param: str, value: str) -> None:
        self.write(f"/sys/module/{module}/parameters/{param}", f"{value}\n")

    # -- PCI ---------------------------------------------------------------------------------
    def _real_dir(self, address: str, parents: Sequence[str]) -> str:
        if parents:
            top = parents[0]
            root_complex = f"pci{top[:7]}"
            return "/sys/devices/" + "/".join([root_complex, *parents, address])
        return f"/sys/devices/pci{address[:7]}/{address}"

    def add_pci(
        self,
        address: str,
        *,
        vendor: str,
        device: str,
        class_code: int = 0x020000,
        driver: str | None = None,
        numa_node: int | None = None,
        parents: Sequence[str] = (),
        iommu_group: int | None = None,
        subsystem_vendor: str | None = None,
        subsystem_device: str = "0000",
        acpi_index: int | None = None,
        sibling_of: str | None = None,
    ) -> str:
        """One PCI function. ``class_code``: 24-bit (``0x120000``) or the base class alone
        (``0x12``), as ``scan_pci(classes=...)`` takes it. ``parents``: upstream bridge
        addresses, root port first; ``sibling_of``: place it next to that function (VFs sit
        beside their PF)."""
        if class_code <= 0xFF:
            class_code <<= 16
        if sibling_of is not None:
            real = os.path.join(os.path.dirname(self.pci[sibling_of].path), address)
        else:
            real = self._real_dir(address, parents)
        sv = subsystem_vendor or vendor
        attrs = {
            "vendor": f"0x{vendor}",
            "device": f"0x{device}",
            "class": f"0x{class_code:06x}",
            "subsystem_vendor": f"0x{sv}",
            "subsystem_device": f"0x{subsystem_device}",
            "revision": "0x00",
            "numa_node": str(numa_node if numa_node is not None else -1),
            "modalias": (
                f"pci:v0000{vendor.upper()}d0000{device.upper()}sv0000{sv.upper()}"
                f"sd0000{subsystem_device.upper()}bc{class_code >> 16:02X}"
                f"sc{(class_code >> 8) & 0xFF:02X}i{class_code & 0xFF:02X}"
            ),
        }
        if acpi_index is not None:
            attrs["acpi_index"] = str(acpi_index)
        for name, value in attrs.items():
            self.write(f"{real}/{name}", value + "\n")
        self.symlink(f"/sys/bus/pci/devices/{address}", real)
        self.pci[address] = FakePci(address, real, vendor, device, class_code, None, numa_node)
        if driver:
            self.bind(address, driver)
        if iommu_group is not None:
            self.set_iommu_group(address, iommu_group)
        return address

    def add_bridge(
        self,
        address: str,
        *,
        parents: Sequence[str] = (),
        numa_node: int | None = None,
        vendor: str = "8086",
        device: str = "2030",
    ) -> str:
        """A PCI-to-PCI bridge (class 0x0604); pass it in ``parents`` of devices below it."""
        return self.add_pci(
            address,
            vendor=vendor,
            device=device,
            class_code=0x060400,
            driver="pcieport",
            numa_node=numa_node,
            parents=parents,
        )

    def bind(self, address: str, driver: str) -> None:
        dev = self.pci[address]
        self.unbind(address)
        drv_dir = f"/sys/bus/pci/drivers/{driver}"
        self.path(drv_dir).mkdir(parents=True, exist_ok=True)
        self.symlink(f"{dev.path}/driver", drv_dir)
        self.symlink(f"{drv_dir}/{address}", dev.path)
        dev.driver = driver

    def unbind(self, address: str) -> None:
        dev = self.pci[address]
        if dev.driver:
            self.remove(f"/sys/bus/pci/drivers/{dev.driver}/{address}")
        self.remove(f"{dev.path}/driver")
        dev.driver = None

    def set_iommu_group(self, address: str, group: int, *, noiommu: bool = False) -> None:
        dev = self.pci[address]
        gdir = f"/sys/kernel/iommu_groups/{group}"
        self.symlink(f"{dev.path}/iommu_group", gdir)
        self.symlink(f"{gdir}/devices/{address}", dev.path)
        if noiommu:
            self.write(f"{gdir}/name", "vfio-noiommu\n")
            self.add_dev(f"/dev/vfio/noiommu-{group}")
        else:
            self.add_dev(f"/dev/vfio/{group}")
        self.add_dev("/dev/vfio/vfio")

    def remove_pci(self, address: str) -> None:
        """Hot-unplug, as the kernel does it: the function's directory, every link to it and
        the ``/dev`` nodes of its char devices disappear.

        Mirrors ``device_del()`` (drivers/base/core.c) for the function and each class device
        under it: the ``/sys/class/<class>/<name>`` link goes (``device_remove_class_symlinks``)
        and devtmpfs deletes the node (``devtmpfs_delete_node``, drivers/base/devtmpfs.c) —
        ``/dev/infiniband/{uverbs,umad,issm}N`` for RDMA devices (their ``devnode`` callbacks
        put them under ``infiniband/``), ``/dev/<name>`` otherwise. ``rdma_cm`` is a misc
        device of the rdma_ucm module, not of the function: it stays.
        """
        for name in [n for n, a in self.aux.items() if a.parent == address]:
            self.remove_aux(name)
        for name in [n for n, parent in self.vdpa.items() if parent == address]:
            self.remove_vdpa(name)
        dev = self.pci.pop(address)
        real = self.path(dev.path)
        for dev_file in sorted(real.glob("**/dev")) if real.is_dir() else []:
            rel = dev_file.parent.relative_to(real).parts
            if len(rel) < 2 or not dev_file.is_file():
                continue
            cls, name = rel[-2], rel[-1]
            self.remove(f"/sys/class/{cls}/{name}")
            node = f"/dev/infiniband/{name}" if cls.startswith("infiniband") else f"/dev/{name}"
            self.remove(node)
        ib = real / "infiniband"
        for ibdev in sorted(p.name for p in ib.iterdir()) if ib.is_dir() else []:
            self.remove(f"/sys/class/infiniband/{ibdev}")
        for name in dev.netdevs:
            self.remove(f"/sys/class/net/{name}")
        if dev.driver:
            self.remove(f"/sys/bus/pci/drivers/{dev.driver}/{address}")
        self.remove(f"/sys/bus/pci/devices/{address}")
        self.remove(dev.path)

    # -- SR-IOV --------------------------------------------------------------------------------
    def add_sriov_pf(
        self,
        address: str,
        *,
        vendor: str,
        device: str,
        driver: str,
        totalvfs: int,
        numa_node: int | None = None,
        netdev: str | None = None,
        link_type: str = "ether",
        parents: Sequence[str] = (),
        iommu_group: int | None = None,
        class_code: int = 0x020000,
    ) -> str:
        """An SR-IOV capable PF (``sriov_totalvfs``, ``sriov_numvfs`` = 0 until VFs are added)."""
        self.add_pci(
            address,
            vendor=vendor,
            device=device,
            driver=driver,
            numa_node=numa_node,
            parents=parents,
            iommu_group=iommu_group,
            class_code=class_code,
        )
        path = self.pci[address].path
        self.write(f"{path}/sriov_totalvfs", f"{totalvfs}\n")
        self.write(f"{path}/sriov_numvfs", "0\n")
        if netdev:
            self.add_netdev(address, netdev, link_type=link_type)
        return address

    def add_vf(
        self,
        pf: str,
        index: int,
        address: str,
        *,
        device: str,
        driver: str | None,
        netdev: str | None = None,
        iommu_group: int | None = None,
        vendor: str | None = None,
        link_type: str = "ether",
    ) -> str:
        """A VF of ``pf`` with ``virtfn<index>``/``physfn`` links; bumps ``sriov_numvfs``."""
        pf_dev = self.pci[pf]
        self.add_pci(
            address,
            vendor=vendor or pf_dev.vendor,
            device=device,
            driver=driver,
            numa_node=pf_dev.numa_node,
            iommu_group=iommu_group,
            class_code=pf_dev.class_code,
            sibling_of=pf,
        )
        vf_path = self.pci[address].path
        self.symlink(f"{vf_path}/physfn", pf_dev.path)
        self.symlink(f"{pf_dev.path}/virtfn{index}", vf_path)
        pf_dev.vfs.append(address)
        self.write(f"{pf_dev.path}/sriov_numvfs", f"{len(pf_dev.vfs)}\n")
        if netdev:
            self.add_netdev(address, netdev, link_type=link_type)
        return address

    def set_numvfs(self, pf: str, count: int) -> None:
        """Write ``sriov_numvfs`` only (what ``echo N > sriov_numvfs`` shows before VFs exist)."""
        self.write(f"{self.pci[pf].path}/sriov_numvfs", f"{count}\n")

    def remove_vfs(self, pf: str) -> None:
        """Disable SR-IOV: every VF disappears and ``sriov_numvfs`` reads 0."""
        pf_dev = self.pci[pf]
        for index, vf in enumerate(list(pf_dev.vfs)):
            self.remove(f"{pf_dev.path}/virtfn{index}")
            self.remove_pci(vf)
        pf_dev.vfs.clear()
        self.write(f"{pf_dev.path}/sriov_numvfs", "0\n")

    # -- netdevs -------------------------------------------------------------------------------
    def add_netdev(
        self,
        address: str,
        name: str,
        *,
        link_type: str = "ether",
        up: bool = True,
        mac: str | None = None,
    ) -> str:
        """A netdev of a PCI function (or of an auxiliary device such as an SF)."""
        dev = self._function(address)
        ndir = f"{dev.path}/net/{name}"
        type_id = {"ether": 1, "infiniband": 32}.get(link_type, 1)
        self.write(f"{ndir}/type", f"{type_id}\n")
        self.write(f"{ndir}/ifindex", f"{self._ifindex}\n")
        self._ifindex += 1
        n = self._ifindex
        mac = mac or f"02:00:00:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"
        self.write(f"{ndir}/address", f"{mac}\n")
        self.symlink(f"/sys/class/net/{name}", ndir)
        dev.netdevs.append(name)
        self.set_link(name, up)
        return name

    def _function(self, address: str) -> FakePci | FakeAux:
        """A PCI function by address, or an auxiliary device by name."""
        return self.pci[address] if address in self.pci else self.aux[address]

    def _functions(self) -> list[FakePci | FakeAux]:
        return [*self.pci.values(), *self.aux.values()]

    def _netdev_dir(self, name: str) -> str:
        for dev in self._functions():
            if name in dev.netdevs:
                return f"{dev.path}/net/{name}"
        raise KeyError(f"no netdev {name}")

    def set_link(self, name: str, up: bool) -> None:
        ndir = self._netdev_dir(name)
        self.write(f"{ndir}/operstate", "up\n" if up else "down\n")
        self.write(f"{ndir}/carrier", "1\n" if up else "0\n")

    def remove_netdev(self, name: str) -> None:
        """The netdev leaves the host netns (e.g. moved into a pod)."""
        ndir = self._netdev_dir(name)
        self.remove(ndir)
        self.remove(f"/sys/class/net/{name}")
        for dev in self._functions():
            if name in dev.netdevs:
                dev.netdevs.remove(name)

    # -- RDMA ----------------------------------------------------------------------------------
    def add_rdma_cm(self) -> str:
        self.write("/sys/class/misc/rdma_cm/dev", "10:57\n")
        return self.add_dev("/dev/infiniband/rdma_cm")

    def add_rdma(
        self,
        address: str,
        ibdev: str,
        *,
        ports: int = 1,
        link_layer: str = "Ethernet",
        issm: bool | None = None,
        ucm: bool = False,
        rate: str = "100 Gb/sec (4X EDR)",
        fw_version: str = "22.39.1002",
        hca_type: str = "MT4119",
        counters: bool = True,
    ) -> str:
        """An RDMA device of a PCI function with its ports and char devices (uverbs per device,
        umad and — for InfiniBand, or when ``issm`` — issm per port). ``address`` may also
        name an auxiliary device (an SF has its own RDMA device)."""
        dev = self._function(address)
        idir = f"{dev.path}/infiniband/{ibdev}"
        guid_n = self._uverbs + 1
        self.write(f"{idir}/node_type", "1: CA\n")
        self.write(f"{idir}/node_guid", f"a088:c203:00{guid_n:02x}:0000\n")
        self.write(f"{idir}/sys_image_guid", f"a088:c203:00{guid_n:02x}:0000\n")
        self.write(f"{idir}/fw_ver", f"{fw_version}\n")
        self.write(f"{idir}/hca_type", f"{hca_type}\n")
        self.write(f"{idir}/board_id", "MT_0000000008\n")
        self.symlink(f"{idir}/device", dev.path)
        self.symlink(f"/sys/class/infiniband/{ibdev}", idir)
        with_issm = link_layer == "InfiniBand" if issm is None else issm
        for port in range(1, ports + 1):
            pdir = f"{idir}/ports/{port}"
            self.write(f"{pdir}/link_layer", f"{link_layer}\n")
            self.write(f"{pdir}/rate", f"{rate}\n")
            self.write(f"{pdir}/lid", "0x0\n" if link_layer == "Ethernet" else f"0x{port:x}\n")
            self.write(f"{pdir}/pkeys/0", "0xffff\n")
            if counters:
                for counter in (
                    "port_xmit_data",
                    "port_rcv_data",
                    "port_xmit_packets",
                    "port_rcv_packets",
                ):
                    self.write(f"{pdir}/counters/{counter}", "0\n")
            self.set_port_state(ibdev, port, active=True)
            self._add_class_char(dev.path, "infiniband_mad", f"umad{self._umad}", ibdev, port)
            if with_issm:
                self._add_class_char(dev.path, "infiniband_mad", f"issm{self._umad}", ibdev, port)
            self._umad += 1
        self._add_class_char(dev.path, "infiniband_verbs", f"uverbs{self._uverbs}", ibdev, None)
        self._uverbs += 1
        if ucm:
            self._add_class_char(dev.path, "infiniband_cm", f"ucm{self._ucm}", ibdev, None)
            self._ucm += 1
        self.write("/sys/class/infiniband_verbs/abi_version", "6\n")
        self.write("/sys/class/infiniband_mad/abi_version", "5\n")
        return ibdev

    def _add_class_char(
        self, dev_path: str, cls: str, name: str, ibdev: str, port: int | None
    ) -> None:
        cdir = f"{dev_path}/{cls}/{name}"
        self.write(f"{cdir}/ibdev", f"{ibdev}\n")
        self.write(f"{cdir}/dev", "231:0\n")
        if port is not None:
            self.write(f"{cdir}/port", f"{port}\n")
        if cls == "infiniband_verbs":
            self.write(f"{cdir}/abi_version", "1\n")
        self.symlink(f"{cdir}/device", dev_path)
        self.symlink(f"/sys/class/{cls}/{name}", cdir)
        self.add_dev(f"/dev/infiniband/{name}")

    def _ib_dir(self, ibdev: str) -> str:
        for dev in self._functions():
            candidate = f"{dev.path}/infiniband/{ibdev}"
            if self.path(candidate).is_dir():
                return candidate
        raise KeyError(f"no RDMA device {ibdev}")

    def set_port_state(self, ibdev: str, port: int, *, active: bool) -> None:
        """ACTIVE/LinkUp or DOWN/Disabled, in the kernel's ``"%d: %s"`` format."""
        pdir = f"{self._ib_dir(ibdev)}/ports/{port}"
        state, phys = (4, 5) if active else (1, 3)
        self.write(f"{pdir}/state", f"{state}: {_STATE_NAMES[state]}\n")
        self.write(f"{pdir}/phys_state", f"{phys}: {_PHYS_NAMES[phys]}\n")

    def set_port_counter(self, ibdev: str, port: int, counter: str, value: int) -> None:
        self.write(f"{self._ib_dir(ibdev)}/ports/{port}/counters/{counter}", f"{value}\n")

    # -- UIO / NPU -----------------------------------------------------------------------------
    def add_uio(self, address: str, index: int) -> str:
        dev = self.pci[address]
        (self.path(f"{dev.path}/uio/uio{index}")).mkdir(parents=True, exist_ok=True)
        return self.add_dev(f"/dev/uio{index}")

    def add_npu(
        self,
        address: str,
        *,
        device: str = "1220",
        numa_node: int | None = None,
        parents: Sequence[str] = (),
        index: int | None = None,
        driver: str = "rebellions",
        pools: str | None = None,
    ) -> str:
        """A Rebellions NPU function (vendor 1eff, class 0x1200) with its ``pools`` file and
        ``/dev/rblnN``. ``pools`` overrides the file content (to test broken files)."""
        if index is None:
            index = self._rbln
        self._rbln = max(self._rbln, index + 1)
        self.add_pci(
            address,
            vendor="1eff",
            device=device,
            class_code=0x120000,
            driver=driver,
            numa_node=numa_node,
            parents=parents,
        )
        path = self.pci[address].path
        content = (
            pools
            if pools is not None
            else (f"poolinfo - 0.1\nrbln{index}               0    4 1024  1\n")
        )
        self.write(f"{path}/pools", content)
        self.write(f"/sys/class/rebellions/rbln{index}/kernel_version", "1.3.73\n")
        self.add_dev(f"/dev/rbln{index}")
        return address

    # -- switchdev, Scalable Functions (auxiliary bus) -----------------------------------------
    def set_switchdev(self, netdev: str, *, port_name: str = "p0", switch_id: str = "") -> None:
        """Put the eswitch of ``netdev``'s function in switchdev mode as sysfs shows it: the
        uplink gets ``phys_port_name`` (``p0``) and a non-empty ``phys_switch_id``."""
        ndir = self._netdev_dir(netdev)
        self.write(f"{ndir}/phys_port_name", f"{port_name}\n")
        self.write(f"{ndir}/phys_switch_id", f"{switch_id or 'b8cef6000a1b2c3d'}\n")

    def add_aux_device(
        self, parent: str, name: str, *, driver: str | None = None, under: str | None = None
    ) -> str:
        """An auxiliary-bus device ``<driver>.<type>.<n>`` (``mlx5_core.eth.0``) whose real
        directory sits under its parent PCI function (or, nested, under the auxiliary device
        ``under``), linked from ``/sys/bus/auxiliary/devices`` and bound to ``driver``
        (default: the name without its index)."""
        base = self.aux[under].path if under else self.pci[parent].path
        real = f"{base}/{name}"
        self.path(real).mkdir(parents=True, exist_ok=True)
        self.write(f"{real}/uevent", f"DRIVER={driver or name.rsplit('.', 1)[0]}\n")
        drv = f"/sys/bus/auxiliary/drivers/{driver or name.rsplit('.', 1)[0]}"
        self.symlink(f"{real}/driver", drv)
        self.symlink(f"{drv}/{name}", real)
        self.symlink(f"{real}/subsystem", "/sys/bus/auxiliary")
        self.symlink(f"{SYS_AUX}/{name}", real)
        self.aux[name] = FakeAux(name, parent, real)
        return name

    def add_sf(
        self,
        parent: str,
        index: int,
        *,
        sfnum: int,
        netdev: str | None = "",
        link_type: str = "ether",
        rdma: str | None = None,
        driver: str = "mlx5_core",
    ) -> str:
        """A Scalable Function ``<driver>.sf.<index>`` of PCI function ``parent``, as
        ``devlink port add pci/<parent> flavour pcisf sfnum <sfnum>`` and activation leave it:

        * the auxiliary device (``index`` is the kernel's device index, unrelated to
          ``sfnum``, the user's SF number) with its ``sfnum`` file, bound to ``<driver>.sf``;
        * its netdev under it (default name ``<parent netdev>s<sfnum>``; ``None``: none, e.g.
          moved into a pod) and, with ``rdma``, its RDMA device and char devices under it;
        * its nested ``<driver>.eth.<index>`` / ``<driver>.rdma.<index>`` auxiliary devices;
        * when the parent's uplink is in switchdev mode, the SF representor netdev under the
          parent (``phys_port_name`` ``pf<n>sf<sfnum>``).
        """
        name = f"{driver}.sf.{index}"
        self.add_aux_device(parent, name, driver=f"{driver}.sf")
        sf = self.aux[name]
        sf.sfnum = sfnum
        self.write(f"{sf.path}/sfnum", f"{sfnum}\n")
        for sub in ("eth", "rdma"):
            nested = f"{driver}.{sub}.{index}"
            self.add_aux_device(parent, nested, driver=f"{driver}.{sub}", under=name)
            sf.nested.append(nested)
            self.aux.pop(nested)  # removed with the SF's directory
        pf = self.pci[parent]
        if netdev == "":
            netdev = f"{pf.netdevs[0]}s{sfnum}" if pf.netdevs else f"sf{sfnum}"
        if netdev:
            self.add_netdev(name, netdev, link_type=link_type)
        if rdma:
            self.add_rdma(
                name, rdma, link_layer="InfiniBand" if link_type == "infiniband" else "Ethernet"
            )
        uplink = next(
            (n for n in pf.netdevs if self.path(f"{pf.path}/net/{n}/phys_switch_id").exists()),
            None,
        )
        if uplink is not None:
            fn = int(parent[-1])
            rep = f"en{int(parent[5:7], 16)}f{fn}pf{fn}sf{sfnum}"  # udev's representor name
            self.add_netdev(parent, rep)
            self.write(f"{pf.path}/net/{rep}/phys_port_name", f"pf{fn}sf{sfnum}\n")
            switch_id = self.path(f"{pf.path}/net/{uplink}/phys_switch_id").read_text()
            self.write(f"{pf.path}/net/{rep}/phys_switch_id", switch_id)
            sf.representor = rep
        return name

    def remove_aux(self, name: str) -> None:
        """``devlink port del`` / hot-unplug of an auxiliary device: its directory (nested
        devices included), its bus and driver links, the class links and ``/dev`` nodes of
        what it carried (netdevs, RDMA char devices) and, for an SF, its representor."""
        aux = self.aux.pop(name)
        real = self.path(aux.path)
        for dev_file in sorted(real.glob("**/dev")) if real.is_dir() else []:
            rel = dev_file.parent.relative_to(real).parts
            if len(rel) >= 2 and dev_file.is_file() and rel[-2].startswith("infiniband"):
                self.remove(f"/sys/class/{rel[-2]}/{rel[-1]}")
                self.remove(f"/dev/infiniband/{rel[-1]}")
        ib = real / "infiniband"
        for ibdev in sorted(p.name for p in ib.iterdir()) if ib.is_dir() else []:
            self.remove(f"/sys/class/infiniband/{ibdev}")
        for netdev in aux.netdevs:
            self.remove(f"/sys/class/net/{netdev}")
        if aux.representor and aux.representor in self.pci[aux.parent].netdevs:
            self.remove_netdev(aux.representor)
        for each in (name, *aux.nested):
            self.remove(f"{SYS_AUX}/{each}")
            for link in sorted(self.path("/sys/bus/auxiliary/drivers").glob(f"*/{each}")):
                link.unlink()
        self.remove(aux.path)

    # -- vDPA ----------------------------------------------------------------------------------
    def add_vdpa(
        self,
        function: str,
        kind: str,
        *,
        name: str | None = None,
        vhost_index: int | None = None,
        netdev: str | None = None,
    ) -> str:
        """A vDPA device of PCI function ``function`` (``vdpa dev add mgmtdev pci/<vf> name
        <name>``) bound to ``vhost_vdpa`` (``kind="vhost"``: a ``vhost-vdpa-<m>`` class device
        under it and ``/dev/vhost-vdpa-<m>``, ``m`` counted independently of the vDPA device
        names) or ``virtio_vdpa`` (``kind="virtio"``: a ``virtio<k>`` device with netdev
        ``netdev`` under it); any other ``kind`` leaves it unbound."""
        name = name or f"vdpa{len(self.vdpa)}"
        real = f"{self.pci[function].path}/{name}"
        self.path(real).mkdir(parents=True, exist_ok=True)
        self.symlink(f"{real}/subsystem", "/sys/bus/vdpa")
        self.symlink(f"{SYS_VDPA}/{name}", real)
        self.vdpa[name] = function
        driver = VDPA_DRIVERS.get(kind)
        if driver is None:
            return name
        drv = f"/sys/bus/vdpa/drivers/{driver}"
        self.symlink(f"{real}/driver", drv)
        self.symlink(f"{drv}/{name}", real)
        if kind == "vhost":
            m = self._vhost_vdpa if vhost_index is None else vhost_index
            self._vhost_vdpa = max(self._vhost_vdpa, m + 1)
            cdir = f"{real}/vhost-vdpa-{m}"
            self.write(f"{cdir}/dev", f"508:{m}\n")
            self.symlink(f"/sys/class/vhost-vdpa/vhost-vdpa-{m}", cdir)
            self.add_dev(f"/dev/vhost-vdpa-{m}")
        else:
            k = len(list(self.path("/sys/bus/virtio/devices").glob("virtio*")))
            vdir = f"{real}/virtio{k}"
            self.symlink(f"{vdir}/driver", "/sys/bus/virtio/drivers/virtio_net")
            self.symlink(f"/sys/bus/virtio/devices/virtio{k}", vdir)
            if netdev:
                self.write(f"{vdir}/net/{netdev}/type", "1\n")
                self.write(f"{vdir}/net/{netdev}/operstate", "up\n")
                self.symlink(f"/sys/class/net/{netdev}", f"{vdir}/net/{netdev}")
        return name

    def remove_vdpa(self, name: str) -> None:
        """``vdpa dev del <name>``: the device, its driver and bus links, its vhost-vdpa class
        device and ``/dev`` node, its virtio device."""
        self.vdpa.pop(name)
        link = self.path(f"{SYS_VDPA}/{name}")
        real = link.resolve()
        for cdir in sorted(real.glob("vhost-vdpa-*")):
            self.remove(f"/sys/class/vhost-vdpa/{cdir.name}")
            self.remove(f"/dev/{cdir.name}")
        for vdir in sorted(real.glob("virtio*")):
            self.remove(f"/sys/bus/virtio/devices/{vdir.name}")
            for net in sorted((vdir / "net").glob("*")):
                self.remove(f"/sys/class/net/{net.name}")
        for drv in sorted(self.path("/sys/bus/vdpa/drivers").glob(f"*/{name}")):
            drv.unlink()
        link.unlink()
        shutil.rmtree(real)

    # -- devlink -------------------------------------------------------------------------------
    def set_devlink_info(self, address: str, **versions: str) -> None:
        """What ``devlink dev info pci/<address>`` reports (running versions, keys with ``.``
        spelled ``_``: ``fw_app_name="ICE OS Default Package"`` is ``fw.app.name``). Not a
        file: there is no sysfs view of it; test doubles of a plugin's devlink reader use it."""
        self.devlink_info[address] = {k.replace("_", "."): v for k, v in versions.items()}
