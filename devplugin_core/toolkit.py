"""Optional helpers for PCI and network device plugins (public, versioned with the API).

What the shipped plugins share beyond :mod:`devplugin_core`: PCI details, the upstream
selector semantics of the NVIDIA/Intel network plugins (first pool and first selector win),
sriov-network-device-plugin conventions (``PCIDEVICE_*`` env, ``resourceList``), RDMA char
devices, VFIO nodes of vfio-pci functions, nested topology packing, and config-decoding
details.
"""

from __future__ import annotations

from ._allocation import KeyFn, prefer_nested
from ._config import DecodeContext, decode, encode, load_document
from ._errors import HostPathError
from ._model import extended_resource_name_error, natural_key, validate_resource_name
from ._pci import (
    SYS_PCI_DEVICES,
    SYS_PCI_DRIVERS,
    CharDevice,
    NetDevice,
    RdmaDevice,
    RdmaPort,
    bridges_of,
    rdma_char_devices_of,
)
from ._pcidp import (
    AcceleratorSelectors,
    ResourceEntry,
    additional_info,
    full_names,
    go_json,
    hex_ids,
    pci_addresses,
    pcidevice_env,
    resource_list,
    strings,
)
from ._rdma import RDMA_CM, REQUIRED_RDMA_NODES, rdma_nodes
from ._selectors import (
    Candidate,
    Filter,
    Pool,
    PoolAssignment,
    Selector,
    VfRange,
    assign,
    hex_id_warnings,
    match_flag,
    match_values,
    match_vf_ranges,
    parse_vf_range,
)
from ._vfio import IOMMU_GROUPS, VFIO_CONTAINER, read_iommu_group, vfio_info, vfio_nodes

__all__ = [
    "IOMMU_GROUPS",
    "RDMA_CM",
    "REQUIRED_RDMA_NODES",
    "SYS_PCI_DEVICES",
    "SYS_PCI_DRIVERS",
    "VFIO_CONTAINER",
    "AcceleratorSelectors",
    "Candidate",
    "CharDevice",
    "DecodeContext",
    "Filter",
    "HostPathError",
    "KeyFn",
    "NetDevice",
    "Pool",
    "PoolAssignment",
    "RdmaDevice",
    "RdmaPort",
    "ResourceEntry",
    "Selector",
    "VfRange",
    "additional_info",
    "assign",
    "bridges_of",
    "decode",
    "encode",
    "extended_resource_name_error",
    "full_names",
    "go_json",
    "hex_id_warnings",
    "hex_ids",
    "load_document",
    "match_flag",
    "match_values",
    "match_vf_ranges",
    "natural_key",
    "parse_vf_range",
    "pci_addresses",
    "pcidevice_env",
    "prefer_nested",
    "rdma_char_devices_of",
    "rdma_nodes",
    "read_iommu_group",
    "resource_list",
    "strings",
    "validate_resource_name",
    "vfio_info",
    "vfio_nodes",
]
