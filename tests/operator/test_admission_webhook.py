"""The operator's admission webhooks, over real HTTP: AdmissionReview requests as the API
server sends them, to the server kopf runs for the operator, answered from the Stages the
operator watches in the test API server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jsonpatch
import kopf
import pytest

from dockyard_api.stage import StagePolicy
from dockyard_operator.admission import FORBIDDEN, stamp
from dockyard_operator.app import Webhooks
from dockyard_operator.app import registry as operator
from tests.kube.kopfrun import running, serving

pytestmark = pytest.mark.asyncio
DIGEST = "sha256:" + "d" * 64
PROD = {"namespaces": ["prod"], "upstream": "staging", "policy": {
    "requirePinnedDigests": True, "requireReadOnlyRootfs": True,
    "requireNoNewPrivileges": True, "allowHostPath": False}}
STAGES = {"staging": {"namespaces": ["staging"]}, "prod": PROD}
"""The Stages `_webhook()` creates unless told otherwise: a lenient one and a strict one."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Webhook:
    """The operator's webhook server, as the API server calls it."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def review(self, path: str, obj: dict[str, Any], old: dict[str, Any] | None = None,
                     *, user: str = "bob", groups: tuple[str, ...] = ()) -> dict[str, Any]:
        meta, kind = obj["metadata"], obj["kind"]
        plural = kind.lower() + "s"
        request = {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "dockyard.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "dockyard.dev", "version": "v1alpha1", "resource": plural},
            "requestKind": {"group": "dockyard.dev", "version": "v1alpha1", "kind": kind},
            "requestResource": {"group": "dockyard.dev", "version": "v1alpha1",
                                "resource": plural},
            "name": meta["name"], "namespace": meta.get("namespace"),
            "operation": "CREATE" if old is None else "UPDATE",
            "userInfo": {"username": user, "groups": [*groups, "system:authenticated"]},
            "object": obj, "oldObject": old, "dryRun": False}
        async with self.http.post(f"{self.url}/{path}", json={
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": request}) as answer:
            assert answer.status == 200, await answer.text()
            review: dict[str, Any] = await answer.json()
        response: dict[str, Any] = review["response"]
        assert response["uid"] == request["uid"]
        return response


@contextlib.asynccontextmanager
async def _webhook(stages: Mapping[str, dict[str, Any]] = STAGES,
                   probe: dict[str, Any] | None = None) -> AsyncIterator[Webhook]:
    """The operator's webhooks, answering from `stages` (name → spec) once `probe`, an
    object one of them refuses (default: a tag in prod), is refused."""
    port = _free_port()
    server = kopf.WebhookServer(addr="127.0.0.1", port=port, host="127.0.0.1", insecure=True)
    async with serving() as (_, http):
        for name, spec in stages.items():
            async with http.client.post("/apis/dockyard.dev/v1alpha1/stages", json={
                    "apiVersion": "dockyard.dev/v1alpha1", "kind": "Stage",
                    "metadata": {"name": name}, "spec": spec}) as answer:
                assert answer.status in (200, 201), await answer.text()
        async with running(operator(webhooks=Webhooks(server)), str(http.url).rstrip("/")), \
                aiohttp.ClientSession() as client:
            webhook = Webhook(client, f"http://127.0.0.1:{port}")
            await _until_stages_are_known(webhook, probe or _container("shop/web:1"))
            yield webhook


async def _until_stages_are_known(webhook: Webhook, probe: dict[str, Any]) -> None:
    """The server answers once kopf listens; the verdicts once the operator has started
    (a refusal, not an error: before its startup it cannot read the Stages)."""
    for _ in range(200):
        with contextlib.suppress(aiohttp.ClientError):
            answer = await webhook.review("policy", probe)
            if answer.get("status", {}).get("code") == FORBIDDEN:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the webhook never refused {probe}")


def _container(image: str, namespace: str = "prod", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"image": image, **spec}}


def _promotion(namespace: str = "prod", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Promotion",
            "metadata": {"name": "web-1", "namespace": namespace},
            "spec": {"stage": "prod", "images": [{"image": "web", "digest": DIGEST}],
                     **spec}}


def _patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"], response
    if "patch" not in response:
        return obj
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    patched: dict[str, Any] = jsonpatch.apply_patch(obj, operations)
    return patched


async def test_a_container_that_breaks_its_stage_policy_is_refused_naming_fields_and_stage(
        ) -> None:
    async with _webhook() as webhook:
        answer = await webhook.review("policy", _container("shop/web:1"))
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 403
        message = answer["status"]["message"]
        assert message.startswith("stage prod forbids this: spec.image: 'shop/web:1' is a tag")
        assert "spec.readOnlyRootfs: the stage requires a read-only root filesystem" in message
        assert "spec.noNewPrivileges: the stage requires that processes cannot gain" in message


async def test_a_compliant_container_is_allowed_without_warnings() -> None:
    """requireNoNewPrivileges is enforced (spec.noNewPrivileges): no rule is left to warn
    about as not enforced yet."""
    async with _webhook() as webhook:
        answer = await webhook.review("policy", _container(
            f"shop/web@{DIGEST}", readOnlyRootfs=True, noNewPrivileges=True))
        assert answer["allowed"] is True
        assert not answer.get("warnings")


async def test_a_container_without_no_new_privileges_is_refused_where_required() -> None:
    async with _webhook() as webhook:
        answer = await webhook.review("policy", _container(
            f"shop/web@{DIGEST}", readOnlyRootfs=True))
        assert answer["allowed"] is False
        assert answer["status"]["message"] == (
            "stage prod forbids this: spec.noNewPrivileges: the stage requires that "
            "processes cannot gain privileges through setuid binaries: set "
            "noNewPrivileges: true")


async def test_namespaces_of_no_stage_and_lenient_stages_allow_anything() -> None:
    async with _webhook() as webhook:
        for namespace in ("default", "staging"):
            answer = await webhook.review("policy", _container("shop/web:1", namespace))
            assert answer["allowed"] is True


async def test_an_object_admitted_before_the_policy_may_change_anything_but_to_break_more(
        ) -> None:
    async with _webhook() as webhook:
        old = _container("shop/web:1")
        labelled = {**old, "metadata": {**old["metadata"], "labels": {"team": "shop"}}}
        assert (await webhook.review("policy", labelled,
                                     old))["allowed"] is True
        fixed = _container(f"shop/web@{DIGEST}")  # one fix, the other violation stays
        assert (await webhook.review("policy", fixed,
                                     old))["allowed"] is True
        answer = await webhook.review("policy", _container("shop/web:2"), old)
        assert answer["allowed"] is False  # another tag: a new spec.image violation
        unruled = _container("shop/web:1", capabilities={"add": ["SYS_ADMIN"]})
        assert (await webhook.review("policy", unruled,
                                     old))["allowed"] is True  # prod sets no capability rule


async def test_volumes_and_images_are_checked_too() -> None:
    async with _webhook() as webhook:
        volume = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Volume",
                  "metadata": {"name": "logs", "namespace": "prod"},
                  "spec": {"hostPath": {"path": "/var/log"}}}
        answer = await webhook.review("policy", volume)
        assert "spec.hostPath: the stage allows no hostPath volumes" in \
            answer["status"]["message"]
        image = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Image",
                 "metadata": {"name": "web", "namespace": "prod"},
                 "spec": {"reference": "shop/web:1"}}
        answer = await webhook.review("policy", image)
        assert "spec.digest: 'shop/web:1' is a tag" in answer["status"]["message"]


async def test_the_requester_and_each_approver_are_who_the_api_server_says() -> None:
    async with _webhook() as webhook:
        created = _patched(_promotion(),
                           await webhook.review("approvals", _promotion(), user="bob"))
        assert created["metadata"]["annotations"] == {"dockyard.dev/requested-by": "bob"}
        forged = {**created, "spec": {**created["spec"], "approvals": [{"by": "alice"}]}}
        approved = _patched(forged, await webhook.review(
            "approvals", forged, created, user="mallory", groups=("dev",)))
        (approval,) = approved["spec"]["approvals"]
        assert (approval["by"], approval["groups"]) == ("mallory",
                                                       ["dev", "system:authenticated"])
        assert approval["at"]
        renamed = {**approved, "metadata": {**approved["metadata"], "annotations": {
            "dockyard.dev/requested-by": "alice"}}}
        kept = _patched(renamed, await webhook.review("approvals", renamed, approved,
                                                      user="alice"))
        assert kept["metadata"]["annotations"]["dockyard.dev/requested-by"] == "bob"


async def test_promotions_must_target_a_stage_of_their_namespace_and_never_change_bundle(
        ) -> None:
    async with _webhook() as webhook:
        answer = await webhook.review("promotions", _promotion("staging"))
        assert answer["allowed"] is False
        assert answer["status"]["message"] == (
            "metadata.namespace: stage prod owns prod: create the Promotion in one of them")
        answer = await webhook.review("promotions", _promotion(stage="nowhere"))
        assert "spec.stage: no Stage nowhere: known stages are prod, staging" in \
            answer["status"]["message"]
        good = _promotion()
        assert (await webhook.review("promotions", good))["allowed"] is True
        other = _promotion(images=[{"image": "web", "digest": "sha256:" + "e" * 64}])
        answer = await webhook.review("promotions", other, good)
        assert answer["status"]["message"].startswith("spec.images: a promotion's bundle "
                                                      "cannot change")


async def test_stamping_keeps_old_approvals_and_adds_one_per_user() -> None:
    old = [{"by": "alice", "groups": [], "at": "2026-11-28T10:00:00Z"}]
    new = [*old, {"by": "carol"}, {"by": "dave"}]
    stamped = stamp(old, new, "erin", ["release"])
    assert [a["by"] for a in stamped] == ["alice", "erin"]
    assert stamp(stamped, [*stamped, {"by": "x"}], "erin", []) == stamped


# Pod Security's admission, our way: for each field of a Stage's policy, a Stage that sets
# that field alone strictly (and owns a namespace of the same name), then an object that
# breaks only that rule, refused with the field's path, and one that follows it, allowed.
# One webhook server answers the whole table: starting kopf costs seconds.

TAG, PINNED = "shop/web:1", f"shop/web@{DIGEST}"


@dataclass(frozen=True)
class Rule:
    """One way to break one policy field: the Stage's setting, then two specs of `kind`."""

    field: str
    """The StagePolicy field, as YAML writes it."""
    strict: Any
    """Its value in the Stage under test."""
    kind: str
    path: str
    """The field the refusal names."""
    refused: dict[str, Any]
    allowed: dict[str, Any]

    @property
    def namespace(self) -> str:
        """The Stage's name and its namespace: the field in kebab case."""
        return re.sub(r"[A-Z]", lambda upper: "-" + upper[0].lower(), self.field)

    def object(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "dockyard.dev/v1alpha1", "kind": self.kind,
                "metadata": {"name": "web", "namespace": self.namespace}, "spec": spec}


MAX = {"cpu": "2", "memory": "1Gi", "pids": 100}
RULES = [
    Rule("requirePinnedDigests", True, "Container", "spec.image",
         {"image": TAG}, {"image": PINNED}),
    Rule("requirePinnedDigests", True, "Image", "spec.digest",
         {"reference": TAG}, {"reference": TAG, "digest": DIGEST}),
    Rule("allowHostPath", False, "Volume", "spec.hostPath",
         {"hostPath": {"path": "/srv/data"}}, {"local": {}}),
    Rule("requireResourceLimits", True, "Container", "spec.resources.cpu",
         {"image": TAG, "resources": {"memory": "1Gi"}},
         {"image": TAG, "resources": {"cpu": "1", "memory": "1Gi"}}),
    Rule("requireResourceLimits", True, "Container", "spec.resources.memory",
         {"image": TAG, "resources": {"cpu": "1"}},
         {"image": TAG, "resources": {"cpu": "1", "memory": "1Gi"}}),
    Rule("requireReadOnlyRootfs", True, "Container", "spec.readOnlyRootfs",
         {"image": TAG}, {"image": TAG, "readOnlyRootfs": True}),
    Rule("requireNoNewPrivileges", True, "Container", "spec.noNewPrivileges",
         {"image": TAG}, {"image": TAG, "noNewPrivileges": True}),
    Rule("allowUnconfinedSeccomp", False, "Container", "spec.seccompProfile.type",
         {"image": TAG, "seccompProfile": {"type": "Unconfined"}},
         {"image": TAG, "seccompProfile": {"type": "Localhost",
                                           "localhostProfile": "/etc/dockyard/web.json"}}),
    Rule("allowedCapabilities", ["CHOWN"], "Container", "spec.capabilities.add",
         {"image": TAG, "capabilities": {"add": ["CHOWN", "NET_ADMIN"]}},
         {"image": TAG, "capabilities": {"add": ["CHOWN"], "drop": ["NET_RAW"]}}),
    *(Rule("maxResources", MAX, "Container", f"spec.resources.{name}",
           {"image": TAG, "resources": {**MAX, name: above}}, {"image": TAG, "resources": MAX})
      for name, above in (("cpu", "2001m"), ("memory", "1025Mi"), ("pids", 101))),
]


async def test_the_table_breaks_every_field_of_the_stage_policy() -> None:
    """A policy field added without a row here fails this, not silently goes unchecked."""
    fields = {info.alias for info in StagePolicy.model_fields.values()}
    assert {rule.field for rule in RULES} == fields


async def test_each_policy_field_refuses_by_path_what_breaks_it_alone_and_allows_the_rest(
        subtests: pytest.Subtests) -> None:
    """Subtests, not parameters: one webhook server for the table (kopf cancels, as hung,
    any task that outlives it, so it cannot be a fixture shared by several tests)."""
    stages = {rule.namespace: {"namespaces": [rule.namespace],
                               "policy": {rule.field: rule.strict}} for rule in RULES}
    async with _webhook(stages, probe=RULES[0].object(RULES[0].refused)) as webhook:
        for rule in RULES:
            with subtests.test(f"{rule.field}: {rule.kind} {rule.path}"):
                answer = await webhook.review("policy", rule.object(rule.refused))
                assert answer["allowed"] is False
                assert answer["status"]["code"] == FORBIDDEN
                message = answer["status"]["message"]
                assert message.startswith(
                    f"stage {rule.namespace} forbids this: {rule.path}: "), message
                assert "; spec." not in message, message  # one field: violations join "; "
                answer = await webhook.review("policy", rule.object(rule.allowed))
                assert answer["allowed"] is True, answer
                assert not answer.get("warnings")
        with subtests.test("allowUnconfinedSeccomp: an update keeps what it was admitted with"):
            (rule,) = (r for r in RULES if r.field == "allowUnconfinedSeccomp")
            old = rule.object(rule.refused)
            moved = rule.object({**rule.refused, "image": PINNED})
            assert (await webhook.review("policy", moved, old))["allowed"] is True
            answer = await webhook.review("policy", old, rule.object({"image": TAG}))
            assert answer["allowed"] is False  # Unconfined is new to this update
            assert "spec.seccompProfile.type: Unconfined" in answer["status"]["message"]
