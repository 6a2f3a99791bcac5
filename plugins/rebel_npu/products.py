"""Rebellions PCI IDs: which product a device ID is, and which family (resource) it belongs to.

Vendor ``1eff``, PCI class ``0x1200``. Device IDs follow one pattern: the first hex digit is the
generation (``1`` = ATOM cards ``RBLN-CAxx``, ``2`` = REBEL cards ``RBLN-CRxx``), the next two
are the product number (``1220`` = CA22, ``2030`` = CR03) and the last is ``0`` for a physical
function and ``1`` for an SR-IOV virtual function. The early ``0010``/``0011`` IDs are ATOM too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FAMILIES", "REBELLIONS_VENDOR", "Product", "passthrough_name", "product_of"]

REBELLIONS_VENDOR = "1eff"
#: Family name -> resource name in the zero-config default (prefix ``rebellions.ai``).
FAMILIES = ("ATOM", "REBEL")

#: IDs named by upstream (configmap, operator, metrics exporter), PF and VF.
_KNOWN = {
    "0010": "RBLN-ATOM",
    "0011": "RBLN-ATOM",
    "1020": "RBLN-CA02",
    "1021": "RBLN-CA02",
    "1120": "RBLN-CA12",
    "1121": "RBLN-CA12",
    "1150": "RBLN-CA15",
    "1151": "RBLN-CA15",
    "1220": "RBLN-CA22",
    "1221": "RBLN-CA22",
    "1250": "RBLN-CA25",
    "1251": "RBLN-CA25",
    "2030": "RBLN-CR03",
    "2031": "RBLN-CR03",
}
#: The Rebellions NPU operator's names for NPUs bound to ``vfio-pci`` (its sandbox plugin).
_PASSTHROUGH = {"RBLN-CA12": "ATOM_PT", "RBLN-CA25": "ATOM_MAX_PT", "RBLN-CR03": "REBEL_PT"}
_PATTERN = re.compile(r"^(?P<gen>[12])(?P<num>[0-9]{2})[01]$")


@dataclass(frozen=True)
class Product:
    """What a device ID says: card name (``RBLN-CA22``), family (``ATOM``), VF or not, and
    whether the ID is one upstream names or only matches the ID pattern."""

    card: str
    family: str
    vf: bool
    known: bool


def product_of(device_id: str) -> Product | None:
    """The product of a Rebellions device ID (4 lower-case hex digits), None if not an NPU ID."""
    device_id = device_id.lower()
    vf = device_id.endswith("1")
    name = _KNOWN.get(device_id)
    if name is not None:
        family = "REBEL" if name.startswith("RBLN-CR") else "ATOM"
        return Product(name, family, vf, True)
    m = _PATTERN.match(device_id)
    if m is None:
        return None
    family, prefix = ("ATOM", "CA") if m["gen"] == "1" else ("REBEL", "CR")
    return Product(f"RBLN-{prefix}{m['num']}", family, vf, False)


def passthrough_name(product: Product, device_id: str) -> str:
    """The zero-config resource name (without prefix) of a product bound to ``vfio-pci``.

    The operator's names where it has one (``ATOM_PT`` for CA12, ``ATOM_MAX_PT`` for CA25,
    ``REBEL_PT`` for CR03), else ``<FAMILY>_<card>_PT`` as the operator README spells the
    others (``ATOM_CA22_PT``); the early ATOM IDs, which name no card, use the PF device ID
    (``ATOM_0010_PT``). A PF and its VFs share one name.
    """
    known = _PASSTHROUGH.get(product.card)
    if known is not None:
        return known
    model = product.card.removeprefix("RBLN-")
    if model == product.family:
        model = device_id.lower()[:3] + "0"
    return f"{product.family}_{model}_PT"
