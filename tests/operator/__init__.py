"""Tests of the operator's pure core (no API server, no daemon, no root), and the helpers
they share: manifest sets built from Python dicts."""

from __future__ import annotations

import copy
import json
from typing import Any

from dockyard_api.converge import DesiredContainer, Manifests, desire, load_manifests


def container(name: str = "web", namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container", "metadata": metadata,
            "spec": {"image": "busybox:latest", **spec}}


def volume(name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    doc = container(name, namespace)
    doc["kind"], doc["spec"] = "Volume", spec
    return doc


def image(name: str, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    doc = container(name, namespace)
    doc["kind"], doc["spec"] = "Image", spec
    return doc


def text(*documents: dict[str, Any]) -> str:
    """A YAML stream of the documents (JSON is YAML)."""
    return "\n---\n".join(json.dumps(d) for d in documents)


def manifests(*documents: dict[str, Any], file: str = "app.yaml") -> Manifests:
    return load_manifests([(file, text(*documents))])


def desired(*documents: dict[str, Any]) -> tuple[DesiredContainer, ...]:
    return desire(manifests(*documents))


def one(*documents: dict[str, Any]) -> DesiredContainer:
    (found,) = desired(*documents)
    return found


def edited(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `document` with the dotted `path` set to `value`."""
    out = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out
