"""A small JSON Schema validator: the subset llama.cpp's schema-to-grammar converter enforces.

``jsonschema`` is not a dependency; the scorer only needs to tell whether an output has the
shape a suite asks for, with the keywords a generation constraint can express: ``type`` (one or
a list), ``enum``, ``const``, ``properties``, ``required``, ``additionalProperties``, ``items``,
``prefixItems``, ``minItems``/``maxItems``, ``minLength``/``maxLength``, ``pattern``,
``minimum``/``maximum`` (and the exclusive forms), ``anyOf``/``oneOf``/``allOf`` and local
``$ref`` (``#/definitions/...``, ``#/$defs/...``). Annotations (``title``, ``description``,
``format``, ``examples``, ``$schema``...) are accepted and ignored.
"""

from __future__ import annotations

import re
from typing import Any

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")

_KNOWN = {
    "type", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf", "$ref", "definitions", "$defs",
    # annotations
    "title", "description", "format", "examples", "default", "$schema", "$id", "$comment",
}


class SchemaError(ValueError):
    """The schema itself is not one this validator (and llama.cpp's converter) understands."""


def check_schema(schema: Any, *, _path: str = "#", _root: Any = None) -> None:
    """Raise :class:`SchemaError` (one sentence, with the JSON pointer) if ``schema`` is invalid."""
    root = schema if _root is None else _root
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"schema at {_path} must be an object, not {type(schema).__name__}")
    unknown = sorted(set(schema) - _KNOWN)
    if unknown:
        raise SchemaError(f"schema at {_path} uses unsupported keyword(s): {', '.join(unknown)}")
    t = schema.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        if not names or not all(isinstance(n, str) and n in TYPES for n in names):
            raise SchemaError(f"schema at {_path} has an unknown type {t!r} (use one of {', '.join(TYPES)})")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise SchemaError(f"schema at {_path}: 'enum' must be a non-empty list")
    props = schema.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise SchemaError(f"schema at {_path}: 'properties' must be an object")
        for name, sub in props.items():
            check_schema(sub, _path=f"{_path}/properties/{name}", _root=root)
    req = schema.get("required")
    if req is not None and (not isinstance(req, list) or not all(isinstance(r, str) for r in req)):
        raise SchemaError(f"schema at {_path}: 'required' must be a list of property names")
    if isinstance(req, list) and isinstance(props, dict):
        missing = [r for r in req if r not in props]
        if missing and schema.get("additionalProperties") is False:
            raise SchemaError(f"schema at {_path} requires {missing[0]!r} but does not define it")
    for key in ("additionalProperties", "items"):
        if key in schema and not isinstance(schema[key], bool):
            check_schema(schema[key], _path=f"{_path}/{key}", _root=root)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in schema:
            if not isinstance(schema[key], list) or not schema[key]:
                raise SchemaError(f"schema at {_path}: '{key}' must be a non-empty list of schemas")
            for i, sub in enumerate(schema[key]):
                check_schema(sub, _path=f"{_path}/{key}/{i}", _root=root)
    for key in ("definitions", "$defs"):
        if key in schema:
            if not isinstance(schema[key], dict):
                raise SchemaError(f"schema at {_path}: '{key}' must be an object")
            for name, sub in schema[key].items():
                check_schema(sub, _path=f"{_path}/{key}/{name}", _root=root)
    for key in ("minItems", "maxItems", "minLength", "maxLength"):
        if key in schema and (not isinstance(schema[key], int) or isinstance(schema[key], bool) or schema[key] < 0):
            raise SchemaError(f"schema at {_path}: '{key}' must be a non-negative integer")
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not _is_number(schema[key]):
            raise SchemaError(f"schema at {_path}: '{key}' must be a number")
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            raise SchemaError(f"schema at {_path}: 'pattern' must be a string")
        try:
            re.compile(schema["pattern"])
        except re.error as exc:
            raise SchemaError(f"schema at {_path}: 'pattern' is not a valid regular expression ({exc})") from None
    if "$ref" in schema:
        _resolve(root, schema["$ref"], _path)


def _resolve(root: Any, ref: Any, path: str = "#") -> Any:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise SchemaError(f"schema at {path}: only local references like '#/$defs/name' are supported, not {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(f"schema at {path}: reference {ref!r} points nowhere")
        node = node[part]
    return node


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_ok(value: Any, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "number":
        return _is_number(value)
    if t == "integer":
        return _is_number(value) and float(value).is_integer()
    if t == "boolean":
        return isinstance(value, bool)
    return value is None  # "null"


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def errors(value: Any, schema: Any, *, _root: Any = None, _path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (an empty list when it conforms)."""
    root = schema if _root is None else _root
    if schema is True or schema == {}:
        return []
    if schema is False:
        return [f"{_path}: no value is allowed here"]
    if "$ref" in schema:
        return errors(value, _resolve(root, schema["$ref"]), _root=root, _path=_path)
    out: list[str] = []
    t = schema.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, n) for n in names):
            return [f"{_path}: expected {' or '.join(names)}, got {_json_type(value)}"]
    if "const" in schema and not _equal(value, schema["const"]):
        out.append(f"{_path}: must be {schema['const']!r}")
    if "enum" in schema and not any(_equal(value, e) for e in schema["enum"]):
        out.append(f"{_path}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                out.append(f"{_path}: missing required property {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, v in value.items():
            if name in props:
                out += errors(v, props[name], _root=root, _path=f"{_path}.{name}")
            elif extra is False:
                out.append(f"{_path}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                out += errors(v, extra, _root=root, _path=f"{_path}.{name}")
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        for i, v in enumerate(value):
            if i < len(prefix):
                out += errors(v, prefix[i], _root=root, _path=f"{_path}[{i}]")
            elif "items" in schema:
                out += errors(v, schema["items"], _root=root, _path=f"{_path}[{i}]")
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{_path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{_path}: more than {schema['maxItems']} items")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{_path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{_path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            out.append(f"{_path}: does not match {schema['pattern']!r}")
    if _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{_path}: less than {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{_path}: more than {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{_path}: not more than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            out.append(f"{_path}: not less than {schema['exclusiveMaximum']}")
    for sub in schema.get("allOf", []):
        out += errors(value, sub, _root=root, _path=_path)
    if "anyOf" in schema and not any(not errors(value, s, _root=root, _path=_path) for s in schema["anyOf"]):
        out.append(f"{_path}: matches none of anyOf")
    if "oneOf" in schema:
        n = sum(1 for s in schema["oneOf"] if not errors(value, s, _root=root, _path=_path))
        if n != 1:
            out.append(f"{_path}: matches {n} of oneOf, not exactly one")
    return out


def is_valid(value: Any, schema: Any) -> bool:
    return not errors(value, schema)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
