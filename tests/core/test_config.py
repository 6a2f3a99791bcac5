"""The Go-compatible config decoder: field paths, case-insensitive keys, warnings, fuzzing."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devplugin_core import ConfigError, one_or_many, option
from devplugin_core._config import load_document, parse_text
from devplugin_core.toolkit import decode, encode


@dataclass(frozen=True)
class Sel:
    vendors: tuple[str, ...] = option(default=())
    is_rdma: bool = option("isRdma", default=False)
    vdpa_type: str = option("vdpaType", default="", unsupported="vDPA is not supported yet")


@dataclass(frozen=True)
class Entry:
    resource_name: str = option("resourceName")
    count: int = option("count", default=1)
    ratio: float = option(default=0.5)
    selectors: tuple[Sel, ...] = option(decoder=one_or_many(Sel), default=())
    extra: dict[str, dict[str, str]] = option("additionalInfo", default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ConfigError("count", "must be >= 0", self.count)


@dataclass(frozen=True)
class Doc:
    entries: tuple[Entry, ...] = option("resourceList", default=())
    interval: int | None = option("periodicUpdateInterval", default=None)


def test_keys_match_case_insensitively_and_unknown_keys_warn():
    result = decode(
        Doc,
        {
            "ResourceList": [
                {
                    "RESOURCENAME": "a",
                    "Selectors": {"IsRdma": True, "vendors": ["15b3"]},
                    "kubeletRootDir": "/x",
                }
            ]
        },
    )
    entry = result.value.entries[0]
    assert entry.resource_name == "a" and entry.selectors == (Sel(("15b3",), True),)
    assert result.warnings == ["resourceList[0].kubeletRootDir: unknown key, ignored"]


def test_exact_key_wins_over_case_folded():
    assert decode(Sel, {"ISRDMA": False, "isRdma": True}).value.is_rdma is True
    assert decode(Sel, {"isRdma": True, "ISRDMA": False}).value.is_rdma is True


@pytest.mark.parametrize(
    "doc,field,text",
    [
        ({"resourceList": {}}, "resourceList", "must be a list"),
        ({"resourceList": [{}]}, "resourceList[0].resourceName", "is required"),
        (
            {"resourceList": [{"resourceName": 3}]},
            "resourceList[0].resourceName",
            "must be a string",
        ),
        (
            {"resourceList": [{"resourceName": "a", "count": 1.5}]},
            "resourceList[0].count",
            "must be an integer",
        ),
        (
            {"resourceList": [{"resourceName": "a", "count": True}]},
            "resourceList[0].count",
            "must be an integer",
        ),
        (
            {"resourceList": [{"resourceName": "a", "count": 2**70}]},
            "resourceList[0].count",
            "out of range",
        ),
        ({"resourceList": [{"resourceName": "a", "count": -1}]}, "resourceList[0].count", ">= 0"),
        (
            {"resourceList": [{"resourceName": "a", "selectors": []}]},
            "resourceList[0].selectors",
            "at least one",
        ),
        (
            {"resourceList": [{"resourceName": "a", "selectors": [{}, {"isRdma": "yes"}]}]},
            "resourceList[0].selectors[1].isRdma",
            "boolean",
        ),
        (
            {"resourceList": [{"resourceName": "a", "selectors": {"vdpaType": "vhost"}}]},
            "resourceList[0].selectors.vdpaType",
            "not supported",
        ),
        (
            {"resourceList": [{"resourceName": "a", "additionalInfo": {"*": {"k": 1}}}]},
            'resourceList[0].additionalInfo["*"]["k"]',
            "must be a string",
        ),
        (
            {"resourceList": [{"resourceName": "a", "ratio": "x"}]},
            "resourceList[0].ratio",
            "must be a number",
        ),
        (
            {"resourceList": [{"resourceName": "a", "ratio": 10**400}]},
            "resourceList[0].ratio",
            "number out of range",
        ),
        (
            {"resourceList": [{"resourceName": "a", "additionalInfo": {"*": {"k": "\ud800"}}}]},
            'resourceList[0].additionalInfo["*"]["k"]',
            "valid Unicode",
        ),
        (
            {"resourceList": [{"resourceName": "x\udfff"}]},
            "resourceList[0].resourceName",
            "Unicode",
        ),
        ([], "", "must be an object"),
    ],
)
def test_errors_name_the_field_path(doc, field, text):
    with pytest.raises(ConfigError) as err:
        decode(Doc, doc)
    assert err.value.field == field
    assert text in str(err.value)
    assert str(err.value).startswith(field or "<document>")


def test_null_means_default_like_go():
    doc = decode(
        Doc,
        {"resourceList": [{"resourceName": "a", "count": None}], "periodicUpdateInterval": None},
    ).value
    assert doc.entries[0].count == 1 and doc.interval is None


def test_unsupported_key_with_empty_value_is_fine():
    assert decode(Sel, {"vdpaType": ""}).value == Sel()


def test_encode_round_trips_keys():
    doc = decode(Doc, {"resourceList": [{"resourceName": "a", "selectors": {"isRdma": True}}]})
    assert encode(doc.value)["resourceList"][0]["selectors"] == [{"vendors": [], "isRdma": True}]


def test_load_document_json_yaml_and_errors(tmp_path):
    good = tmp_path / "c.json"
    good.write_text('{"resourceList": []}')
    assert load_document(good).data == {"resourceList": []}
    yml = tmp_path / "c.yaml"
    yml.write_text("resourceList:\n  - resourceName: a\n")
    assert load_document(yml).data == {"resourceList": [{"resourceName": "a"}]}
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceList": [}')
    with pytest.raises(ConfigError) as err:
        load_document(bad)
    assert str(bad) in str(err.value) and "line 1" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_document(tmp_path / "missing.json")
    assert "cannot read" in str(err.value)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError):
        load_document(binary)


@pytest.mark.parametrize("name", ["x.json", "x.yaml"])
def test_integers_past_the_digit_limit_are_a_config_error(name):
    with pytest.raises(ConfigError, match="invalid"):
        parse_text(
            '{"count": ' + "1" * 5000 + "}" if name.endswith("json") else "count: " + "1" * 5000,
            name,
        )


def test_deep_nesting_is_a_config_error():
    with pytest.raises(ConfigError):
        parse_text("[" * 100000 + "]" * 100000)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceList",
                    "resourceName",
                    "count",
                    "selectors",
                    "isRdma",
                    "vendors",
                    "vdpaType",
                    "additionalInfo",
                    "x",
                    "RESOURCENAME",
                    "../../etc",
                    "é",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_document_decodes_or_raises_config_error_naming_a_field(doc):
    try:
        decode(Doc, doc)
    except ConfigError as err:
        assert err.field is not None
        assert str(err)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_config_error(text):
    with contextlib.suppress(ConfigError):
        parse_text(text, "x.json")


def test_json_roundtrip_of_fixture_style_document():
    raw = json.dumps(
        {"resourceList": [{"resourceName": "r", "selectors": [{"vendors": ["8086"]}]}]}
    )
    assert decode(Doc, json.loads(raw)).value.entries[0].selectors[0].vendors == ("8086",)
