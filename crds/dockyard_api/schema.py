"""Turn a pydantic model's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Kubernetes wants every node typed, no `$ref`, no `null` types, no `additionalProperties:
false` (unknown fields are pruned or, with strict field validation, refused), and vendor
extensions for list semantics and CEL rules. `structural` produces that from
`model_json_schema()`; `problems` checks the result against the API server's rules for
structural schemas so that a CRD the server would refuse never leaves this repository.

Pure computation: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from pydantic import BaseModel

Schema = dict[str, Any]

# Keys kept from pydantic's output, in the order they are written to YAML.
_ORDER = ("description", "type", "format", "enum", "default", "pattern", "minLength",
          "maxLength", "minimum", "maximum", "minItems", "maxItems", "minProperties",
          "maxProperties", "required", "properties", "additionalProperties", "items", "anyOf")
_NULL = {"type": "null"}


def openapi(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of `model`, as a CRD embeds it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _convert(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = _unwrap(node, defs)
    out: Schema = {key: _convert_value(key, node[key], defs) for key in _ORDER if key in node}
    out.update({k: v for k, v in node.items() if k.startswith("x-kubernetes-")})
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "object" and "properties" not in out \
            and "additionalProperties" not in out:
        out["properties"] = {}  # an empty struct such as `local: {}`
    return out


def _unwrap(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Resolve `$ref`, drop the `null` branch of optionals and `additionalProperties: false`."""
    node = dict(node)
    while True:
        if "$ref" in node:
            target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
            node = {**target, **node}  # the field's own description wins over the model's
        elif "anyOf" in node and _NULL in node["anyOf"]:
            rest = [branch for branch in node.pop("anyOf") if branch != _NULL]
            node = {**rest[0], **node} if len(rest) == 1 else {**node, "anyOf": rest}
            if node.get("default", 0) is None:
                del node["default"]
        else:
            break
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    return node


def _convert_value(key: str, value: Any, defs: dict[str, Schema]) -> Any:
    if key == "description":
        return _tidy(value)
    if key == "properties":
        return {name: _convert(sub, defs) for name, sub in value.items()}
    if key in ("items", "additionalProperties"):
        return _convert(value, defs)
    if key == "anyOf":
        return [_convert(sub, defs) for sub in value]
    return value


def _tidy(text: str) -> str:
    """Docstrings wrap lines for the source; descriptions are one paragraph per line."""
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()))


# --- the API server's structural schema rules -------------------------------------------

_FORBIDDEN_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")


def problems(schema: Schema, path: str = "") -> list[str]:
    """Every way `schema` breaks the rules for structural schemas (empty when it is fine).

    The rules checked are those of the Kubernetes documentation "Specifying a structural
    schema", plus the list-map, default and CEL rules the API server enforces on CRD
    creation. Each finding is `path: what is wrong`.
    """
    where = path or "<root>"
    found = [f"{where}: {problem}" for check in _CHECKS for problem in check(schema, path)]
    for name, sub in schema.get("properties", {}).items():
        found += problems(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        found += problems(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += problems(schema["additionalProperties"], f"{path}{{}}")
    return found


def _type_problems(schema: Schema, _path: str) -> list[str]:
    found = ["$ref is not allowed"] if "$ref" in schema else []
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string") is True:
        if kind is not None:
            found.append("x-kubernetes-int-or-string must not set type")
        if schema.get("anyOf") not in (None, [{"type": "integer"}, {"type": "string"}]):
            found.append("int-or-string allows only anyOf [integer, string]")
        return found
    if kind is None and schema.get("x-kubernetes-preserve-unknown-fields") is not True:
        found.append("type is missing")
    for junctor in ("anyOf", "allOf", "oneOf"):
        for branch in schema.get(junctor, []):
            found += [f"{key} is not allowed inside {junctor}"
                      for key in _FORBIDDEN_IN_JUNCTORS if key in branch]
    return found


def _shape_problems(schema: Schema, _path: str) -> list[str]:
    found = []
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema and "additionalProperties" in schema:
            found.append("properties and additionalProperties are exclusive")
        if isinstance(schema.get("additionalProperties"), bool):
            found.append("additionalProperties must be a schema, not a boolean")
        props = schema.get("properties", {})
        found += [f"required field {name!r} is not a property"
                  for name in schema.get("required", []) if name not in props]
    if kind == "array" and "items" not in schema:
        found.append("an array needs items")
    return found


def _default_problems(schema: Schema, _path: str) -> list[str]:
    if "default" not in schema:
        return []
    bare = {k: v for k, v in schema.items() if k != "default"}
    return [f"default {schema['default']!r} is invalid: {error.message}"
            for error in jsonschema.Draft202012Validator(bare).iter_errors(schema["default"])]


def _cel_problems(schema: Schema, path: str) -> list[str]:
    found = []
    for rule in schema.get("x-kubernetes-validations", []):
        field = rule.get("fieldPath", "").lstrip(".").split(".")[0]
        if field and path and field not in schema.get("properties", {}):
            found.append(f"CEL fieldPath .{field} names no property")
    return found


def _list_problems(schema: Schema, _path: str) -> list[str]:
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys")
    found = []
    if list_type is not None and schema.get("type") != "array":
        found.append("x-kubernetes-list-type on a non-array")
    if keys is not None and list_type != "map":
        found.append("list-map-keys need x-kubernetes-list-type: map")
    if list_type == "map":
        items = schema.get("items", {})
        props = items.get("properties", {})
        if items.get("type") != "object" or not keys:
            found.append("a list-map needs object items and map keys")
        for key in keys or []:
            sub = props.get(key)
            if sub is None:
                found.append(f"list-map key {key!r} is not a property")
            elif key not in items.get("required", []) and "default" not in sub:
                found.append(f"list-map key {key!r} must be required or defaulted")
            elif sub.get("type") not in ("string", "integer", "boolean", "number"):
                found.append(f"list-map key {key!r} must be a scalar")
    if list_type == "set" and schema.get("items", {}).get("type") in ("object", "array"):
        found.append("a set holds scalars")
    return found


_CHECKS = (_type_problems, _shape_problems, _list_problems, _default_problems, _cel_problems)
