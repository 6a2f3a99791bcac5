"""Container Device Interface (CDI) specs written by the plugin itself.

With ``--cdi-dir`` each resource gets one spec file ``devplugin-<plugin>-<vendor>_<class>.json``
(kind ``<resource prefix>/<resource name>``) holding one CDI device per distinct
:attr:`Device.cdi_name` whose edits are non-empty. Allocate then answers with the CDI names, both
as the ``cdi.k8s.io/...`` annotation (what containerd and CRI-O act on) and as ``cdi_devices``
(kubelet >= 1.28), instead of raw device nodes and mounts. Files are written atomically and
only our own files (this plugin's prefix) are ever removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._model import ContainerEdits, Device

__all__ = ["CDI_SPEC_VERSION", "CdiKind", "CdiWriter", "cdi_kind", "cdi_safe_name"]

log = logging.getLogger("devplugin.cdi")

#: Only device nodes (with hostPath), mounts and env are used: 0.5.0 is the minimum for them.
CDI_SPEC_VERSION = "0.5.0"
ANNOTATION_PREFIX = "cdi.k8s.io/"
_BAD_VC = re.compile(r"[^A-Za-z0-9_.\-]")
_BAD_NAME = re.compile(r"[^A-Za-z0-9_.:\-]")


def _vendor_or_class(text: str) -> str:
    clean = _BAD_VC.sub("_", text)
    if not clean[:1].isalpha():
        clean = "x" + clean
    if not clean[-1:].isalnum():
        clean += "0"
    return clean


def cdi_safe_name(text: str) -> str:
    """A valid CDI device name for ``text`` (alphanumerics and ``_.:-``, alnum at both ends)."""
    clean = _BAD_NAME.sub("_", text) or "0"
    if not clean[0].isalnum():
        clean = "d" + clean
    if not clean[-1].isalnum():
        clean += "0"
    return clean


@dataclass(frozen=True)
class CdiKind:
    """CDI ``vendor/class`` of one resource and where its spec lives."""

    vendor: str
    cls: str

    @property
    def kind(self) -> str:
        return f"{self.vendor}/{self.cls}"

    def qualified(self, name: str) -> str:
        return f"{self.kind}={cdi_safe_name(name)}"

    @property
    def annotation_key(self) -> str:
        key = f"devplugin_{self.vendor}_{self.cls}"
        if len(key) > 63:
            digest = hashlib.sha256(key.encode()).hexdigest()[:8]
            key = f"{key[:54]}_{digest}"
        return ANNOTATION_PREFIX + key


def cdi_kind(resource_name: str) -> CdiKind:
    """The CDI kind for an extended resource name (``intel.com/sriov`` -> ``intel.com/sriov``)."""
    vendor, _, cls = resource_name.partition("/")
    return CdiKind(_vendor_or_class(vendor), _vendor_or_class(cls))


def annotate(kind: CdiKind, names: Sequence[str]) -> ContainerEdits:
    """The Allocate edits that request CDI devices ``names`` of ``kind``."""
    qualified = list(dict.fromkeys(kind.qualified(n) for n in names))
    if not qualified:
        return ContainerEdits()
    return ContainerEdits(
        annotations={kind.annotation_key: ",".join(qualified)}, cdi_devices=tuple(qualified)
    )


class CdiWriter:
    """Writes and removes this plugin's CDI spec files in ``directory``."""

    def __init__(self, directory: str, plugin: str) -> None:
        self.directory = directory
        self.prefix = f"devplugin-{re.sub(r'[^A-Za-z0-9_-]', '_', plugin)}-"
        self._written: dict[str, str] = {}

    def path_for(self, kind: CdiKind) -> str:
        return os.path.join(self.directory, f"{self.prefix}{kind.vendor}_{kind.cls}.json")

    @staticmethod
    def spec(kind: CdiKind, devices: Iterable[Device]) -> dict[str, object]:
        """The spec document: one CDI device per distinct cdi_name with non-empty edits (a
        device's own edits, and each of its parts under the part's cdi_name)."""
        entries: dict[str, dict[str, object]] = {}
        for device in devices:
            units = [(device.cdi_name, device.edits)]
            units += [(p.cdi_name, p.edits) for p in device.parts]
            for cdi_name, own in units:
                edits = ContainerEdits(device_nodes=own.device_nodes, mounts=own.mounts)
                if not edits:
                    continue
                name = cdi_safe_name(cdi_name)
                entries.setdefault(name, {"name": name, "containerEdits": edits.to_cdi()})
        return {
            "cdiVersion": CDI_SPEC_VERSION,
            "kind": kind.kind,
            "devices": list(entries.values()),
        }

    def write(self, kind: CdiKind, devices: Iterable[Device]) -> str | None:
        """Write the spec if its content changed (atomic rename). Returns the path written."""
        path = self.path_for(kind)
        document = self.spec(kind, devices)
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        if self._written.get(path) == text:
            return None
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.prefix}", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        self._written[path] = text
        log.info("wrote CDI spec %s (%d devices)", path, len(document["devices"]))  # type: ignore[arg-type]
        return path

    def write_all(self, jobs: Iterable[tuple[CdiKind, Iterable[Device]]]) -> None:
        """:meth:`write` for each (kind, devices) (blocking)."""
        for kind, devices in jobs:
            self.write(kind, devices)

    def cleanup(self, keep: Iterable[CdiKind] = ()) -> list[str]:
        """Remove this plugin's spec files except those of ``keep``; returns removed paths."""
        keep_paths = {self.path_for(k) for k in keep}
        removed = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        for name in names:
            path = os.path.join(self.directory, name)
            if name.startswith(self.prefix) and name.endswith(".json") and path not in keep_paths:
                os.unlink(path)
                self._written.pop(path, None)
                removed.append(path)
                log.info("removed stale CDI spec %s", path)
        return removed
