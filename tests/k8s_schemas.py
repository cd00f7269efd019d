"""Offline validation of custom resources against vendored CRD schemas.

The schemas live in ``k8s/schemas/<group>_<plural>.json`` (see the README
there).  Each file is a CRD version's ``openAPIV3Schema`` plus an
``x-source`` key naming where it was copied from.

The API server treats a structural schema differently from plain JSON
Schema; :func:`load_schema` and :func:`validate_custom` bridge the gap:

* unknown fields: the API server prunes them (and ``kubectl apply``, which
  uses server-side strict field validation by default, reports them).  We
  report them: every object schema with ``properties`` and neither
  ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields: true``
  is closed with ``additionalProperties: false``.  The top-level ``metadata``
  stays open (the API server checks it as ObjectMeta).
* ``nullable: true`` allows ``null``; a ``null`` in a non-nullable field is
  dropped before validation, as the API server does.
* a ``required`` field that has a ``default`` is not required (the API
  server applies defaults before it validates).
* ``x-kubernetes-int-or-string`` / resource quantities are written by
  controller-gen as ``anyOf: [{type: integer}, {type: string}]`` with no
  ``type``, which jsonschema already handles (``pattern`` only applies to the
  string branch); ``1.0`` counts as an integer, ``0.5`` does not -- the same
  as the API server, so write fractional quantities as strings ("500m").
* ``format`` (int32, int64, date-time) is not checked (no format checker is
  passed), and CEL rules (``x-kubernetes-validations``) are not evaluated;
  the other ``x-kubernetes-*`` keys are unknown keywords and ignored.
* YAML dates/timestamps that PyYAML turns into ``date``/``datetime`` are
  validated as the ISO strings the API server would see.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "k8s" / "schemas"

# (apiVersion, kind) -> file stem in SCHEMA_DIR.  Only the served version the
# file was taken from is listed; any other version raises KeyError.
SCHEMAS: dict[tuple[str, str], str] = {
    ("ray.io/v1", "RayService"): "ray.io_rayservices",
    ("ray.io/v1", "RayJob"): "ray.io_rayjobs",
    ("ray.io/v1", "RayCluster"): "ray.io_rayclusters",
    ("milvus.io/v1beta1", "Milvus"): "milvus.io_milvuses",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors",
}

_PRESERVE = "x-kubernetes-preserve-unknown-fields"


def _close(node: Any) -> None:
    """Close object schemas in place, recursively (see module docstring)."""
    if isinstance(node, list):
        for item in node:
            _close(item)
        return
    if not isinstance(node, dict):
        return
    props = node.get("properties")
    if isinstance(props, dict):
        if node.get(_PRESERVE) is not True and "additionalProperties" not in node:
            node["additionalProperties"] = False
        if "required" in node:
            req = [r for r in node["required"] if "default" not in props.get(r, {})]
            if req:
                node["required"] = req
            else:
                del node["required"]
        for sub in props.values():
            _close(sub)
    if node.get("nullable") is True:
        t = node.get("type")
        if isinstance(t, str):
            node["type"] = [t, "null"]
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), (dict, list)):
            _close(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if isinstance(node.get(key), list):
            _close(node[key])


@functools.cache
def _raw_schema(group_plural: str) -> dict:
    with open(SCHEMA_DIR / f"{group_plural}.json", encoding="utf-8") as f:
        return json.load(f)


def load_schema(group_plural: str) -> dict:
    """Return the closed schema for e.g. ``"ray.io_rayservices"`` (a fresh copy)."""
    schema = copy.deepcopy(_raw_schema(group_plural))
    schema.pop("x-source", None)
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    metadata = props.pop("metadata", None) or {"type": "object"}
    _close(schema)
    props["metadata"] = metadata  # not closed: ObjectMeta is not in the CRD schema
    return schema


@functools.cache
def _validator(group_plural: str) -> jsonschema.Draft7Validator:
    schema = load_schema(group_plural)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _normalise(doc: Any, schema: Any) -> Any:
    """Copy ``doc``, dropping nulls in non-nullable fields and stringifying dates."""
    if isinstance(doc, dict):
        schema = schema if isinstance(schema, dict) else {}
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, value in doc.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            if value is None and not sub.get("nullable"):
                continue
            out[key] = _normalise(value, sub)
        return out
    if isinstance(doc, list):
        items = schema.get("items") if isinstance(schema, dict) else None
        return [_normalise(v, items if isinstance(items, dict) else {}) for v in doc]
    if isinstance(doc, (datetime.date, datetime.datetime)):
        return doc.isoformat().replace("+00:00", "Z")
    return doc


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def validate_custom(doc: dict) -> list[str]:
    """Validate one custom resource; return ``"path: message"`` strings (empty if valid).

    Raises KeyError if (apiVersion, kind) has no vendored schema.
    """
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in SCHEMAS:
        raise KeyError(f"no vendored CRD schema for apiVersion={key[0]!r} kind={key[1]!r}")
    stem = SCHEMAS[key]
    instance = _normalise(doc, _raw_schema(stem))
    errors = sorted(
        _validator(stem).iter_errors(instance),
        key=lambda e: (list(map(str, e.absolute_path)), e.message),
    )
    return [f"{_path(e.absolute_path)}: {e.message}" for e in errors]
