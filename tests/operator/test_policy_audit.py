"""Objects admitted before their stage's policy tightened are marked, not killed: a
`PolicyViolation` condition and an Event, turned False once the policy allows them again
(real kopf against the test API server)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard_operator.app import registry as operator
from tests.kube.apiserver import ApiServer
from tests.kube.kopfrun import MERGE, eventually, running, serving

pytestmark = pytest.mark.asyncio
API = "/apis/dockyard.dev/v1alpha1"


def _violation(server: ApiServer) -> dict[str, Any]:
    container = server.get("containers", "web", "prod") or {}
    conditions = (container.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "PolicyViolation"), {})


# A rule that tightens, a Container admitted before that breaks it, and how the
# condition's message starts.
TIGHTENED = [
    ({"requirePinnedDigests": True}, {}, "stage prod: spec.image: 'shop/web:1' is a tag"),
    ({"allowUnconfinedSeccomp": False}, {"seccompProfile": {"type": "Unconfined"}},
     "stage prod: spec.seccompProfile.type: Unconfined runs the container without"),
]


@pytest.mark.parametrize(("rule", "spec", "said"), TIGHTENED, ids=[
    next(iter(rule)) for rule, _, _ in TIGHTENED])
async def test_a_policy_that_tightens_marks_what_breaks_it_and_loosening_clears_it(
        rule: dict[str, bool], spec: dict[str, Any], said: str) -> None:
    loose = {name: not value for name, value in rule.items()}
    async with serving() as (server, http):
        async with http.client.post(f"{API}/namespaces/prod/containers", json={
                "apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
                "metadata": {"name": "web", "namespace": "prod"},
                "spec": {"image": "shop/web:1", **spec}}) as answer:
            assert answer.status in (200, 201)
        async with running(operator(), str(http.url).rstrip("/")):
            async with http.client.post(f"{API}/stages", json={
                    "apiVersion": "dockyard.dev/v1alpha1", "kind": "Stage",
                    "metadata": {"name": "prod"},
                    "spec": {"namespaces": ["prod"],
                             "policy": rule}}) as answer:
                assert answer.status in (200, 201)
            await eventually(lambda: _violation(server).get("status") == "True")
            violation = _violation(server)
            assert violation["reason"] == "BreaksStagePolicy"
            assert violation["message"].startswith(said)
            await eventually(lambda: any(
                e.get("reason") == "PolicyViolation" and
                e["involvedObject"]["name"] == "web" for e in server.all("events", group="")))
            assert server.get("containers", "web", "prod") is not None  # not killed
            async with http.client.patch(f"{API}/stages/prod", headers=MERGE, json={
                    "spec": {"policy": loose}}) as answer:
                assert answer.status == 200
            await eventually(lambda: _violation(server).get("status") == "False")
            assert _violation(server)["reason"] == "CompliesWithStagePolicy"
            await eventually(lambda: (server.get("stages", "prod") or {}).get(
                "status", {}).get("phase") == "Ready")
