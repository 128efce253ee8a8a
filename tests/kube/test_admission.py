"""Admission webhooks and request identity in the test API server, as kube-apiserver has
them: real HTTP both ways, a small aiohttp server in each test acting as the webhook, and
at the end real kopf serving its own admission handlers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock
import kopf
import pytest

from tests.kube.admission import Attributes, UserInfo, rule_matches, selects
from tests.kube.apiserver import ApiServer
from tests.kube.kopfrun import MERGE, eventually, running

VOLUMES = "/apis/dockyard.dev/v1alpha1/namespaces/ns/volumes"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
VALIDATING = f"{ADMISSION}/validatingwebhookconfigurations"
MUTATING = f"{ADMISSION}/mutatingwebhookconfigurations"
ON_VOLUMES = {"apiGroups": ["dockyard.dev"], "apiVersions": ["v1alpha1"],
              "resources": ["volumes"], "operations": ["*"]}

Answer = Callable[[dict[str, Any]], Any]
"""What a test webhook answers to a review's `request`: the `response` (uid added)."""


@dataclass
class Webhook:
    """A webhook a test runs: where it listens, and what it was asked."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def seen(self) -> list[tuple[str, str, str]]:
        """(operation, resource, subresource) of each request, in order."""
        return [(r["operation"], r["resource"]["resource"], r.get("subResource", ""))
                for r in self.requests]


@contextlib.asynccontextmanager
async def serving_webhook(answer: Answer, *, tls: ssl.SSLContext | None = None,
                          raw: bool = False) -> AsyncIterator[Webhook]:
    """A webhook on 127.0.0.1 answering each AdmissionReview with `answer(request)`, as
    the `response` of a v1 review, or (with `raw`) as the whole body."""
    hook = Webhook(url="")

    async def serve(http: aiohttp.web.Request) -> aiohttp.web.Response:
        review = await http.json()
        hook.requests.append(review["request"])
        hook.paths.append(http.path_qs)
        result = answer(review["request"])
        if inspect.isawaitable(result):
            result = await result
        body = result if raw else {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], **result}}
        return aiohttp.web.json_response(body)

    app = aiohttp.web.Application()
    app.router.add_post("/{path:.*}", serve)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = runner.addresses[0][1]
        hook.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        yield hook
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[ApiServer, aiohttp.ClientSession]]:
    """A test API server made with `options`, and a client of it."""
    async with ApiServer(**options) as server, kmock.Server(server) as http:
        yield server, http.client


@pytest.fixture
def api(cluster: tuple[ApiServer, kmock.Server]) -> tuple[ApiServer, aiohttp.ClientSession]:
    server, http = cluster
    return server, http.client


def allowed(**response: Any) -> Answer:
    return lambda _: {"allowed": True, **response}


def webhook(name: str, url: str | None = None, **fields: Any) -> dict[str, Any]:
    """A webhook of a configuration, on every operation on volumes unless told."""
    return {"name": name, "clientConfig": {"url": url}, "rules": [ON_VOLUMES],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], **fields}


def volume(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Volume",
            "metadata": {"name": name, "labels": labels}, "spec": {"local": {}}}


async def call(client: aiohttp.ClientSession, method: str, path: str, body: Any = None, *,
               status: int = 200, bearer: str | None = None) -> tuple[dict[str, Any], Any]:
    """The JSON answer and the headers of a request (with the `bearer` token), which must
    answer `status`."""
    headers = dict(MERGE) if method == "PATCH" else {}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    async with client.request(method, path, json=body, headers=headers) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == status, answer
        return answer, response.headers


async def configure(client: aiohttp.ClientSession, plural: str, name: str,
                    *webhooks: dict[str, Any]) -> dict[str, Any]:
    kind = "MutatingWebhookConfiguration" if plural == MUTATING else \
        "ValidatingWebhookConfiguration"
    created, _ = await call(client, "POST", plural, {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "webhooks": list(webhooks)})
    return created


def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- configurations

@pytest.mark.asyncio
async def test_webhook_configurations_are_stored_with_the_defaults_the_server_fills_in(
        api: Any) -> None:
    server, client = api
    await configure(client, VALIDATING, "policy", webhook("check.test.example.dev",
                                                          "http://127.0.0.1:1/"))
    stored = server.get(VALIDATING.rsplit("/", 1)[1], "policy",
                        group="admissionregistration.k8s.io")
    assert stored is not None
    (hook,) = stored["webhooks"]
    assert {k: hook[k] for k in ("failurePolicy", "matchPolicy", "timeoutSeconds",
                                 "namespaceSelector", "objectSelector")} == {
        "failurePolicy": "Fail", "matchPolicy": "Equivalent", "timeoutSeconds": 10,
        "namespaceSelector": {}, "objectSelector": {}}
    assert hook["rules"][0]["scope"] == "*"
    mutating = await configure(client, MUTATING, "defaults", webhook(
        "fill.test.example.dev", clientConfig={"service": {"namespace": "hooks",
                                                           "name": "hook"}}))
    assert mutating["webhooks"][0]["reinvocationPolicy"] == "Never"
    assert mutating["webhooks"][0]["clientConfig"]["service"]["port"] == 443


@pytest.mark.asyncio
async def test_invalid_webhook_configurations_are_refused_naming_each_field(api: Any) -> None:
    _, client = api
    refused, _ = await call(client, "POST", VALIDATING, {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "bad"},
        "webhooks": [
            {"name": "two.segments", "clientConfig": {"url": "https://h/", "service": {}},
             "admissionReviewVersions": ["v2"], "timeoutSeconds": 31, "rules": [
                 {**ON_VOLUMES, "operations": ["PATCH"]}],
             "objectSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
             "matchConditions": [{"name": "c", "expression": "true"}]},
            webhook("ok.test.example.dev", "https://h/?q=1")]}, status=422)
    assert refused["reason"] == "Invalid"
    fields = {cause["field"] for cause in refused["details"]["causes"]}
    assert fields == {
        "webhooks[0].name", "webhooks[0].clientConfig", "webhooks[0].admissionReviewVersions",
        "webhooks[0].sideEffects", "webhooks[0].timeoutSeconds",
        "webhooks[0].rules[0].operations[0]", "webhooks[0].objectSelector.matchExpressions"
        "[0].values", "webhooks[0].matchConditions", "webhooks[1].clientConfig.url"}
    assert "should be a domain with at least three segments" in refused["message"]


@pytest.mark.asyncio
async def test_a_broken_webhook_cannot_lock_its_own_configuration(api: Any) -> None:
    # Configurations are never sent to webhooks, or a webhook that is down and matches
    # everything could never be removed.
    server, client = api
    everything = {"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"],
                  "operations": ["*"]}
    await configure(client, VALIDATING, "all", webhook(
        "all.test.example.dev", f"http://127.0.0.1:{free_port()}/", rules=[everything]))
    await call(client, "POST", VOLUMES, volume("a"), status=500)
    await call(client, "DELETE", f"{VALIDATING}/all")
    await call(client, "POST", VOLUMES, volume("a"))
    assert server.get("volumes", "a", "ns") is not None


# ---------------------------------------------------------------------- denial and order

@pytest.mark.asyncio
async def test_a_denial_fails_the_request_with_the_webhooks_code_and_nothing_is_stored(
        api: Any) -> None:
    server, client = api

    def owners_only(request: dict[str, Any]) -> dict[str, Any]:
        labels = request["object"]["metadata"].get("labels") or {}
        if "owner" in labels:
            return {"allowed": True}
        if request["object"]["metadata"]["name"] == "mute":
            return {"allowed": False, "status": {"code": 200}}  # below 400: made a 400
        return {"allowed": False, "status": {
            "code": 403, "reason": "Forbidden", "message": "a volume needs an owner label"}}

    async with serving_webhook(owners_only) as hook:
        await configure(client, VALIDATING, "owners", webhook("owner.test.example.dev",
                                                              hook.url))
        _, before = server.changes()
        denied, _ = await call(client, "POST", VOLUMES, volume("data"), status=403)
        assert denied["message"] == ('admission webhook "owner.test.example.dev" denied the '
                                     "request: a volume needs an owner label")
        assert (denied["reason"], denied["code"]) == ("Forbidden", 403)
        mute, _ = await call(client, "POST", VOLUMES, volume("mute"), status=400)
        assert mute["message"] == ('admission webhook "owner.test.example.dev" denied the '
                                   "request without explanation")
        assert "reason" not in mute
        assert server.get("volumes", "data", "ns") is None
        assert server.changes(before)[0] == []  # no write, so no watch event either
        await call(client, "POST", VOLUMES, volume("data", owner="ops"))
        assert [r["object"]["metadata"]["name"] for r in hook.requests] == \
            ["data", "mute", "data"]


@pytest.mark.asyncio
async def test_mutating_webhooks_patch_in_name_order_before_validation_and_validating_webhooks(
        api: Any) -> None:
    server, client = api

    def label(key: str) -> Answer:
        def answer(request: dict[str, Any]) -> dict[str, Any]:
            patch = [{"op": "add", "path": f"/metadata/labels/{key}", "value": "yes"}]
            if request["object"]["metadata"]["name"] == "bad" and key == "second":
                patch.append({"op": "replace", "path": "/spec/migration",
                              "value": "Sometimes"})
            return {"allowed": True, "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode()}
        return answer

    async with serving_webhook(label("first")) as first, \
            serving_webhook(label("second")) as second, \
            serving_webhook(allowed()) as validating:
        # Created out of order: configurations are called in the order of their names.
        await configure(client, MUTATING, "b-second", webhook("second.test.example.dev",
                                                              second.url))
        await configure(client, MUTATING, "a-first", webhook("first.test.example.dev",
                                                             first.url))
        await configure(client, VALIDATING, "check", webhook("check.test.example.dev",
                                                             validating.url))
        await call(client, "POST", VOLUMES, volume("data", app="db"))
        assert second.requests[0]["object"]["metadata"]["labels"] == {"app": "db",
                                                                     "first": "yes"}
        # The object the real server decodes is defaulted before any webhook sees it.
        assert first.requests[0]["object"]["spec"]["migration"] == "Never"
        seen = validating.requests[0]["object"]
        assert seen["metadata"]["labels"] == {"app": "db", "first": "yes", "second": "yes"}
        assert seen["metadata"]["uid"]
        assert "resourceVersion" not in seen["metadata"]
        stored = server.get("volumes", "data", "ns")
        assert stored is not None
        assert stored["metadata"]["labels"] == seen["metadata"]["labels"]

        # The schema is checked after the mutating webhooks: a bad patch is refused (422)
        # and never reaches the validating ones.
        invalid, _ = await call(client, "POST", VOLUMES, volume("bad"), status=422)
        assert "spec.migration" in invalid["message"]
        assert len(validating.requests) == 1


# ---------------------------------------------------------------------- matching

def _attributes(resource: str = "volumes", *, group: str = "dockyard.dev",
                subresource: str = "", operation: str = "CREATE",
                namespace: str = "ns") -> Attributes:
    return Attributes(group=group, version="v1alpha1", kind="K", resource=resource,
                      subresource=subresource, operation=operation, name="n",
                      namespace=namespace, user={}, options={})


@pytest.mark.parametrize(("rule", "request_", "matched"), [
    ({"resources": ["volumes"]}, _attributes(), True),
    ({"resources": ["volumes"]}, _attributes(subresource="status"), False),
    ({"resources": ["volumes/status"]}, _attributes(subresource="status"), True),
    ({"resources": ["volumes/status"]}, _attributes(), False),
    ({"resources": ["*"]}, _attributes(subresource="status"), False),
    ({"resources": ["*/status"]}, _attributes("containers", subresource="status"), True),
    ({"resources": ["volumes/*"]}, _attributes(), True),  # as kube-apiserver matches it
    ({"resources": ["*/*"]}, _attributes("leases", group="coordination.k8s.io"), False),
    ({"apiGroups": ["*"], "resources": ["*/*"]}, _attributes("leases"), True),
    ({"operations": ["UPDATE"]}, _attributes(), False),
    ({"operations": ["CREATE", "DELETE"]}, _attributes(operation="DELETE"), True),
    ({"apiVersions": ["v1"]}, _attributes(), False),
    ({"scope": "Namespaced"}, _attributes(), True),
    ({"scope": "Cluster"}, _attributes(), False),
    ({"scope": "Cluster"}, _attributes(namespace=""), True),
    ({"scope": "Cluster", "apiGroups": [""], "resources": ["namespaces"]},
     _attributes("namespaces", group="", namespace="ns"), True),
    ({"scope": "Namespaced", "apiGroups": [""], "resources": ["namespaces"]},
     _attributes("namespaces", group="", namespace="ns"), False),
])
def test_rules_match_groups_versions_resources_operations_and_scope(
        rule: dict[str, Any], request_: Attributes, matched: bool) -> None:
    assert rule_matches({**ON_VOLUMES, **rule}, request_) is matched


def test_label_selectors_match_as_kubernetes_label_selectors_do() -> None:
    labels = {"tier": "db", "zone": "a"}
    assert selects({}, labels)
    assert selects({"matchLabels": {"tier": "db"}}, labels)
    assert not selects({"matchLabels": {"tier": "db", "zone": "b"}}, labels)
    expressions = [({"key": "tier", "operator": "In", "values": ["db", "cache"]}, True),
                   ({"key": "tier", "operator": "NotIn", "values": ["db"]}, False),
                   ({"key": "gpu", "operator": "NotIn", "values": ["yes"]}, True),
                   ({"key": "gpu", "operator": "In", "values": ["yes"]}, False),
                   ({"key": "zone", "operator": "Exists"}, True),
                   ({"key": "gpu", "operator": "DoesNotExist"}, True)]
    for expression, held in expressions:
        assert selects({"matchExpressions": [expression]}, labels) is held, expression


@pytest.mark.asyncio
async def test_requests_reach_the_webhooks_whose_rules_cover_them(api: Any) -> None:
    _, client = api
    async with serving_webhook(allowed()) as hook:
        await configure(client, VALIDATING, "some", webhook("some.test.example.dev", hook.url,
                                                            rules=[
            {**ON_VOLUMES, "resources": ["volumes/status"], "operations": ["UPDATE"]},
            {"apiGroups": [""], "apiVersions": ["v1"], "resources": ["*"],
             "operations": ["CREATE"], "scope": "Cluster"}]))
        await call(client, "POST", VOLUMES, volume("data"))
        await call(client, "PATCH", f"{VOLUMES}/data", {"metadata": {"labels": {"a": "1"}}})
        await call(client, "PATCH", f"{VOLUMES}/data/status", {"status": {"phase": "Ready"}})
        await call(client, "POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
        await call(client, "POST", "/api/v1/namespaces/team/events", {
            "metadata": {"name": "e"}, "reason": "R"})
        assert hook.seen() == [("UPDATE", "volumes", "status"), ("CREATE", "namespaces", "")]
        status_request, namespace_request = hook.requests
        assert status_request["object"]["status"] == {"phase": "Ready"}
        assert status_request["kind"] == {"group": "dockyard.dev", "version": "v1alpha1",
                                          "kind": "Volume"}
        assert namespace_request["namespace"] == "team"  # a Namespace's own name


@pytest.mark.asyncio
async def test_object_and_namespace_selectors_choose_the_requests_sent(api: Any) -> None:
    _, client = api
    async with serving_webhook(allowed()) as db, serving_webhook(allowed()) as by_name:
        await configure(client, VALIDATING, "selective", webhook(
            "db.test.example.dev", db.url,
            objectSelector={"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["db"]}]},
            namespaceSelector={"matchLabels": {"team": "storage"}}), webhook(
            "named.test.example.dev", by_name.url,
            namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "plain"}}))
        await call(client, "POST", "/api/v1/namespaces", {
            "metadata": {"name": "storage", "labels": {"team": "storage"}}})
        storage = "/apis/dockyard.dev/v1alpha1/namespaces/storage/volumes"
        plain = "/apis/dockyard.dev/v1alpha1/namespaces/plain/volumes"
        await call(client, "POST", storage, volume("db", tier="db"))
        await call(client, "POST", storage, volume("web", tier="web"))
        await call(client, "POST", plain, volume("db", tier="db"))  # no Namespace: no labels
        # A write that takes the object out of the selector is still sent (old matches).
        await call(client, "PATCH", f"{storage}/db", {"metadata": {"labels": {"tier": "web"}}})
        # The namespace's labels are read as they are now.
        await call(client, "PATCH", "/api/v1/namespaces/storage",
                   {"metadata": {"labels": {"team": "compute"}}})
        await call(client, "POST", storage, volume("db2", tier="db"))
        assert [(r["operation"], r["namespace"], r["name"]) for r in db.requests] == [
            ("CREATE", "storage", "db"), ("UPDATE", "storage", "db")]
        assert [(r["namespace"], r["name"]) for r in by_name.requests] == [("plain", "db")]


@pytest.mark.asyncio
async def test_namespace_objects_are_served_at_their_own_paths(api: Any) -> None:
    # kmock alone reads /api/v1/namespaces/NAME as a namespace, not as the object.
    server, client = api
    await call(client, "POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    await call(client, "POST", "/api/v1/namespaces/team/events", {"metadata": {"name": "e"}})
    patched, _ = await call(client, "PATCH", "/api/v1/namespaces/team",
                            {"metadata": {"labels": {"a": "1"}}})
    assert patched["kind"] == "Namespace"
    listed, _ = await call(client, "GET", "/api/v1/namespaces?labelSelector=a%3D1")
    assert [n["metadata"]["name"] for n in listed["items"]] == ["team"]
    async with client.get("/api/v1/namespaces?watch=true&timeoutSeconds=1") as response:
        events = [json.loads(line) async for line in response.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "team")]
    await call(client, "DELETE", "/api/v1/namespaces/team")
    await call(client, "GET", "/api/v1/namespaces/team", status=404)
    assert server.get("events", "e", "team", group="") is not None


# ---------------------------------------------------------------------- failures

@pytest.mark.asyncio
async def test_a_webhook_that_cannot_be_called_fails_the_request_unless_ignored(
        api: Any) -> None:
    server, client = api
    url = f"http://127.0.0.1:{free_port()}/check"
    await configure(client, VALIDATING, "down", webhook("down.test.example.dev", url))
    failed, _ = await call(client, "POST", VOLUMES, volume("data"), status=500)
    assert failed["reason"] == "InternalError"
    assert failed["message"].startswith(
        'Internal error occurred: failed calling webhook "down.test.example.dev": failed to '
        f'call webhook: Post "{url}?timeout=10s": ')
    assert server.get("volumes", "data", "ns") is None
    await call(client, "PATCH", f"{VALIDATING}/down", {
        "webhooks": [webhook("down.test.example.dev", url, failurePolicy="Ignore")]})
    await call(client, "POST", VOLUMES, volume("data"))


@pytest.mark.asyncio
async def test_an_answer_that_is_no_admission_review_is_a_failed_call(api: Any) -> None:
    _, client = api
    answers: dict[str, dict[str, Any]] = {
        "other-uid": {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "response": {"uid": "someone else's", "allowed": True}},
        "empty": {"hello": "world"}}
    for name, body in answers.items():
        def answer(_: dict[str, Any], body: dict[str, Any] = body) -> dict[str, Any]:
            return body

        async with serving_webhook(answer, raw=True) as hook:
            await configure(client, VALIDATING, name, webhook(f"{name}.test.example.dev",
                                                              hook.url))
            failed, _ = await call(client, "POST", VOLUMES, volume("data"), status=500)
            assert "received invalid webhook response" in failed["message"]
            await call(client, "DELETE", f"{VALIDATING}/{name}")
    patching = {"allowed": True, "patchType": "JSONPatch",
                "patch": base64.b64encode(b"[]").decode()}
    async with serving_webhook(allowed(**patching)) as hook:
        await configure(client, VALIDATING, "patching", webhook("patch.test.example.dev",
                                                                hook.url))
        failed, _ = await call(client, "POST", VOLUMES, volume("data"), status=500)
        assert "validating webhook may not return response.patch" in failed["message"]


@pytest.mark.asyncio
async def test_a_webhook_slower_than_its_timeout_is_a_failed_call(api: Any) -> None:
    _, client = api
    released = asyncio.Event()

    async def slow(_: dict[str, Any]) -> dict[str, Any]:
        await released.wait()
        return {"allowed": True}

    async with serving_webhook(slow) as hook:
        try:
            await configure(client, VALIDATING, "slow", webhook("slow.test.example.dev",
                                                                hook.url, timeoutSeconds=1))
            started = asyncio.get_running_loop().time()
            failed, _ = await call(client, "POST", VOLUMES, volume("data"), status=500)
            assert failed["message"].endswith("context deadline exceeded")
            assert asyncio.get_running_loop().time() - started < 5
        finally:
            released.set()


# ---------------------------------------------------------------------- what is sent

@pytest.mark.asyncio
async def test_user_info_comes_from_the_bearer_token_or_is_anonymous() -> None:
    alice = UserInfo("alice", groups=("storage-admins",), uid="u-1")
    async with serving(users={"alice-token": alice}) as (_, client), \
            serving_webhook(allowed()) as hook:
        await configure(client, VALIDATING, "who", webhook("who.test.example.dev", hook.url))
        await call(client, "POST", VOLUMES, volume("a"), bearer="alice-token")
        await call(client, "POST", VOLUMES, volume("b"))
        await call(client, "POST", VOLUMES, volume("c"), bearer="nobody's")
        assert [r["userInfo"] for r in hook.requests] == [
            {"username": "alice", "uid": "u-1",
             "groups": ["storage-admins", "system:authenticated"]},
            {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
            {"username": "system:anonymous", "groups": ["system:unauthenticated"]}]
    async with serving() as (_, client), serving_webhook(allowed()) as hook:
        await configure(client, VALIDATING, "who", webhook("who.test.example.dev", hook.url))
        await call(client, "POST", VOLUMES, volume("a"), bearer="test")  # the kubeconfigs'
        assert hook.requests[0]["userInfo"] == {
            "username": "test", "groups": ["system:masters", "system:authenticated"]}


@pytest.mark.asyncio
async def test_an_update_carries_the_old_object_and_a_delete_only_the_old_one(
        api: Any) -> None:
    server, client = api

    def keep_protected(request: dict[str, Any]) -> dict[str, Any]:
        old = request["oldObject"] or {}
        if request["operation"] == "DELETE" and old["metadata"]["labels"].get("keep"):
            return {"allowed": False, "status": {"code": 403, "message": "kept"}}
        return {"allowed": True}

    async with serving_webhook(keep_protected) as hook:
        await configure(client, VALIDATING, "all", webhook("all.test.example.dev", hook.url))
        created, _ = await call(client, "POST", VOLUMES, volume("data", keep="yes"))
        updated, _ = await call(client, "PATCH", f"{VOLUMES}/data",
                                {"metadata": {"labels": {"size": "big"}}})
        await call(client, "DELETE", f"{VOLUMES}/data", status=403)
        assert server.get("volumes", "data", "ns") is not None
        await call(client, "PATCH", f"{VOLUMES}/data", {"metadata": {"labels": {"keep": None}}})
        await call(client, "DELETE", f"{VOLUMES}/data?propagationPolicy=Foreground")
        create, update, refused, _, delete = hook.requests
        assert [r["operation"] for r in (create, update, refused, delete)] == \
            ["CREATE", "UPDATE", "DELETE", "DELETE"]
        assert create["oldObject"] is None
        assert create["options"] == {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        assert update["oldObject"] == created
        assert update["object"]["metadata"]["labels"] == {"keep": "yes", "size": "big"}
        assert update["options"]["kind"] == "UpdateOptions"
        assert refused["object"] is None
        assert refused["oldObject"] == updated
        assert delete["options"] == {"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions",
                                     "propagationPolicy": "Foreground"}
        assert (delete["name"], delete["namespace"], delete["dryRun"]) == ("data", "ns", False)
        assert server.get("volumes", "data", "ns") is None


@pytest.mark.asyncio
async def test_warnings_from_webhooks_come_back_as_warning_headers(api: Any) -> None:
    _, client = api
    warnings = ["volume has no size limit", 'node "n1" is full']
    async with serving_webhook(allowed(warnings=warnings)) as first, \
            serving_webhook(lambda _: {"allowed": False, "warnings": ["last"]}) as second:
        await configure(client, VALIDATING, "warn", webhook("warn.test.example.dev",
                                                            first.url))
        _, headers = await call(client, "POST", VOLUMES, volume("a"))
        assert headers.getall("Warning") == ['299 - "volume has no size limit"',
                                             '299 - "node \\"n1\\" is full"']
        await configure(client, VALIDATING, "warn-and-deny", webhook(
            "deny.test.example.dev", second.url))
        _, headers = await call(client, "POST", VOLUMES, volume("b"), status=400)
        assert len(headers.getall("Warning")) == 3  # a refusal still carries them


@pytest.mark.asyncio
async def test_a_dry_run_is_admitted_but_nothing_is_stored(api: Any) -> None:
    server, client = api
    async with serving_webhook(allowed()) as hook:
        await configure(client, VALIDATING, "dry", webhook("dry.test.example.dev", hook.url))
        _, before = server.changes()
        answered, _ = await call(client, "POST", f"{VOLUMES}?dryRun=All", volume("data"))
        assert answered["metadata"]["uid"]
        assert "resourceVersion" not in answered["metadata"]
        assert server.get("volumes", "data", "ns") is None
        assert server.changes(before)[0] == []
        assert hook.requests[0]["dryRun"] is True
        assert hook.requests[0]["options"]["dryRun"] == ["All"]
        await call(client, "POST", f"{VOLUMES}?dryRun=Some", volume("data"), status=400)


@pytest.mark.asyncio
async def test_a_write_changed_under_a_waiting_webhook_is_tried_again_on_the_new_object(
        api: Any) -> None:
    # While a webhook is deciding on a write, another write lands on the same object: the
    # first is applied to the object as it is now, as the real server's update loop does,
    # instead of overwriting the other.
    server, client = api
    await call(client, "POST", VOLUMES, volume("data"))

    async def meddling(request: dict[str, Any]) -> dict[str, Any]:
        if (request["object"]["metadata"].get("labels") or {}).get("first") and \
                len(hook.requests) == 1:
            await call(client, "PATCH", f"{VOLUMES}/data",
                       {"metadata": {"labels": {"second": "yes"}}})
        return {"allowed": True}

    async with serving_webhook(meddling) as hook:
        await configure(client, VALIDATING, "meddling", webhook(
            "meddling.test.example.dev", hook.url,
            rules=[{**ON_VOLUMES, "operations": ["UPDATE"]}]))
        await call(client, "PATCH", f"{VOLUMES}/data", {"metadata": {"labels": {"first": "yes"}}})
        stored = server.get("volumes", "data", "ns")
        assert stored is not None
        assert stored["metadata"]["labels"] == {"first": "yes", "second": "yes"}
        assert hook.requests[2]["oldObject"]["metadata"]["labels"] == {"second": "yes"}


# ---------------------------------------------------------------------- TLS and services

def _certificates(directory: Path, hostname: str) -> tuple[bytes, Path, Path]:
    """A CA and a server certificate for `hostname` signed by it, made with openssl: the
    CA's PEM, and the certificate's and key's files."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=webhook test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", *key, "-keyout", "hook.key", "-out", "hook.csr", "-subj", f"/CN={hostname}")
    (directory / "hook.ext").write_text(
        f"subjectAltName=DNS:{hostname}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "hook.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "hook.pem", "-days", "1", "-extfile", "hook.ext")
    return (directory / "ca.pem").read_bytes(), directory / "hook.pem", directory / "hook.key"


@pytest.mark.asyncio
async def test_a_service_webhook_is_called_over_https_verified_against_its_ca_bundle(
        tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    ca, certificate, key = _certificates(tmp_path, "hook.hooks.svc")
    other_ca, _, _ = _certificates(tmp_path / "other", "hook.hooks.svc")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate, key)
    async with serving_webhook(allowed(), tls=tls) as hook, \
            serving(service_urls={("hooks", "hook", 8443): hook.url}) as (server, client):
        def service(name: str = "hook", bundle: bytes = ca) -> dict[str, Any]:
            return {"service": {"namespace": "hooks", "name": name, "port": 8443,
                                "path": "/validate"},
                    "caBundle": base64.b64encode(bundle).decode()}

        await configure(client, VALIDATING, "tls", webhook("tls.test.example.dev",
                                                           clientConfig=service()))
        await call(client, "POST", VOLUMES, volume("a"))
        assert hook.paths == ["/validate?timeout=10s"]
        for config, why in ((service(bundle=other_ca), "certificate verify failed"),
                            (service(name="gone"), 'service "gone" not found')):
            await call(client, "PATCH", f"{VALIDATING}/tls", {
                "webhooks": [webhook("tls.test.example.dev", clientConfig=config)]})
            failed, _ = await call(client, "POST", VOLUMES, volume("b"), status=500)
            assert why in failed["message"]
        assert server.get("volumes", "b", "ns") is None


# ---------------------------------------------------------------------- kopf

@pytest.mark.asyncio
async def test_kopf_configures_its_webhooks_and_its_handlers_deny_and_mutate(
        cluster: Any) -> None:
    server, http = cluster
    registry = kopf.OperatorRegistry()
    users: list[str] = []

    @kopf.on.startup(registry=registry)
    def admission(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = kopf.WebhookServer(addr="127.0.0.1", insecure=True)
        settings.admission.managed = "test.example.dev"

    @kopf.on.validate("dockyard.dev", "v1alpha1", "volumes", id="owned",
                      registry=registry)
    def owned(labels: kopf.Labels, userinfo: kopf.UserInfo, **_: Any) -> None:
        users.append(userinfo["username"])
        if "owner" not in labels:
            raise kopf.AdmissionError("a volume needs an owner label", code=403)

    @kopf.on.mutate("dockyard.dev", "v1alpha1", "volumes", id="marked",
                    registry=registry)
    def marked(patch: kopf.Patch, **_: Any) -> None:
        patch.metadata.labels["marked-by"] = "kopf"

    def configured(plural: str) -> bool:
        found = server.get(plural, "test.example.dev", group="admissionregistration.k8s.io")
        return bool(found and found.get("webhooks"))

    async with running(registry, str(http.url)):
        await eventually(lambda: configured("validatingwebhookconfigurations")
                         and configured("mutatingwebhookconfigurations"))
        denied, _ = await call(http.client, "POST", VOLUMES, volume("data"), status=403,
                               bearer="test")
        assert denied["message"] == ('admission webhook "owned.test.example.dev" denied the '
                                     "request: a volume needs an owner label")
        created, _ = await call(http.client, "POST", VOLUMES, volume("data", owner="ops"))
        assert created["metadata"]["labels"] == {"owner": "ops", "marked-by": "kopf"}
        assert users == ["test", "system:anonymous"]
