"""Hypothesis-generated configs for each plugin, through the path ``devplugin validate`` and
every (re)load take: JSON text -> parse -> decode -> build the resources.

* valid documents (generated from each plugin's schema) are accepted;
* the same documents with one part made hostile — wrong types, huge and non-finite numbers,
  odd unicode (lone surrogates, bidi overrides, BOMs), path-traversal strings, NULs, deleted
  or unknown keys — and arbitrary JSON values are either accepted or refused with a
  :class:`ConfigError` whose message names the field (the mutated one or one of its parents or
  children when the mutation is a wrong type);
* arbitrary bytes as a config file are refused with a ConfigError, never anything else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devplugin_core import ConfigError, PluginContext
from devplugin_core._config import parse_text
from devplugin_core._hostfs import HostFS
from devplugin_core._runtime import load_config
from devplugin_core.testing import FakeHost
from devplugin_core.toolkit import decode

from .cases import CASES, Case, case_ids

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)

# -- hostile values -----------------------------------------------------------------------------
TRAVERSAL = [
    "../../etc/shadow",
    "/dev/../etc/passwd",
    "..",
    "/",
    "/dev/infiniband/../../../root/.ssh",
    "..%2f..%2fetc",
    "~root/.ssh",
    "/proc/self/root/etc/shadow",
    "\\..\\..\\windows",
]
ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eevil\u202c",
    "\ufeffbom",
    "\u200bzero\u200bwidth",
    "名前",
    "résumé",
    "😀",
    "\ud800",
    "x\udfffy",
    "\n\r\t",
    "x" * 5000,
    "rdma/../x",
    "0x15B3",
    "NaN",
]
NUMBERS = [
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    10**400,
    -(10**400),
    1e308,
    -1e308,
    5e-324,
    math.inf,
    -math.inf,
    math.nan,
    0.5,
    -0.0,
]
surrogates = st.characters(categories=["Cs"])
odd_strings = st.one_of(
    st.sampled_from(TRAVERSAL + ODD_TEXT),
    st.text(max_size=30),
    st.text(st.one_of(surrogates, st.characters()), max_size=10),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NUMBERS),
    st.integers(),
    st.floats(),
    odd_strings,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_strings, inner, max_size=4)
    ),
    max_leaves=12,
)

# -- valid documents per plugin ---------------------------------------------------------------
hex_id = st.from_regex(r"[0-9a-f]{4}", fullmatch=True)
pci_address = st.from_regex(r"0000:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", fullmatch=True)
ifname = st.from_regex(r"[a-z][a-z0-9]{1,12}", fullmatch=True)
word = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_]{0,20}[A-Za-z0-9])?", fullmatch=True)
pool_name = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,20}[A-Za-z0-9])?", fullmatch=True)
prefix = st.sampled_from(["rdma", "example.com", "nvidia.com", "intel.com", "rebellions.ai"])
abs_path = st.lists(
    st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(lambda p: p not in (".", "..")),
    min_size=1,
    max_size=4,
).map(lambda parts: "/" + "/".join(parts))
some = st.lists  # alias for readability below


def _optional(**fields: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    return fields


rdma_entry = st.fixed_dictionaries(
    {
        "resourceName": word,
        "rdmaHcaMax": st.integers(0, 100_000),
        "selectors": st.fixed_dictionaries(
            {"vendors": some(hex_id, min_size=1, max_size=3)},
            optional=_optional(
                deviceIDs=some(hex_id, max_size=3),
                drivers=some(st.sampled_from(["mlx5_core", "mlx4_core", "bnxt_en"]), max_size=2),
                ifNames=some(ifname, max_size=3),
                linkTypes=some(st.sampled_from(["ether", "infiniband"]), max_size=2),
            ),
        ),
    },
    optional=_optional(resourcePrefix=prefix, excludeTopology=st.booleans()),
)
rdma_document = st.fixed_dictionaries(
    {"configList": some(rdma_entry, min_size=1, max_size=4, unique_by=lambda e: e["resourceName"])},
    optional=_optional(
        periodicUpdateInterval=st.integers(0, 86_400),
        healthCheckInterval=st.floats(0, 300),
    ),
)

vf_range = st.tuples(st.integers(0, 60), st.integers(0, 3)).map(lambda t: f"#{t[0]}-{t[0] + t[1]}")
net_selector = st.fixed_dictionaries(
    {},
    optional=_optional(
        vendors=some(hex_id, max_size=2),
        devices=some(hex_id, max_size=2),
        drivers=some(st.sampled_from(["iavf", "vfio-pci", "mlx5_core", "igb_uio"]), max_size=2),
        pciAddresses=some(pci_address, max_size=2),
        pfNames=some(st.tuples(ifname, st.one_of(st.just(""), vf_range)).map("".join), max_size=2),
        rootDevices=some(pci_address, max_size=2),
        linkTypes=some(st.sampled_from(["ether", "infiniband"]), max_size=1),
        isRdma=st.booleans(),
        needVhostNet=st.booleans(),
    ),
)
accel_selector = st.fixed_dictionaries(
    {},
    optional=_optional(
        vendors=some(hex_id, max_size=2),
        devices=some(hex_id, max_size=2),
        drivers=some(st.sampled_from(["vfio-pci", "rebellions"]), max_size=1),
        pciAddresses=some(pci_address, max_size=2),
    ),
)
info_table = st.dictionaries(
    st.one_of(st.just("*"), pci_address),
    st.dictionaries(
        word,
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
        max_size=2,
    ),
    max_size=2,
)


def _pool(selectors: st.SearchStrategy[Any], device_type: str | None) -> st.SearchStrategy[Any]:
    required: dict[str, st.SearchStrategy[Any]] = {
        "resourceName": pool_name,
        "selectors": st.one_of(selectors, some(selectors, min_size=1, max_size=2)),
    }
    if device_type:
        required["deviceType"] = st.just(device_type)
    return st.fixed_dictionaries(
        required,
        optional=_optional(
            resourcePrefix=prefix,
            excludeTopology=st.booleans(),
            additionalInfo=info_table,
        ),
    )


sriov_pool = st.one_of(
    _pool(net_selector, None),
    _pool(net_selector, "netDevice"),
    _pool(accel_selector, "accelerator"),
).flatmap(
    lambda pool: st.fixed_dictionaries(
        {k: st.just(v) for k, v in pool.items()},
        optional=_optional(
            checkHealthOnPf=st.booleans(),
            checkHealthOnDeviceExist=st.booleans(),
            allocationPolicy=st.sampled_from(["spread", "packed"]),
        ),
    )
)
sriov_document = st.fixed_dictionaries(
    {
        "resourceList": some(
            sriov_pool,
            min_size=1,
            max_size=4,
            unique_by=lambda p: (p.get("resourcePrefix", "intel.com"), p["resourceName"]),
        )
    }
)

npu_pool = _pool(accel_selector, "accelerator")
npu_document = st.fixed_dictionaries(
    {},
    optional=_optional(
        resourceList=some(npu_pool, max_size=3, unique_by=lambda p: p["resourceName"]),
        rblnStatHostPath=st.one_of(st.just(""), abs_path),
        rblnSmiHostPath=st.one_of(st.just(""), abs_path),
        rblnSmiPath=st.one_of(st.just(""), abs_path),
        rsdGroups=st.sampled_from(["auto", "create", "off"]),
        rsdLockFile=abs_path,
        rsdTimeout=st.floats(0.1, 60),
        rblnSmiTimeout=st.floats(0.1, 60),
        rblnSmiInterval=st.one_of(st.just(0), st.floats(0.1, 3600)),
        health=st.fixed_dictionaries(
            {},
            optional=_optional(
                interval=st.floats(0.05, 60),
                recoverAfter=st.integers(1, 100),
                useRblnSmi=st.booleans(),
                healthyStatuses=some(word, min_size=1, max_size=3),
                maxTemperatureCelsius=st.floats(0, 200),
            ),
        ),
    ),
)

VALID = {"rdma-shared": rdma_document, "sriov-net": sriov_document, "rebel-npu": npu_document}

# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> PluginContext:
    host = FakeHost(tmp_path_factory.mktemp("fuzz-host"))
    return PluginContext(host=HostFS(host.root))


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a decoded config (dataclasses, tuples, mappings)."""
    if isinstance(value, str):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from strings_in(getattr(value, f.name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            yield from strings_in(item)


def validate(case: Case, document: Any, context: PluginContext) -> list[str]:
    """What ``devplugin validate`` does, from JSON text: returns the warnings. An accepted
    config must hold only text the kubelet's protobuf messages can carry."""
    text = json.dumps(document)  # NaN/Infinity as Python writes them; surrogates escaped
    result = decode(case.spec.config_model, parse_text(text, "config.json"))
    case.spec.make(result.value, context)
    for value in strings_in(result.value):
        value.encode("utf-8")  # raises on an unpaired surrogate
        assert "\0" not in value
    return result.warnings


def components(path: str) -> list[str]:
    """``a.b[0]["*"].c`` -> ``["a", "b", "0", "*", "c"]`` (compare paths, not spellings)."""
    out = []
    for part in re.findall(r'\[("(?:[^"\\]|\\.)*"|[^\]]*)\]|([^.\[\]]+)', path):
        bracket, plain = part
        if bracket.startswith('"'):
            out.append(json.loads(bracket))
        elif bracket:
            out.append(bracket)
        else:
            out.append(plain)
    return out


def locations(document: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every location in ``document``: the root, object members and list items."""
    yield path
    if isinstance(document, dict):
        for key, value in document.items():
            yield from locations(value, (*path, str(key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from locations(value, (*path, str(index)))


def _get(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


def render(path: tuple[str, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


@st.composite
def mutated(draw: st.DrawFn, case: Case) -> tuple[Any, tuple[str, ...], str]:
    """A valid document of ``case`` with one hostile change: (document, where, what)."""
    document = draw(VALID[case.name])
    where = draw(st.sampled_from(list(locations(document))))
    what = draw(st.sampled_from(["replace", "delete", "add_key", "rename_key", "wrap"]))
    if not where:
        return draw(json_values), where, "replace"
    parent = _get(document, where[:-1])
    key: Any = int(where[-1]) if isinstance(parent, list) else where[-1]
    if what == "delete" and isinstance(parent, dict):
        del parent[key]
    elif what == "add_key" and isinstance(parent, dict):
        parent[draw(odd_strings)] = draw(json_values)
        where = where[:-1]
    elif what == "rename_key" and isinstance(parent, dict):
        parent[draw(st.sampled_from([key.upper(), key.lower(), key + "\u200b", key[::-1]]))] = (
            parent.pop(key)
        )
        where = where[:-1]
    elif what == "wrap":
        parent[key] = [parent[key]]
    else:
        what = "replace"
        parent[key] = draw(json_values)
    return document, where, what


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def check_refusal(err: ConfigError, where: tuple[str, ...], what: str, original: Any) -> None:
    """The message names a field, and for a type change the field is the changed one or a
    parent or child of it."""
    message = str(err)
    if where:
        assert err.field, f"no field named: {message}"
    assert (err.field or "<document>") in message, message
    if what in ("replace", "wrap") and where:
        got = components(err.field)
        want = list(where)
        related = got[: len(want)] == want or want[: len(got)] == got
        if _kind(original) in ("str", "number", "bool") and not related:
            # a scalar changed; the refusal may come from a cross-field check naming a
            # sibling of the same object (e.g. "selectors" after "vendors" was emptied)
            assert got[: len(want) - 1] == want[:-1], (err.field, render(where), message)


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=case_ids)
@FUZZ
@given(data=st.data())
def test_valid_configs_are_accepted(
    case: Case, context: PluginContext, data: st.DataObject
) -> None:
    document = data.draw(VALID[case.name])
    validate(case, document, context)


@pytest.mark.soak
@pytest.mark.parametrize("case", CASES, ids=case_ids)
@settings(FUZZ, max_examples=int(os.environ.get("DEVPLUGIN_FUZZ_EXAMPLES") or 400))
@given(data=st.data())
def test_hostile_configs_fail_only_with_config_errors_naming_the_field(
    case: Case, context: PluginContext, data: st.DataObject
) -> None:
    document, where, what = data.draw(mutated(case))
    original = None
    try:
        validate(case, document, context)
    except ConfigError as err:
        if where and what in ("replace", "wrap"):
            original = _get(document, where)
            if what == "wrap" and isinstance(original, list) and original:
                original = original[0]
        check_refusal(err, where, what, original)


@pytest.mark.parametrize("case", CASES, ids=case_ids)
@FUZZ
@given(document=json_values)
def test_arbitrary_json_fails_only_with_config_errors(
    case: Case, context: PluginContext, document: Any
) -> None:
    try:
        validate(case, document, context)
    except ConfigError as err:
        assert (err.field or "<document>") in str(err)


@pytest.mark.parametrize("case", CASES, ids=case_ids)
@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.sampled_from(
            [
                b"{" * 100_000,
                b"[" * 5000 + b"]" * 5000,
                b'{"a": ' + b"1" * 5000 + b"}",
                b"\xff\xfe{}",
                b"\xef\xbb\xbf{}",
                b"key: [unclosed",
                b"- a\n- b\n",
                b"!!python/object:os.system ls",
                b"&a [*a]",
            ]
        ),
    )
)
def test_config_files_of_arbitrary_bytes_fail_only_with_config_errors(
    case: Case, context: PluginContext, tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = Path(tmp_path_factory.getbasetemp()) / f"fuzz-{case.name}.json"
    path.write_bytes(raw)
    try:
        loaded = load_config(case.spec, str(path))
        case.spec.make(loaded.config, context)
    except ConfigError as err:
        assert str(path) in str(err) or err.field, str(err)


# -- values the fuzzers found or that must always be covered ---------------------------------
BASE: dict[str, dict[str, Any]] = {
    "rdma-shared": {
        "configList": [{"resourceName": "a", "rdmaHcaMax": 1, "selectors": {"vendors": ["15b3"]}}]
    },
    "sriov-net": {"resourceList": [{"resourceName": "a", "selectors": {"vendors": ["8086"]}}]},
    "rebel-npu": {"resourceList": [{"resourceName": "a", "selectors": {"vendors": ["1eff"]}}]},
}
KNOWN = [
    ("rdma-shared", "healthCheckInterval", 10**400, "healthCheckInterval"),
    ("rdma-shared", "periodicUpdateInterval", math.nan, "periodicUpdateInterval"),
    ("rdma-shared", "configList.0.rdmaHcaMax", 2**64, "configList[0].rdmaHcaMax"),
    ("rdma-shared", "configList.0.rdmaHcaMax", 1e308, "configList[0].rdmaHcaMax"),
    ("rdma-shared", "configList.0.resourceName", "\ud800", "configList[0].resourceName"),
    ("rdma-shared", "configList.0.resourceName", "../../etc", "configList[0].resourceName"),
    ("rdma-shared", "configList.0.resourcePrefix", "../x", "configList[0].resourcePrefix"),
    (
        "rdma-shared",
        "configList.0.selectors.ifNames",
        ["ib\x00"],
        "configList[0].selectors.ifNames[0]",
    ),
    (
        "sriov-net",
        "resourceList.0.additionalInfo",
        {"*": {"k": "\ud800"}},
        'resourceList[0].additionalInfo["*"]["k"]',
    ),
    ("sriov-net", "resourceList.0.resourceName", "../../x", "resourceList[0].resourceName"),
    ("sriov-net", "resourceList.0.resourcePrefix", "\u202eevil", "resourceList[0].resourcePrefix"),
    ("sriov-net", "resourceList.0.deviceType", "AuxNetDevice", "resourceList[0].deviceType"),
    (
        "sriov-net",
        "resourceList.0.selectors.pfNames",
        ["p0#0-x"],
        "resourceList[0].selectors.pfNames[0]",
    ),
    (
        "sriov-net",
        "resourceList.0.selectors.pciAddresses",
        [10**400],
        "resourceList[0].selectors.pciAddresses[0]",
    ),
    ("rebel-npu", "rblnStatHostPath", "../../etc/shadow", "rblnStatHostPath"),
    ("rebel-npu", "rblnSmiHostPath", "/usr/bin/../../etc/shadow", "rblnSmiHostPath"),
    ("rebel-npu", "rblnSmiPath", "relative/rbln-smi", "rblnSmiPath"),
    ("rebel-npu", "rsdLockFile", "/run/../etc/lock", "rsdLockFile"),
    ("rebel-npu", "rsdTimeout", 10**400, "rsdTimeout"),
    ("rebel-npu", "rsdGroups", "\ud800", "rsdGroups"),
    ("rebel-npu", "health", {"interval": math.nan}, "health.interval"),
    ("rebel-npu", "health", {"recoverAfter": 2**64}, "health.recoverAfter"),
    (
        "rebel-npu",
        "resourceList.0.additionalInfo",
        {"*": {"\ud800": "v"}},
        'resourceList[0].additionalInfo["*"]',
    ),
]


@pytest.mark.parametrize(
    ("plugin", "where", "value", "field"), KNOWN, ids=[f"{k[0]}:{k[1]}" for k in KNOWN]
)
def test_known_hostile_values_are_refused_naming_the_field(
    plugin: str, where: str, value: Any, field: str, context: PluginContext
) -> None:
    case = next(c for c in CASES if c.name == plugin)
    document = json.loads(json.dumps(BASE[plugin]))
    *parents, last = where.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    with pytest.raises(ConfigError) as caught:
        validate(case, document, context)
    err = caught.value
    assert err.field == field, str(err)
    assert field in str(err)
    str(err).encode("utf-8")  # the message itself is printable anywhere
