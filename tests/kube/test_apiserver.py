"""The test API server behaves as a real one where the operator relies on it.

Every test speaks HTTP to it, as kopf does; the last ones run real kopf against it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import kmock
import pytest

from tests.kube.apiserver import ApiServer
from tests.kube.kopfrun import MERGE
from tests.kube.selectors import SelectorError, parse

VOLUMES = "/apis/dockyard.dev/v1alpha1/namespaces/ns/volumes"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


@pytest.fixture
def api(cluster: tuple[ApiServer, kmock.Server]) -> tuple[ApiServer, aiohttp.ClientSession]:
    server, http = cluster
    return server, http.client


def _volume(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Volume",
            "metadata": {"name": name, "labels": labels}, "spec": {"local": {}}}


async def _call(client: aiohttp.ClientSession, method: str, path: str, body: Any = None,
                status: int = 200) -> dict[str, Any]:
    headers = MERGE if method == "PATCH" else {}
    async with client.request(method, path, json=body, headers=headers) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == status, answer
        return answer


def _version(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


@pytest.mark.asyncio
async def test_create_stamps_identity_and_versions_only_grow(api: Any) -> None:
    _, client = api
    first = await _call(client, "POST", VOLUMES, _volume("a"))
    second = await _call(client, "POST", VOLUMES, _volume("b"))
    meta = first["metadata"]
    assert meta["uid"] != second["metadata"]["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert (meta["generation"], meta["namespace"]) == (1, "ns")
    patched = await _call(client, "PATCH", f"{VOLUMES}/a", {"metadata": {"labels": {"x": "1"}}})
    assert _version(first) < _version(second) < _version(patched)


@pytest.mark.asyncio
async def test_generation_grows_with_the_spec_only(api: Any) -> None:
    _, client = api
    await _call(client, "POST", VOLUMES, _volume("a"))
    labelled = await _call(client, "PATCH", f"{VOLUMES}/a",
                           {"metadata": {"annotations": {"note": "x"}}})
    status = await _call(client, "PATCH", f"{VOLUMES}/a/status", {"status": {"phase": "Ready"}})
    spec = await _call(client, "PATCH", f"{VOLUMES}/a", {"spec": {"migration": "Transfer"}})
    assert [o["metadata"]["generation"] for o in (labelled, status, spec)] == [1, 1, 2]


@pytest.mark.asyncio
async def test_the_status_subresource_separates_spec_and_status_writes(api: Any) -> None:
    _, client = api
    created = await _call(client, "POST", VOLUMES, {**_volume("a"), "status": {"phase": "Failed"}})
    assert "status" not in created  # a create's status is dropped
    await _call(client, "PATCH", f"{VOLUMES}/a/status",
                {"status": {"phase": "Ready"}, "spec": {"migration": "Transfer"}})
    after_status = await _call(client, "GET", f"{VOLUMES}/a")
    assert after_status["status"] == {"phase": "Ready"}
    assert after_status["spec"]["migration"] == "Never"
    await _call(client, "PATCH", f"{VOLUMES}/a", {"status": {"phase": "Failed"}})
    assert (await _call(client, "GET", f"{VOLUMES}/a"))["status"]["phase"] == "Ready"


@pytest.mark.asyncio
async def test_conflicts_are_409(api: Any) -> None:
    _, client = api
    created = await _call(client, "POST", VOLUMES, _volume("a"))
    again = await _call(client, "POST", VOLUMES, _volume("a"), status=409)
    assert again["reason"] == "AlreadyExists"
    await _call(client, "PATCH", f"{VOLUMES}/a", {"metadata": {"labels": {"x": "1"}}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"],
                          "labels": {"x": "2"}}}
    conflict = await _call(client, "PATCH", f"{VOLUMES}/a", stale, status=409)
    assert conflict["reason"] == "Conflict"


@pytest.mark.asyncio
async def test_a_no_op_write_changes_no_version_and_null_deletes(api: Any) -> None:
    _, client = api
    created = await _call(client, "POST", VOLUMES, _volume("a", x="1"))
    same = await _call(client, "PATCH", f"{VOLUMES}/a", {"metadata": {"labels": {"x": "1"}}})
    assert _version(same) == _version(created)
    gone = await _call(client, "PATCH", f"{VOLUMES}/a", {"metadata": {"labels": {"x": None}}})
    assert gone["metadata"]["labels"] == {}


@pytest.mark.asyncio
async def test_label_selectors_filter_lists(api: Any) -> None:
    _, client = api
    for name, node in (("a", "n1"), ("b", "n2"), ("c", "n1")):
        await _call(client, "POST", VOLUMES, _volume(name, node=node))
    listed = await _call(client, "GET", f"{VOLUMES}?labelSelector=node%3Dn1")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a", "c"]
    listed = await _call(client, "GET", f"{VOLUMES}?labelSelector=node+notin+(n1)")
    assert [o["metadata"]["name"] for o in listed["items"]] == ["b"]
    bad = await _call(client, "GET", f"{VOLUMES}?labelSelector=node+in+n1", status=400)
    assert "unable to parse" in bad["message"]


async def _watch(client: aiohttp.ClientSession, query: str) -> list[dict[str, Any]]:
    """The events of a watch that the server ends after its timeoutSeconds."""
    events = []
    async with client.get(f"{VOLUMES}?watch=true&timeoutSeconds=1&{query}") as response:
        async for line in response.content:
            if line.strip():
                events.append(json.loads(line))
    return events


@pytest.mark.asyncio
async def test_a_watch_from_a_version_sends_what_came_after_it_that_matches(api: Any) -> None:
    _, client = api
    first = await _call(client, "POST", VOLUMES, _volume("a", node="n1"))
    await _call(client, "POST", VOLUMES, _volume("b", node="n2"))
    await _call(client, "PATCH", f"{VOLUMES}/a", {"metadata": {"annotations": {"k": "v"}}})
    events = await _watch(client, f"resourceVersion={_version(first)}&labelSelector=node%3Dn1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("MODIFIED", "a")]
    from_now = await _watch(client, "labelSelector=node%3Dn2")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in from_now] == [("ADDED", "b")]



@pytest.mark.asyncio
async def test_a_watch_with_a_selector_sees_objects_move_in_and_out_of_it(api: Any) -> None:
    # As the real watch cache: a node agent watching `node=n1` must see a container that
    # is rebound to n2 leave (DELETED), and one bound to n1 arrive (ADDED).
    _, client = api
    first = await _call(client, "POST", VOLUMES, _volume("a", node="n1"))
    await _call(client, "POST", VOLUMES, _volume("b", node="n2"))
    await _call(client, "PATCH", f"{VOLUMES}/a", {"metadata": {"labels": {"node": "n2"}}})
    await _call(client, "PATCH", f"{VOLUMES}/b", {"metadata": {"labels": {"node": "n1"}}})
    events = await _watch(client, f"resourceVersion={_version(first)}&labelSelector=node%3Dn1")
    assert [(e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["labels"])
            for e in events] == [("DELETED", "a", {"node": "n1"}),
                                 ("ADDED", "b", {"node": "n1"})]

@pytest.mark.asyncio
async def test_a_watch_sees_writes_made_while_it_runs(api: Any) -> None:
    _, client = api
    watching = asyncio.ensure_future(_watch(client, ""))
    await asyncio.sleep(0.2)
    await _call(client, "POST", VOLUMES, _volume("late"))
    events = await watching
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "late")]


@pytest.mark.asyncio
async def test_finalizers_hold_a_deleted_object_until_removed(api: Any) -> None:
    server, client = api
    await _call(client, "POST", VOLUMES,
                {**_volume("a"), "metadata": {"name": "a", "finalizers": ["dockyard.dev/x"]}})
    held = await _call(client, "DELETE", f"{VOLUMES}/a")
    assert held["metadata"]["deletionTimestamp"]
    assert server.get("volumes", "a", "ns") is not None
    await _call(client, "PATCH", f"{VOLUMES}/a", {"metadata": {"finalizers": None}})
    assert server.get("volumes", "a", "ns") is None
    await _call(client, "GET", f"{VOLUMES}/a", status=404)


@pytest.mark.asyncio
async def test_invalid_dockyard_objects_are_refused_with_422_naming_the_field(api: Any) -> None:
    _, client = api
    bad = {**_volume("a"), "spec": {"local": {}, "tmpfs": {"sizeLimit": "1Mi"}}}
    refused = await _call(client, "POST", VOLUMES, bad, status=422)
    assert refused["reason"] == "Invalid"
    assert "set exactly one of local, hostPath, tmpfs or provider" in refused["message"]
    await _call(client, "POST", VOLUMES, _volume("a"))
    refused = await _call(client, "PATCH", f"{VOLUMES}/a", {"spec": {"migration": "Sometimes"}},
                          status=422)
    assert "spec.migration" in refused["message"]
    unknown = await _call(client, "PATCH", f"{VOLUMES}/a?fieldValidation=Strict",
                          {"spec": {"colour": "red"}}, status=422)
    assert 'spec.colour: unknown field "colour"' in unknown["message"]
    pruned = await _call(client, "PATCH", f"{VOLUMES}/a", {"spec": {"colour": "red"}})
    assert "colour" not in pruned["spec"]  # without Strict, the server drops it


@pytest.mark.asyncio
async def test_leases_are_served(api: Any) -> None:
    _, client = api
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "node-1"},
             "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}
    created = await _call(client, "POST", LEASES, lease)
    renewed = await _call(client, "PATCH", f"{LEASES}/node-1",
                          {"spec": {"renewTime": "2026-11-28T10:00:00.000000Z"}})
    assert _version(renewed) > _version(created)
    assert renewed["metadata"]["generation"] == 2


def test_label_selector_grammar() -> None:
    labels = {"app": "web", "tier": "front"}
    assert parse("app=web,tier in (front, back)")(labels)
    assert parse("app==web,!gpu")(labels)
    assert not parse("app!=web")(labels)
    assert not parse("tier notin (front)")(labels)
    assert parse("")(labels)
    assert not parse("gpu")(labels)
    with pytest.raises(SelectorError):
        parse("app in web")
