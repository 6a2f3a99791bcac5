"""Structural schemas for the Prometheus Operator objects in deploy/ (monitoring.coreos.com/v1).

kubernetes-validate bundles only the built-in Kubernetes schemas, not CRDs. These are subsets
of the operator's v1 CRD schemas (PodMonitor, ServiceMonitor, PrometheusRule) covering every
field deploy/ uses, with the operator's types and enums, and ``additionalProperties: false``
so that a misspelt or misplaced field fails (the API server would prune or reject it).
"""

from __future__ import annotations

from typing import Any

import jsonschema

DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
    r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
LABEL_NAME = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


METADATA = _closed(
    {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    ("name", "namespace"),
)
LABEL_SELECTOR = _closed(
    {"matchLabels": {**STRING_MAP, "minProperties": 1}, "matchExpressions": {"type": "array"}}
)
SECRET_OR_CONFIGMAP = _closed(
    {
        "secret": _closed({"name": {"type": "string"}, "key": {"type": "string"}}, ("key",)),
        "configMap": _closed({"name": {"type": "string"}, "key": {"type": "string"}}, ("key",)),
    }
)
TLS_CONFIG = _closed(
    {
        "ca": SECRET_OR_CONFIGMAP,
        "cert": SECRET_OR_CONFIGMAP,
        "keySecret": _closed({"name": {"type": "string"}, "key": {"type": "string"}}, ("key",)),
        "serverName": {"type": "string"},
        "insecureSkipVerify": {"type": "boolean"},
    }
)
RELABEL = _closed(
    {
        "sourceLabels": {"type": "array", "items": LABEL_NAME},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                "replace",
                "Replace",
                "keep",
                "Keep",
                "drop",
                "Drop",
                "hashmod",
                "HashMod",
                "labelmap",
                "LabelMap",
                "labeldrop",
                "LabelDrop",
                "labelkeep",
                "LabelKeep",
            ]
        },
    }
)
ENDPOINT_FIELDS: dict[str, Any] = {
    "port": {"type": "string"},
    "path": {"type": "string", "pattern": "^/"},
    "scheme": {"enum": ["http", "https"]},
    "interval": DURATION,
    "scrapeTimeout": DURATION,
    "honorLabels": {"type": "boolean"},
    "honorTimestamps": {"type": "boolean"},
    "tlsConfig": TLS_CONFIG,
    "relabelings": {"type": "array", "items": RELABEL},
    "metricRelabelings": {"type": "array", "items": RELABEL},
}


def _object(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


POD_MONITOR = _object(
    "PodMonitor",
    _closed(
        {
            "jobLabel": {"type": "string"},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            "podMetricsEndpoints": {
                "type": "array",
                "minItems": 1,
                "items": _closed(ENDPOINT_FIELDS, ("port",)),
            },
        },
        ("selector", "podMetricsEndpoints"),
    ),
)
SERVICE_MONITOR = _object(
    "ServiceMonitor",
    _closed(
        {
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": _closed(ENDPOINT_FIELDS, ("port",)),
            },
        },
        ("selector", "endpoints"),
    ),
)
RULE = {
    "oneOf": [
        _closed(
            {
                "alert": {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_]*$"},
                "expr": {"type": "string", "minLength": 1},
                "for": DURATION,
                "keep_firing_for": DURATION,
                "labels": STRING_MAP,
                "annotations": STRING_MAP,
            },
            ("alert", "expr"),
        ),
        _closed(
            {
                "record": {"type": "string", "pattern": r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                "expr": {"type": "string", "minLength": 1},
                "labels": STRING_MAP,
            },
            ("record", "expr"),
        ),
    ]
}
PROMETHEUS_RULE = _object(
    "PrometheusRule",
    _closed(
        {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": _closed(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": RULE},
                    },
                    ("name", "rules"),
                ),
            }
        },
        ("groups",),
    ),
)
SCHEMAS = {
    "PodMonitor": POD_MONITOR,
    "ServiceMonitor": SERVICE_MONITOR,
    "PrometheusRule": PROMETHEUS_RULE,
}


def validate_monitoring(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless ``doc`` fits its CRD subset."""
    jsonschema.validate(doc, SCHEMAS[doc["kind"]])
