"""Volume placement and migration decisions (pure: `dockyard_operator.volumes`)."""

from __future__ import annotations

from typing import Any

from dockyard_api import Container, Volume
from dockyard_api.manifests import parse_as
from dockyard_api.volume import MigrationPolicy
from dockyard_operator.volumes import Placed, constraints, moves


def _container(*volumes: str) -> Container:
    return parse_as(Container, {
        "apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"image": "busybox:1", "volumeMounts": [
            {"name": name, "mountPath": f"/{name}"} for name in volumes]}})


def _volume(spec: dict[str, Any], status: dict[str, Any] | None = None) -> Placed:
    body: dict[str, Any] = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Volume",
                            "metadata": {"name": "v", "namespace": "shop"}, "spec": spec}
    if status is not None:
        body["status"] = status
    return Placed.of(parse_as(Volume, body))


def test_placed_local_volumes_that_may_not_move_hold_the_container_to_their_node() -> None:
    volumes = {
        "shop/pinned": _volume({"local": {}}, {"node": "n1", "phase": "Ready"}),
        "shop/mobile": _volume({"local": {}, "migration": "Transfer"},
                               {"node": "n2", "phase": "Ready"}),
        "shop/new": _volume({"local": {}}),
        "shop/memory": _volume({"tmpfs": {"sizeLimit": "1Mi"}}),
    }
    assert volumes["shop/mobile"].migration is MigrationPolicy.TRANSFER
    assert constraints(_container("pinned", "mobile", "new", "memory"), volumes) == \
        (frozenset({"n1"}), 1)
    assert constraints(_container("mobile", "new"), volumes) == (frozenset(), 0)


def test_binding_places_new_volumes_and_marks_moved_ones_migrating() -> None:
    volumes = {
        "shop/mobile": _volume({"local": {}, "migration": "Transfer"},
                               {"node": "n2", "phase": "Ready"}),
        "shop/here": _volume({"local": {}}, {"node": "n3", "phase": "Ready"}),
        "shop/new": _volume({"local": {}}),
        "shop/memory": _volume({"tmpfs": {"sizeLimit": "1Mi"}}),
    }
    assert moves(_container("mobile", "here", "new", "memory", "absent"), "n3", volumes) == {
        "shop/mobile": {"node": "n3", "phase": "Migrating", "sourceNode": "n2"},
        "shop/new": {"node": "n3", "phase": "Ready", "sourceNode": None},
    }
