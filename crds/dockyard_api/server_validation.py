"""Validate an object against one of our CRDs the way the API server does on create.

Order as in the API server: apply schema defaults, refuse unknown fields (kubectl's default
`--validate=strict`), validate the OpenAPI schema, enforce list semantics
(`x-kubernetes-list-type: map|set`), then evaluate the CEL rules
(`x-kubernetes-validations`). Used by `dockyard validate`, by the tests, and by the
Kubernetes emulator in `tests/` so that operator tests see what a real server would refuse.

It checks the schema of the CRD only: names, namespaces and labels in `metadata` are the
API server's own business (and the models') and are not looked at here, except for the
root CEL rules that read `metadata.name`.

On an update, given the stored object (`old`), validation ratchets as the API server's does
(CRD validation ratcheting, GA in Kubernetes 1.33): an error in a part of the object that
the update left as it was is not reported, and the CEL rules of such a part are not even
evaluated. Parts are matched through object fields; list items are not matched (as for
`x-kubernetes-list-type: atomic`, the default), so a changed list is checked whole. This
is also what keeps status writes cheap: the spec they leave alone is not checked again.

Pure computation: no I/O.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import jsonschema

from dockyard_api import cel
from dockyard_api.manifests import Problem, format_path
from dockyard_api.schema import Schema

Path = tuple[int | str, ...]
_ABSENT = object()
"""No old value to compare with: a create, a new field or a list item."""


def schema_of(crd: dict[str, Any], version: str = "v1alpha1") -> Schema:
    """The openAPIV3Schema of one served version of a CRD."""
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: Schema = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


def validate(obj: dict[str, Any], schema: Schema, old: dict[str, Any] | None = None
             ) -> tuple[dict[str, Any], list[Problem]]:
    """The defaulted object and every problem the API server would report (empty: accepted);
    `old` is the stored object when `obj` updates it (see ratcheting above)."""
    defaulted = apply_defaults(obj, schema)
    found = _unknown_fields(defaulted, schema, ())
    validator = jsonschema.Draft202012Validator(schema)
    for error in validator.iter_errors(defaulted):
        path = tuple(error.absolute_path)
        if error.validator == "required":  # report on the missing field, as the server does
            required, instance = cast(list[str], error.validator_value), cast(Any, error.instance)
            missing = [p for p in required if p not in instance]
            found += [Problem(format_path((*path, name)), "Required value") for name in missing]
        else:
            found.append(Problem(format_path(path), _message(error)))
    found += _list_semantics(defaulted, schema, ())
    if old is not None:  # defaulted as the server reads it from storage
        old = apply_defaults(old, schema)
        found = [p for p in found if not _unchanged(defaulted, old, p.path)]
    found += _cel(defaulted, schema, (), _ABSENT if old is None else old)
    return defaulted, sorted(set(found))


def _unchanged(new: Any, old: Any, path: str) -> bool:
    """True when the field at `path` (as `format_path` spells it) holds the same value in
    both objects, or lies in a part that does. Only object fields are followed: a list
    counts as changed when any item did, and a key that holds a dot (a path that cannot
    be split back) as changed, so its error stays."""
    for step in path.split(".") if path else ():
        if new == old:
            return True  # an enclosing part is unchanged
        name = step.split("[", 1)[0]
        if not isinstance(new, dict) or not isinstance(old, dict) or \
                name not in new or name not in old:
            return False
        new, old = new[name], old[name]
        if name != step:
            break  # into a list: only the list as a whole is compared
    return bool(new == old)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(error: jsonschema.ValidationError) -> str:
    """The API server's wording for the common schema errors, without echoing huge values."""
    # Errors from iter_errors always carry these; the stubs type them as possibly unset.
    rule, want, got = str(error.validator), cast(Any, error.validator_value), \
        cast(Any, error.instance)
    if rule == "maxLength":
        return f"Too long: may not be more than {want} characters"
    if rule == "maxItems":
        return f"Too many: {len(got)}: must have at most {want} items"
    if rule == "pattern":
        return f"Invalid value: {_short(got)}: should match '{want}'"
    if rule == "enum":
        return f"Unsupported value: {_short(got)}: supported values: " + \
            ", ".join(f'"{v}"' for v in want)
    if rule in ("type", "anyOf"):
        expected = want if rule == "type" else " or ".join(b["type"] for b in want)
        return f"Invalid value: {_short(got)}: must be of type {expected}"
    return f"Invalid value: {_short(got)}: {error.message[:200]}"


def apply_defaults(obj: Any, schema: Schema) -> Any:
    """A copy of `obj` with the schema's defaults filled in where fields are absent."""
    out = copy.deepcopy(obj)
    _default_into(out, schema)
    return out


def _default_into(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_into(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _default_into(item, extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_into(item, schema["items"])


def prune(obj: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """A copy of `obj` without the fields its schema does not know: what the API server
    stores when the client does not ask for strict field validation (structural pruning;
    `metadata` is the server's own)."""
    pruned = copy.deepcopy(obj)
    _prune_into(pruned, schema, ())
    return pruned


def _prune_into(value: Any, schema: Schema, path: Path) -> None:
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        if props is not None and "additionalProperties" not in schema and path != ("metadata",) \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key in [key for key in value if key not in props]:
                del value[key]
        for key, item in value.items():
            sub = (props or {}).get(key) or schema.get("additionalProperties")
            if isinstance(sub, dict):
                _prune_into(item, sub, (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _prune_into(item, schema["items"], path)


def _unknown_fields(value: Any, schema: Schema, path: Path) -> list[Problem]:
    found: list[Problem] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        if props is not None and "additionalProperties" not in schema and path != ("metadata",) \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            found += [Problem(format_path((*path, key)), f'unknown field "{key}"')
                      for key in value if key not in props]
        for key, item in value.items():
            sub = (props or {}).get(key) or schema.get("additionalProperties")
            if isinstance(sub, dict):
                found += _unknown_fields(item, sub, (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += _unknown_fields(item, schema["items"], (*path, index))
    return found


def _children(value: Any, schema: Schema, path: Path) -> list[tuple[Any, Schema, Path]]:
    """The (value, schema, path) of each child of `value` that the schema describes."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        found = []
        for key, item in value.items():
            sub = props.get(key) or extra
            if isinstance(sub, dict):
                found.append((item, sub, (*path, key)))
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [(item, schema["items"], (*path, i)) for i, item in enumerate(value)]
    return []


def _list_semantics(value: Any, schema: Schema, path: Path) -> list[Problem]:
    found: list[Problem] = []
    list_type = schema.get("x-kubernetes-list-type")
    if isinstance(value, list) and list_type in ("map", "set"):
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: dict[str, int] = {}
        for index, item in enumerate(value):
            if list_type == "map" and isinstance(item, dict):
                identity = repr([item.get(k) for k in keys])
            else:
                identity = repr(item)
            if identity in seen:
                found.append(Problem(format_path((*path, index)),
                                     f"Duplicate value: {identity} (item {seen[identity]})"))
            seen.setdefault(identity, index)
    for item, sub, sub_path in _children(value, schema, path):
        found += _list_semantics(item, sub, sub_path)
    return found


def _cel(value: Any, schema: Schema, path: Path, old: Any) -> list[Problem]:
    if old is not _ABSENT and value == old:
        return []  # ratcheting: an unchanged part is not checked again
    found: list[Problem] = []
    # The root's rules may read only metadata.name and generateName (as in Kubernetes), and
    # no update changes those: on an update, they hold as they did on create.
    rules = [] if path == () and old is not _ABSENT else schema.get("x-kubernetes-validations", [])
    for rule in rules:
        if not cel.holds(rule["rule"], value):
            field = tuple(p for p in rule.get("fieldPath", "").split(".") if p)
            found.append(Problem(format_path((*path, *field)), rule["message"]))
    for item, sub, sub_path in _children(value, schema, path):
        step = sub_path[-1]
        before = old.get(step, _ABSENT) if isinstance(step, str) and isinstance(old, dict) \
            else _ABSENT
        found += _cel(item, sub, sub_path, before)
    return found
