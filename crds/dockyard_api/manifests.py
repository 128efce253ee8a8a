"""Read manifests (YAML or JSON) into API models, with errors that name the field path.

This is the edge: every object that enters Dockyard from a file, the CLI or the API server
passes through `parse`. YAML is read the way kubectl reads it: timestamps stay strings and a
key written twice is an error, not a silent overwrite.

Pure computation: the caller reads files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from dockyard_api.commit import Commit
from dockyard_api.container import Container
from dockyard_api.image import Image
from dockyard_api.meta import API_VERSION, SERVED, FieldError, Resource
from dockyard_api.node import DockyardNode
from dockyard_api.promotion import Promotion
from dockyard_api.stage import Stage
from dockyard_api.volume import Volume

KINDS: tuple[type[Resource], ...] = (Container, Image, Volume, Commit, Stage, Promotion,
                                     DockyardNode)
"""Every kind of the dockyard.dev API, in the order documentation presents them."""
BY_KIND: dict[str, type[Resource]] = {cls.kind_info.kind: cls for cls in KINDS}


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a manifest: where (a field path) and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class InvalidManifestError(ValueError):
    """A manifest that Dockyard refuses, with every problem found."""

    def __init__(self, problems: list[Problem], *, source: str = "") -> None:
        self.problems = sorted(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(p) for p in self.problems))


def format_path(loc: tuple[int | str, ...]) -> str:
    """`("spec", "ports", 0, "hostPort")` -> `spec.ports[0].hostPort`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and not any(c in part for c in "[(,"):  # skip pydantic's type tags
            out += f".{part}" if out else part
    return out


def _split_path(path: str) -> tuple[int | str, ...]:
    """`ports[1].hostPort` -> `("ports", 1, "hostPort")`, the inverse of format_path."""
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"[.\[\]]+", path) if part)


_FRIENDLY = {
    "missing": "is required",
    "extra_forbidden": "unknown field: check its spelling (fields are camelCase, like "
                       "nodeName) or remove it",
}


def _problems(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, FieldError) and cause.field:
            loc = (*loc, *_split_path(cause.field))
        message = _FRIENDLY.get(item["type"]) or item["msg"].removeprefix("Value error, ")
        problems.append(Problem(format_path(loc), message))
    return problems


def parse(obj: object, *, source: str = "", served: bool = False) -> Resource:
    """Validate one decoded manifest and return its model; raise InvalidManifestError.

    `served`: the object comes from the API server, which evaluated the CRDs' CEL rules on
    every write; they are not evaluated again (they were two thirds of the operator's CPU
    time). The schema, which the models are, is still checked."""
    if not isinstance(obj, Mapping):
        raise InvalidManifestError(
            [Problem("", f"a manifest is a mapping with apiVersion and kind, not "
                         f"{type(obj).__name__}")], source=source)
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version != API_VERSION:
        raise InvalidManifestError(
            [Problem("apiVersion", f"expected {API_VERSION}, got {api_version!r}")],
            source=source)
    cls = BY_KIND.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidManifestError(
            [Problem("kind", f"unknown kind {kind!r}: expected one of {', '.join(BY_KIND)}")],
            source=source)
    problem = _shape_problem(obj)
    if problem:
        raise InvalidManifestError([Problem("", problem)], source=source)
    try:
        text = json.dumps(obj)
    except (TypeError, ValueError) as e:
        raise InvalidManifestError([Problem("", f"not JSON-compatible data: {e}")],
                              source=source) from e
    try:
        return cls.model_validate_json(text, by_alias=True, by_name=False,
                                       context={SERVED: True} if served else None)
    except ValidationError as e:
        raise InvalidManifestError(_problems(e), source=source) from e


MAX_VALUES = 1_000_000
"""Values one manifest may hold, an alias counted each time it is used. YAML anchors and
aliases let a few lines stand for an exponential tree (the "billion laughs"), which the
API server's YAML reader refuses too (CVE-2019-11253); the largest real manifest holds a
few thousand."""
MAX_DEPTH = 100
"""Nesting levels one manifest may have; ours need fewer than twenty. Deeper data would
exhaust the stack of the JSON encoder and of the validators (RecursionError)."""


def _shape_problem(obj: object) -> str | None:
    """Why `obj` is too large, too deep or cyclic to be a manifest; None when it is not.

    Iterative, so its own depth costs no stack; shared values (aliases) are sized once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # containers whose children are being sized: the path down
    stack: list[tuple[object, bool, int]] = [(obj, False, 0)]
    while stack:
        value, sized, depth = stack.pop()
        children = _children(value)
        if children is None or (not sized and id(value) in sizes):
            continue
        if sized:
            open_.discard(id(value))
            sizes[id(value)] = 1 + sum(sizes.get(id(child), 1) for child in children)
            if sizes[id(value)] > MAX_VALUES:
                return (f"holds more than {MAX_VALUES} values once its YAML aliases are "
                        f"expanded")
            continue
        if id(value) in open_:
            return "contains itself (a YAML alias to an enclosing node)"
        if depth >= MAX_DEPTH:
            return f"nests deeper than {MAX_DEPTH} levels"
        open_.add(id(value))
        stack.append((value, True, depth))
        stack.extend((child, False, depth + 1) for child in children)
    return None


def _children(value: object) -> list[object] | None:
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return None


R = TypeVar("R", bound=Resource)


def parse_as(cls: type[R], obj: object, *, source: str = "", served: bool = False) -> R:
    """`parse` an object that must be of `cls`'s kind (as a watched object is)."""
    resource = parse(obj, source=source, served=served)
    if not isinstance(resource, cls):
        raise InvalidManifestError(
            [Problem("kind", f"expected {cls.__name__}, got {type(resource).__name__}")],
            source=source)
    return resource


def dump(resource: Resource) -> dict[str, Any]:
    """The manifest form of a model: camelCase, no empty optional fields."""
    return resource.model_dump(mode="json", by_alias=True, exclude_none=True)


class _KubectlLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings and refuses duplicate keys."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # PyYAML's constructors of explicitly tagged scalars fail with whatever their
            # parsing raises: `!!bool maybe` a KeyError, `!!timestamp soon` an AttributeError.
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.tag} {str(node.value)[:40]!r}",
                node.start_mark) from e

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:  # `? [a, b]`: SafeLoader's own check comes after ours
                raise yaml.constructor.ConstructorError(
                    None, None, f"a mapping key must be a scalar, not {type(key).__name__}",
                    key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_KubectlLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(text: str, *, source: str = "") -> Iterator[object]:
    """The documents of a YAML (or JSON) stream, skipping empty ones; raise InvalidManifestError."""
    try:
        for document in yaml.load_all(text, Loader=_KubectlLoader):
            if document is not None:
                yield document
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int of more than 4300 digits
        raise InvalidManifestError([Problem("", f"not valid YAML: {e}")], source=source) from e
    except RecursionError as e:  # PyYAML composes nested nodes recursively
        raise InvalidManifestError([Problem("", "not a manifest: the YAML nests too deeply")],
                                   source=source) from e
