"""Device-information files for Multus and the CNIs (NPWG device-info spec 1.1.0).

At Allocate the plugin writes one file per device of a netDevice or auxNetDevice pool:
``<dir>/<prefix>-<name>-<device ID>-device.json`` (``/`` in the resource name becomes ``-``),
read-only (0444), with exactly the bytes upstream's NAD client writes (Go struct field order)::

    {"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.2","rdma-device":"mlx5_3"}}
    {"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa0","driver":"vhost",
     "path":"/dev/vhost-vdpa-3","pci-address":"0000:65:00.2"}}

``rdma-device`` appears only for RDMA-capable VFs; a vDPA pool's VF gets the ``vdpa`` form
(``path`` only for vhost; ``driver`` holds the vDPA type, as upstream). Scalable Functions get
a file too, which upstream does not write and spec 1.1.0 has no type for (our extension)::

    {"type":"auxiliary","version":"1.1.0","auxiliary":{"auxiliary-device":"mlx5_core.sf.4",
     "pf-pci-address":"0000:03:00.0","rdma-device":"mlx5_2"}}

The directory (default
``/var/run/k8s.cni.cncf.io/devinfo/dp``) is a path in the plugin's own filesystem: the DaemonSet
mounts the host directory there; against a fake host (tests, ``devplugin demo``) the default
directory lives under the fake root instead. When serving starts, files left for our own
resources are removed (Multus looks files up by device ID, so a stale one would describe the
wrong pod's device).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "DEFAULT_DEVICE_INFO_DIR",
    "SPEC_VERSION",
    "DeviceInfoFiles",
    "aux_document",
    "pci_document",
    "vdpa_document",
]

log = logging.getLogger("devplugin.sriov_net.deviceinfo")

DEFAULT_DEVICE_INFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/dp"
SPEC_VERSION = "1.1.0"
_DEVICE_ID = r"(?:[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]|[\w-]+\.[\w-]+\.\d+)"  # PCI or SF


def _flat(name: str) -> str:
    return name.replace("/", "-")


def pci_document(pci_address: str, rdma_devices: Sequence[str] = ()) -> dict[str, Any]:
    pci = {"pci-address": pci_address}
    if rdma_devices:
        pci["rdma-device"] = ",".join(rdma_devices)
    return {"type": "pci", "version": SPEC_VERSION, "pci": pci}


def vdpa_document(pci_address: str, name: str, kind: str, path: str = "") -> dict[str, Any]:
    vdpa = {"parent-device": name, "driver": kind}
    if path:
        vdpa["path"] = path
    vdpa["pci-address"] = pci_address
    return {"type": "vdpa", "version": SPEC_VERSION, "vdpa": vdpa}


def aux_document(name: str, parent: str, rdma_devices: Sequence[str] = ()) -> dict[str, Any]:
    aux = {"auxiliary-device": name, "pf-pci-address": parent}
    if rdma_devices:
        aux["rdma-device"] = ",".join(rdma_devices)
    return {"type": "auxiliary", "version": SPEC_VERSION, "auxiliary": aux}


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


class DeviceInfoFiles:
    """Writes and cleans device-info files in one directory."""

    def __init__(self, directory: str = DEFAULT_DEVICE_INFO_DIR) -> None:
        self.directory = directory

    def path(self, resource: str, device_id: str) -> str:
        return os.path.join(self.directory, f"{_flat(resource)}-{_flat(device_id)}-device.json")

    @staticmethod
    def content(pci_address: str, rdma_devices: Sequence[str] = ()) -> bytes:
        return _encode(pci_document(pci_address, rdma_devices))

    def write(
        self,
        resource: str,
        device_id: str,
        rdma_devices: Sequence[str] = (),
        *,
        document: dict[str, Any] | None = None,
    ) -> str:
        """Replace the file of ``device_id`` atomically (the ``pci`` form, or ``document``);
        returns its path. Raises OSError."""
        target = self.path(resource, device_id)
        content = self.content(device_id, rdma_devices) if document is None else _encode(document)
        try:  # a VF handed out again: its file is already there and current (a cheap read)
            with open(target, "rb") as current:
                if current.read(len(content) + 1) == content:
                    return target
        except OSError:
            pass
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".devinfo-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return target

    def clean(self, resources: Iterable[str], older_than: float | None = None) -> list[str]:
        """Remove the files of ``resources`` (PCI and SF device IDs only) last written before
        ``older_than`` (a Unix time; None = all); returns the removed names."""
        patterns = [
            re.compile(rf"^{re.escape(_flat(r))}-{_DEVICE_ID}-device\.json$") for r in resources
        ]
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as err:
            log.warning("cannot list device-info directory %s: %s", self.directory, err)
            return []
        removed = []
        for name in names:
            if any(p.match(name) for p in patterns):
                path = os.path.join(self.directory, name)
                try:
                    if older_than is not None and os.lstat(path).st_mtime >= older_than:
                        continue
                    os.unlink(path)
                    removed.append(name)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    log.warning("cannot remove stale device-info file %s: %s", name, err)
        return removed
