"""Typed config models and a Go-compatible decoder for upstream JSON (and YAML) config files.

Plugins describe their config as frozen dataclasses whose fields are declared with
:func:`option`. :func:`decode` turns a parsed document into those dataclasses the way Go's
``encoding/json`` reads upstream configs — keys match case-insensitively (operators emit
``"IsRdma"``), ``null`` leaves the default, integers must be integers — and adds what Go never did:

* unknown keys are reported as warnings that name the key and its path;
* keys marked ``unsupported=...`` are fatal when set (silently ignoring a selector would make a
  pool larger than the operator asked for);
* every error is a :class:`~devplugin_core._errors.ConfigError` naming the field path and value.

Validation that needs more than types lives in the model's ``__post_init__``; it raises
``ConfigError`` with a field name relative to the model and :func:`decode` prefixes the path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from ._errors import ConfigError

__all__ = [
    "ConfigDocument",
    "DecodeContext",
    "DecodeResult",
    "decode",
    "encode",
    "load_document",
    "one_or_many",
    "option",
]

T = TypeVar("T")
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_INT64_MAX = 2**63 - 1
_MISSING = dataclasses.MISSING


def option(
    key: str | None = None,
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | Any = _MISSING,
    doc: str = "",
    unsupported: str | None = None,
    decoder: Callable[[Any, str, DecodeContext], Any] | None = None,
) -> Any:
    """Declare a config field.

    ``key``: the JSON key (defaults to the attribute name); matched case-insensitively.
    ``doc``: one line for ``devplugin validate`` and the docs.
    ``unsupported``: the field is recognised but not implemented; setting it is an error that
    says so (the text explains why / what to use instead).
    ``decoder``: ``f(value, path, ctx) -> decoded`` replacing the type-driven decoding.
    """
    metadata = {"key": key, "doc": doc, "unsupported": unsupported, "decoder": decoder}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    if default is not _MISSING:
        return dataclasses.field(default=default, metadata=metadata)
    return dataclasses.field(metadata=metadata)


@dataclasses.dataclass
class DecodeResult(typing.Generic[T]):
    """A decoded model plus the warnings (unknown keys) met on the way."""

    value: T
    warnings: list[str]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "object",
    }.get(type(value), type(value).__name__)


def _is_set(value: Any) -> bool:
    return value not in (None, "", False, 0) and value != [] and value != {}


class DecodeContext:
    """State of one decode run; custom field decoders get it as their third argument."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def decode(self, hint: Any, value: Any, path: str) -> Any:
        origin = get_origin(hint)
        if hint is Any:
            return value
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(hint) if a is not type(None)]
            if value is None and len(members) < len(get_args(hint)):
                return None
            if len(members) == 1:
                return self.decode(members[0], value, path)
            errors = []
            for arg in members:
                try:
                    return self.decode(arg, value, path)
                except ConfigError as err:
                    errors.append(err)
            raise errors[0]
        if origin is Literal:
            choices = get_args(hint)
            if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
                shown = ", ".join(repr(c) for c in choices)
                raise ConfigError(path, f"must be one of {shown}", value, show_value=True)
            return value
        if origin in (tuple, list, Sequence, typing.Sequence):
            args = get_args(hint)
            item: Any = args[0] if args else Any
            if value is None:
                return ()
            if not isinstance(value, list):
                raise ConfigError(path, f"must be a list, not a {_type_name(value)}", value)
            return tuple(self.decode(item, v, f"{path}[{i}]") for i, v in enumerate(value))
        if origin in (dict, Mapping, typing.Mapping):
            key_t, val_t = get_args(hint) or (str, Any)
            if value is None:
                return types.MappingProxyType({})
            if not isinstance(value, dict):
                raise ConfigError(path, f"must be an object, not a {_type_name(value)}", value)
            out = {}
            for k, v in value.items():
                out[self.decode(key_t, k, path)] = self.decode(val_t, v, f"{path}[{json.dumps(k)}]")
            return types.MappingProxyType(out)
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            return self.decode_model(hint, value, path)
        if hint is bool:
            if not isinstance(value, bool):
                raise ConfigError(
                    path,
                    f"must be a boolean (true/false), not a {_type_name(value)}",
                    value,
                    show_value=True,
                )
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(
                    path, f"must be an integer, not a {_type_name(value)}", value, show_value=True
                )
            if abs(value) > _INT64_MAX:
                raise ConfigError(path, "integer out of range", value)
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(
                    path, f"must be a number, not a {_type_name(value)}", value, show_value=True
                )
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(path, "must be a finite number", value)
            try:
                return float(value)
            except OverflowError:  # an integer literal beyond the float range
                raise ConfigError(path, "number out of range", value) from None
        if hint is str:
            if not isinstance(value, str):
                raise ConfigError(
                    path, f"must be a string, not a {_type_name(value)}", value, show_value=True
                )
            if "\0" in value:
                raise ConfigError(path, "must not contain NUL characters", value)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a JSON "\ud800" escape: protobuf could not send it
                raise ConfigError(
                    path, "must be valid Unicode text (an unpaired surrogate)", value
                ) from None
            return value
        raise TypeError(f"config field {path}: unsupported type hint {hint!r}")

    def decode_model(self, cls: type[T], value: Any, path: str) -> T:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be an object, not a {_type_name(value)}", value)
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
        by_key: dict[str, dataclasses.Field[Any]] = {}
        for f in fields:
            by_key[(f.metadata.get("key") or f.name).lower()] = f
        exact = {(f.metadata.get("key") or f.name): f for f in fields}
        raw: dict[str, tuple[str, Any]] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(path, "object keys must be strings", key)
            found = exact.get(key) or by_key.get(key.lower())
            if found is None:
                self.warnings.append(f"{_join(path, key)}: unknown key, ignored")
                continue
            if found.name in raw and key not in exact:
                continue  # Go prefers an exact-case key over a case-folded one
            raw[found.name] = (key, item)
        kwargs: dict[str, Any] = {}
        for f in fields:
            if f.name not in raw:
                if f.default is _MISSING and f.default_factory is _MISSING:
                    key = f.metadata.get("key") or f.name
                    raise ConfigError(_join(path, key), "is required", show_value=False)
                continue
            key, item = raw[f.name]
            fpath = _join(path, f.metadata.get("key") or f.name)
            reason = f.metadata.get("unsupported")
            if reason:
                if _is_set(item):
                    raise ConfigError(fpath, f"is not supported: {reason}", item)
                continue
            if item is None and f.metadata.get("decoder") is None:
                continue  # Go: null leaves the zero/default value
            decoder = f.metadata.get("decoder")
            try:
                kwargs[f.name] = (
                    decoder(item, fpath, self)
                    if decoder
                    else self.decode(hints[f.name], item, fpath)
                )
            except RecursionError as err:
                raise ConfigError(fpath, "nested too deeply") from err
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise err.prefixed(path) from None
        except (TypeError, ValueError) as err:
            raise ConfigError(path, str(err)) from None


def decode(cls: type[T], document: Any, path: str = "") -> DecodeResult[T]:
    """Decode a parsed JSON/YAML ``document`` into the dataclass ``cls``.

    Raises :class:`ConfigError` only; returns the model and the unknown-key warnings.
    """
    decoder = DecodeContext()
    try:
        value = decoder.decode_model(cls, document, path)
    except RecursionError as err:
        raise ConfigError(path, "nested too deeply") from err
    return DecodeResult(value, decoder.warnings)


def one_or_many(model: type[T]) -> Callable[[Any, str, DecodeContext], tuple[T, ...]]:
    """Decoder for upstream fields that take one object or a non-empty list of objects."""

    def decode_one_or_many(value: Any, path: str, ctx: DecodeContext) -> tuple[T, ...]:
        if value is None:
            raise ConfigError(
                path, "is required (one object or a non-empty list of objects)", show_value=False
            )
        if isinstance(value, list):
            if not value:
                raise ConfigError(path, "needs at least one object, got an empty list")
            return tuple(ctx.decode_model(model, v, f"{path}[{i}]") for i, v in enumerate(value))
        return (ctx.decode_model(model, value, path),)

    return decode_one_or_many


def encode(value: Any) -> Any:
    """A JSON-able form of a config model, using the configured keys (for logging)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            if f.metadata.get("unsupported"):
                continue
            out[f.metadata.get("key") or f.name] = encode(getattr(value, f.name))
        return out
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((encode(v) for v in value), key=str)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclasses.dataclass(frozen=True)
class ConfigDocument:
    """A parsed config file: its path, content hash and data."""

    path: str
    digest: str
    data: Any


def load_document(path: str | os.PathLike[str]) -> ConfigDocument:
    """Read and parse a JSON or YAML config file; raises :class:`ConfigError` naming the file."""
    import hashlib

    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError("", f"cannot read config file: {err.strerror}", source=source) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"config file larger than {MAX_CONFIG_BYTES} bytes", source=source)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("", "config file is not UTF-8 text", source=source) from None
    return ConfigDocument(source, digest, parse_text(text, source))


def parse_text(text: str, source: str = "<config>") -> Any:
    """Parse JSON, or YAML when the text is not JSON (``.yaml``/``.yml`` go straight to YAML)."""
    is_yaml = Path(source).suffix.lower() in (".yaml", ".yml")
    if not is_yaml:
        try:
            return json.loads(text)
        except RecursionError:
            raise ConfigError("", "config nested too deeply", source=source) from None
        except json.JSONDecodeError as err:
            json_error = f"line {err.lineno} column {err.colno}: {err.msg}"
            if text.lstrip().startswith(("{", "[")):
                raise ConfigError("", f"invalid JSON at {json_error}", source=source) from None
        except ValueError as err:  # e.g. an integer literal past the interpreter's digit limit
            raise ConfigError("", f"invalid JSON: {err}", source=source) from None
    import yaml  # imported only when a config is YAML

    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError("", "config nested too deeply", source=source) from None
    except ValueError as err:  # an integer past the digit limit (PyYAML lets int() raise)
        raise ConfigError("", f"invalid YAML: {err}", source=source) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError("", f"invalid JSON/YAML{where}: {problem}", source=source) from None
