"""Validation of an update ratchets against the stored object, as the API server's does.

An object stored before a rule tightened (here: an object the rules refuse, as if it had
been stored under an older CRD) can still be updated where it is fine; only the parts the
update changes are checked again. Both kinds of check ratchet: CEL rules and the OpenAPI
schema.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dockyard_api import cel
from dockyard_api.crd import kind_schema
from dockyard_api.server_validation import validate

CONTAINER = kind_schema("Container")


def _container(**network: Any) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": "web", "namespace": "dev"},
            "spec": {"image": "nginx:1.27", "network": network}}


def _paths(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [p.path for p in validate(obj, CONTAINER, old)[1]]


# Ports need Bridge mode (a CEL rule); a host port above 65535 breaks the OpenAPI schema.
CEL_BROKEN = _container(mode="Host", ports=[{"containerPort": 80}])
SCHEMA_BROKEN = _container(mode="Bridge", ports=[{"containerPort": 80, "hostPort": 70000}])


@pytest.mark.parametrize(("stored", "field"), [(CEL_BROKEN, "spec.network.ports"),
                                               (SCHEMA_BROKEN, "spec.network.ports[0].hostPort")])
def test_a_broken_part_left_alone_does_not_block_an_update(stored: dict[str, Any],
                                                           field: str) -> None:
    assert field in _paths(stored)  # refused on create
    status_only = {**copy.deepcopy(stored), "status": {"phase": "Running"}}
    assert _paths(status_only, old=stored) == []
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"team": "web"}
    assert _paths(relabelled, old=stored) == []


def test_a_changed_part_is_checked_again() -> None:
    touched = copy.deepcopy(CEL_BROKEN)
    touched["spec"]["network"]["ports"].append({"containerPort": 81})
    assert "spec.network.ports" in _paths(touched, old=CEL_BROKEN)
    touched = copy.deepcopy(SCHEMA_BROKEN)
    touched["spec"]["network"]["ports"][0]["hostPort"] = 70001
    assert "spec.network.ports[0].hostPort" in _paths(touched, old=SCHEMA_BROKEN)


def test_a_new_error_in_a_changed_part_is_reported_beside_an_old_one() -> None:
    stored = copy.deepcopy(CEL_BROKEN)
    updated = copy.deepcopy(stored)
    updated["spec"]["hostname"] = "x" * 100
    assert _paths(updated, old=stored) == ["spec.hostname"]


def test_rules_of_an_unchanged_spec_are_not_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = validate(_container(mode="None"), CONTAINER)[0]
    evaluated: list[str] = []
    real = cel.holds
    monkeypatch.setattr(cel, "holds", lambda rule, value: evaluated.append(rule) or
                        real(rule, value))
    validate({**stored, "status": {"phase": "Running"}}, CONTAINER, stored)
    assert evaluated == []  # nor the root's (the name they read cannot change)
    evaluated.clear()
    changed = {**stored, "spec": {**stored["spec"], "hostname": "web"}}
    validate(changed, CONTAINER, stored)
    assert evaluated  # the changed spec's rules run
