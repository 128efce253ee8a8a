"""`dockyard stages` and `dockyard promote`: the real CLI, as a process, against the test API
server (`tests/kube/apiserver.py`). The tests stand in for the operator: they write Stages,
Promotions and their statuses into the server directly, then read what the CLI prints,
what it wrote, and its exit status. Finding the cluster (kubeconfig files, contexts, a
pod's service account) is checked on `kubeapi.connection` itself."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kmock
import pytest
import pytest_asyncio
import yaml

from dockyard_api import fields, meta
from dockyard_api.crd import kind_schema
from dockyard_api.duration import PATTERN as DURATION_PATTERN
from dockyard_api.promotion import REQUESTED_BY, PromotionPhase
from dockyard_cli import kubeapi, promote, stages
from dockyard_operator.admission import stamp
from tests.kube.admission import UserInfo
from tests.kube.apiserver import DEFAULT_USERS, ApiServer
from tests.kube.kopfrun import MERGE, eventually

API = "/apis/dockyard.dev/v1alpha1"
WEB = "sha256:1a2b3c4d5e6f" + "0" * 52
WEB_OLD = "sha256:0f0f0f0f0f0f" + "1" * 52
API_DIGEST = "sha256:9f86d081884c" + "2" * 52
NAME = "web-1a2b3c4d5e6f-to-staging"
T = "2026-05-09T10:00:00Z"


def ago(**delta: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(**delta)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def kubeconfig(path: Path, server: str, *, user: str = "alice", bearer: str = "test",
               namespace: str | None = None) -> Path:
    context: dict[str, str] = {"cluster": "test", "user": user}
    if namespace:
        context["namespace"] = namespace
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": user, "user": {"token": bearer}}],
        "contexts": [{"name": "test", "context": context}]}))
    return path


def environment(home: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: nothing of the machine's own cluster configuration."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    return {**env, "HOME": str(home), **extra}


def dockyard(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dockyard_cli", *args], capture_output=True,
                          text=True, env=env, check=False, timeout=60)


def cells(line: str) -> list[str]:
    """A table row's cells (columns are three or more spaces apart, cells have one)."""
    return re.split(r"\s{3,}", line.strip())


@dataclass
class Api:
    """The test API server, a client of it, and the CLI pointed at it."""

    server: ApiServer
    client: aiohttp.ClientSession
    url: str
    home: Path
    kubeconfig: Path

    def env(self, **extra: str) -> dict[str, str]:
        return environment(self.home, KUBECONFIG=str(self.kubeconfig), **extra)

    async def dockyard(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        # In a thread: the server answers the CLI from this test's event loop.
        return await asyncio.to_thread(dockyard, *args, env=self.env(**extra))

    async def create(self, plural: str, body: dict[str, Any], namespace: str | None = None
                     ) -> dict[str, Any]:
        where = f"{API}/namespaces/{namespace}/{plural}" if namespace else f"{API}/{plural}"
        async with self.client.post(where, json=body) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status in (200, 201), answer
            return answer

    async def status(self, plural: str, name: str, status: dict[str, Any],
                     namespace: str | None = None) -> None:
        """Write a status, as the operator does (a merge patch of `/status`)."""
        where = f"{API}/namespaces/{namespace}/{plural}" if namespace else f"{API}/{plural}"
        async with self.client.patch(f"{where}/{name}/status", json={"status": status},
                                     headers=MERGE) as response:
            assert response.status == 200, await response.text()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **options: Any) -> AsyncIterator[Api]:
    async with ApiServer(**options) as server, kmock.Server(server) as http:
        url = str(http.url).rstrip("/")
        home = tmp_path / "home"
        home.mkdir()
        yield Api(server, http.client, url, home,
                  kubeconfig(tmp_path / "kubeconfig", url))


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(tmp_path) as found:
        yield found


def stage(name: str, upstream: str | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {**({"upstream": upstream} if upstream else {}), "namespaces": [name],
                     **spec}}


def promotion(name: str, target: str, images: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Promotion",
            "metadata": {"name": name},
            "spec": {"stage": target, "images": [{"image": i, "digest": d}
                                                 for i, d in images.items()], **spec}}


def gate(name: str, state: str, message: str) -> dict[str, str]:
    return {"gate": name, "state": state, "at": T, "message": message}


async def pipeline(api: Api) -> None:
    """dev -> ci -> staging -> prod (frozen, two approvals), and sandbox after an unknown
    stage; digests in dev and ci; promotions into staging and prod that wait, and two into
    ci that ended."""
    for body in (stage("prod", "staging", namespaces=["prod", "prod-batch"], frozen=True,
                       gates={"approval": {"approvers": ["alice", "bob"], "required": 2}}),
                 stage("sandbox", "lab"), stage("dev"), stage("staging", "ci"),
                 stage("ci", "dev")):
        await api.create("stages", body)
    await api.status("stages", "dev", {"phase": "Ready", "images": [
        {"image": "web", "digest": WEB, "since": ago(hours=2), "promotion": "dev/web-1"},
        {"image": "api", "digest": API_DIGEST, "since": ago(days=3), "promotion": "dev/api-1"}]})
    await api.status("stages", "ci", {"phase": "Ready", "images": [
        {"image": "web", "digest": WEB, "since": ago(minutes=5), "promotion": "ci/web-2"}],
        "history": [{"image": "web", "digest": WEB_OLD, "since": ago(days=1),
                     "until": ago(minutes=5), "promotion": "ci/web-1"}]})
    await api.status("stages", "staging", {"phase": "Ready"})
    await api.status("stages", "prod", {"phase": "Ready"})  # the operator has not looked yet
    await api.status("stages", "sandbox", {"phase": "Invalid"})

    await api.create("promotions", promotion("web-to-staging", "staging", {"web": WEB}),
                     "staging")
    await api.status("promotions", "web-to-staging", {"phase": "Verifying", "gates": [
        gate("Upstream", "Passed", "every digest was promoted into ci"),
        gate("Verification", "Waiting", "running verify-web")]}, "staging")
    await api.create("promotions", promotion(
        "web-2", "prod", {"web": WEB_OLD, "api": API_DIGEST}, reason="release 3.2",
        approvals=[{"by": "carol", "groups": ["release-managers"], "at": T,
                    "comment": "dashboards green"}]), "prod")
    await api.status("promotions", "web-2", {"phase": "Waiting", "sourceStage": "staging",
                                             "gates": [
        gate("Upstream", "Passed", "every digest was promoted into staging"),
        gate("SoakTime", "Passed", "at least 1h in stage staging"),
        gate("Approval", "Waiting", "0 of 2 approvals; not counted: carol is neither a "
                                    "named approver nor in an approving group")]}, "prod")
    await api.create("promotions", promotion("web-3", "prod", {"web": WEB}), "prod-batch")
    for name, phase in (("web-old", "Succeeded"), ("api-bad", "Failed")):
        await api.create("promotions", promotion(name, "ci", {"web": WEB_OLD}), "ci")
        await api.status("promotions", name, {"phase": phase, "completedAt": T}, "ci")


# ------------------------------------------------------------------ dockyard stages

@pytest.mark.asyncio
async def test_stages_are_listed_in_pipeline_order_one_row_per_image_with_what_waits(
        api: Api) -> None:
    await pipeline(api)
    result = await api.dockyard("stages")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "STAGE     UPSTREAM   PHASE     IMAGE   DIGEST                SINCE   WAITING",
        "dev       -          Ready     api     sha256:9f86d081884c   3d      -",
        "dev       -          Ready     web     sha256:1a2b3c4d5e6f   2h",
        "ci        dev        Ready     web     sha256:1a2b3c4d5e6f   5m      -",
        "staging   ci         Ready     -       -                     -       web-to-staging "
        "Verifying Verification: running verify-web",
        "prod      staging    Frozen    -       -                     -       web-2 Waiting "
        "Approval: 0 of 2 approvals; not counted: carol is neither a named approver nor in "
        "an approving group",
        "prod      staging    Frozen                                          web-3 Pending",
        "sandbox   lab        Invalid   -       -                     -       -",
    ]


@pytest.mark.asyncio
async def test_stages_as_json_carry_full_digests_times_and_namespaces(api: Api) -> None:
    await pipeline(api)
    result = await api.dockyard("stages", "-o", "json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [s["name"] for s in found] == ["dev", "ci", "staging", "prod", "sandbox"]
    prod = found[3]
    assert prod == {
        "name": "prod", "upstream": "staging", "phase": "Frozen", "frozen": True,
        "namespaces": ["prod", "prod-batch"], "images": [],
        "waiting": [
            {"namespace": "prod", "name": "web-2", "phase": "Waiting", "gate": "Approval",
             "message": "0 of 2 approvals; not counted: carol is neither a named approver "
                        "nor in an approving group"},
            {"namespace": "prod-batch", "name": "web-3", "phase": "Pending", "gate": "",
             "message": ""}]}
    ci = found[1]
    assert ci["images"] == [{"image": "web", "digest": WEB, "since": ci["images"][0]["since"],
                             "promotion": "ci/web-2"}]
    assert ci["waiting"] == []


def test_the_pipeline_follows_every_branch_and_puts_cycles_last() -> None:
    def named(name: str, upstream: str | None = None) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"upstream": upstream}}

    found = stages.pipeline([named("y", "x"), named("prod", "ci"), named("qa", "dev"),
                             named("x", "y"), named("ci", "dev"), named("dev")])
    assert [s["metadata"]["name"] for s in found] == ["dev", "ci", "prod", "qa", "x", "y"]


def test_ages_and_digests_are_short_as_in_kubectl() -> None:
    now = datetime.datetime(2026, 5, 9, 12, 0, tzinfo=datetime.UTC)
    assert [stages.age(t, now) for t in ("2026-05-09T11:59:15Z", "2026-05-09T11:55:00Z",
                                         "2026-05-09T10:00:00Z", "2026-05-06T12:00:00Z",
                                         "2023-05-09T12:00:00Z", "never")] == \
        ["45s", "5m", "2h", "3d", "3y", "-"]
    assert stages.short_digest(WEB) == "sha256:1a2b3c4d5e6f"


# ------------------------------------------------------------------ dockyard promote

@pytest.mark.asyncio
async def test_promote_creates_the_promotion_in_the_stages_first_namespace(api: Api) -> None:
    await pipeline(api)
    result = await api.dockyard("promote", "staging", "web=" + WEB, "--reason", "release 3.2")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"promotion staging/{NAME} created\n"
    created = api.server.get("promotions", NAME, "staging")
    assert created is not None
    assert created["spec"] == {"stage": "staging", "reason": "release 3.2",
                               "images": [{"image": "web", "digest": WEB}]}

    again = await api.dockyard("promote", "staging", "web=" + WEB)
    assert again.returncode == 1
    assert again.stderr == (
        f"Error: promotion staging/{NAME} already exists (Pending): see it with `dockyard "
        f"promote show {NAME} -n staging`, or pass --name to promote these digests again\n")


@pytest.mark.asyncio
async def test_promote_takes_a_namespace_and_name_says_what_the_stage_needs_and_warns(
        api: Api) -> None:
    await pipeline(api)
    result = await api.dockyard("promote", "-n", "prod-batch", "prod", "web=" + WEB,
                                "api=" + API_DIGEST, "--name", "release-3-2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "promotion prod-batch/release-3-2 created",
        "it needs 2 approvals: dockyard promote approve release-3-2 -n prod-batch"]
    # Nothing entered staging yet: the operator's Upstream gate will fail it.
    assert result.stderr == ("Warning: web@sha256:1a2b3c4d5e6f, api@sha256:9f86d081884c never "
                             "entered stage staging: the Upstream gate will fail this "
                             "promotion (promote into staging first)\n")
    created = api.server.get("promotions", "release-3-2", "prod-batch")
    assert created is not None
    assert created["spec"]["images"] == [{"image": "web", "digest": WEB},
                                         {"image": "api", "digest": API_DIGEST}]


@pytest.mark.asyncio
async def test_a_promotion_into_the_wrong_namespace_or_an_unknown_stage_is_refused(
        api: Api) -> None:
    await pipeline(api)
    unknown = await api.dockyard("promote", "prodd", "web=" + WEB)
    assert unknown.returncode == 1
    assert unknown.stderr == \
        "Error: no stage prodd: the stages are ci, dev, prod, sandbox, staging\n"
    elsewhere = await api.dockyard("promote", "staging", "web=" + WEB, "-n", "dev")
    assert elsewhere.returncode == 1
    assert elsewhere.stderr == \
        "Error: stage staging owns staging: create the promotion in one of them, not in dev\n"
    assert "dev" not in {p["metadata"]["namespace"] for p in api.server.all("promotions")}


@pytest.mark.parametrize(("args", "error"), [
    (["prod", "web"], "Invalid value for 'IMAGE=DIGEST...': 'web' is not IMAGE=DIGEST: write "
                      "the Image's name, '=' and the digest, for example "
                      "web=sha256:<64 hex digits>"),
    (["prod", f"web@{WEB}"], f"'web@{WEB}' is not IMAGE=DIGEST (not IMAGE@DIGEST)"),
    (["prod", "web=sha256:abc"], "Invalid value for 'IMAGE=DIGEST...': 'sha256:abc' in "
                                 "'web=sha256:abc' is not a content digest: write sha256: "
                                 "followed by 64 lower-case hex digits"),
    (["prod", f"registry.local:5000/web={WEB}"],
     "'registry.local:5000/web' in 'registry.local:5000/web=sha256:1a2b3c4d5e6f"),
    (["Prod", f"web={WEB}"], "Invalid value for 'STAGE': 'Prod' is not a stage name"),
    (["prod", f"web={WEB}", f"web={WEB_OLD}"],
     "Invalid value for 'IMAGE=DIGEST...': web named more than once: a promotion moves one "
     "digest per image"),
    (["prod", f"web={WEB}", "--wait", "--timeout", "soon"],
     "Invalid value for '--timeout': 'soon' is not a duration: write it like 30s, 10m or "
     "1h30m"),
    (["prod"], "Missing argument 'IMAGE=DIGEST...'"),
])
def test_bad_arguments_are_usage_errors_that_name_the_argument(
        tmp_path: Path, args: list[str], error: str) -> None:
    # No cluster at all: arguments are checked before the CLI looks for one.
    result = dockyard("promote", *args, env=environment(tmp_path))
    assert result.returncode == 2
    assert error in result.stderr
    assert result.stderr.startswith("Usage: dockyard promote create [OPTIONS] STAGE "
                                    "IMAGE=DIGEST...")


def test_without_a_kubeconfig_the_cli_says_where_it_looked(tmp_path: Path) -> None:
    for args in (["stages"], ["promote", "prod", f"web={WEB}"], ["promote", "list"]):
        result = dockyard(*args, env=environment(tmp_path))
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            f"Error: no kubeconfig found ({tmp_path}/.kube/config does not exist): pass "
            "--kubeconfig PATH, set $KUBECONFIG, or write ~/.kube/config (kubectl config "
            "set-cluster …)\n")


def test_an_api_server_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}")
    result = dockyard("stages", "--kubeconfig", str(config), env=environment(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"Error: listing stages: cannot reach the API server http://127.0.0.1:{port} "
        f"(context test of {config}): ")
    assert len(result.stderr.splitlines()) == 1


# ------------------------------------------------------------------ --wait

def _steps(name: str) -> list[dict[str, Any]]:
    """A promotion's statuses as the operator writes them, into a stage with a soak time
    and a rollback window."""
    upstream = gate("Upstream", "Passed", "every digest was promoted into ci")
    verified = gate("Verification", "Passed", "exit code 0 from verify-web")
    soaked = gate("SoakTime", "Passed", "at least 1h in stage ci")
    thawed = gate("Freeze", "Passed", "no freeze")
    moved = f"moved web@{WEB} into stage staging"
    return [
        {"phase": "Verifying", "sourceStage": "ci", "gates": [
            upstream, gate("Verification", "Waiting", "starting the verification containers")]},
        {"phase": "Verifying", "gates": [
            upstream, gate("Verification", "Waiting", "running verify-web")]},
        {"phase": "Waiting", "gates": [
            upstream, verified, gate("SoakTime", "Waiting", "5m of 1h in stage ci")]},
        {"phase": "Waiting", "gates": [  # only a number changes: no line
            upstream, verified, gate("SoakTime", "Waiting", "6m of 1h in stage ci")]},
        {"phase": "Promoting", "gates": [upstream, verified, soaked, thawed],
         "previous": [{"image": "web", "digest": WEB_OLD}]},
        {"phase": "Succeeded", "appliedAt": T, "conditions": [
            {"type": "Promoted", "status": "True", "reason": "Promoted", "message": moved,
             "lastTransitionTime": T}]},
        {"gates": [upstream, verified, soaked, thawed,
                   gate("Health", "Waiting", "watching 1 containers until "
                                             "2026-05-09T10:10:00+00:00")]},
        {"gates": [upstream, verified, soaked, thawed,
                   gate("Health", "Passed", "no failure within 10m")],
         "completedAt": T},
    ]


async def _promote_and_wait(api: Api, statuses: list[dict[str, Any]], *args: str
                            ) -> tuple[int, str, str]:
    """`dockyard promote staging web=… --wait`, with the statuses written meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dockyard_cli", "promote", "staging", f"web={WEB}", "--wait",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=api.env())
    try:
        await eventually(lambda: api.server.get("promotions", NAME, "staging") is not None)
        for status in statuses:
            await api.status("promotions", NAME, status, "staging")
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.asyncio
async def test_wait_prints_each_gate_change_and_exits_0_once_the_rollback_window_passed(
        api: Api) -> None:
    await pipeline(api)
    code, stdout, stderr = await _promote_and_wait(api, _steps(NAME))
    assert (code, stderr) == (0, "")
    assert stdout.splitlines() == [
        f"promotion staging/{NAME} created",
        "Pending",
        "Verifying  Upstream Passed: every digest was promoted into ci",
        "Verifying  Verification Waiting: starting the verification containers",
        "Verifying  Verification Waiting: running verify-web",
        "Waiting    Verification Passed: exit code 0 from verify-web",
        "Waiting    SoakTime Waiting: 5m of 1h in stage ci",
        "Promoting  SoakTime Passed: at least 1h in stage ci",
        "Promoting  Freeze Passed: no freeze",
        "Succeeded",
        "Succeeded  Health Waiting: watching 1 containers until 2026-05-09T10:10:00+00:00",
        "Succeeded  Health Passed: no failure within 10m",
        f"promotion staging/{NAME} succeeded: moved web@{WEB} into stage staging",
    ]


@pytest.mark.parametrize(("statuses", "error"), [
    ([{"phase": "Failed", "completedAt": T, "gates": [
        gate("Upstream", "Failed", f"web@{WEB} never entered stage ci: promote it there "
                                   "first")]}],
     f"failed: web@{WEB} never entered stage ci: promote it there first"),
    ([{"phase": "Succeeded", "appliedAt": T},
      {"phase": "RolledBack", "completedAt": T,
       "gates": [gate("Health", "Failed", "container web restarted 3 times (more than 2)")],
       "conditions": [{"type": "Promoted", "status": "False", "reason": "RolledBack",
                       "lastTransitionTime": T,
                       "message": "container web restarted 3 times (more than 2); restored "
                                  f"web@{WEB_OLD}"}]}],
     f"was rolled back: container web restarted 3 times (more than 2); restored "
     f"web@{WEB_OLD}"),
], ids=["failed", "rolled-back"])
@pytest.mark.asyncio
async def test_wait_exits_1_with_the_reason_when_the_promotion_fails_or_is_rolled_back(
        api: Api, statuses: list[dict[str, Any]], error: str) -> None:
    await pipeline(api)
    code, stdout, stderr = await _promote_and_wait(api, statuses)
    assert code == 1
    assert stderr == f"Error: promotion staging/{NAME} {error}\n"
    assert stdout.splitlines()[:2] == [f"promotion staging/{NAME} created", "Pending"]


@pytest.mark.asyncio
async def test_wait_gives_up_after_its_timeout_saying_what_holds_the_promotion(
        api: Api) -> None:
    await pipeline(api)
    result = await api.dockyard("promote", "wait", "web-2", "--timeout", "1s")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "Waiting    Upstream Passed: every digest was promoted into staging",
        "Waiting    SoakTime Passed: at least 1h in stage staging",
        "Waiting    Approval Waiting: 0 of 2 approvals; not counted: carol is neither a "
        "named approver nor in an approving group"]
    assert result.stderr == (
        "Error: promotion prod/web-2 is still Waiting (Approval: 0 of 2 approvals; not "
        "counted: carol is neither a named approver nor in an approving group) after 1s; it "
        "goes on: follow it again with `dockyard promote wait web-2 -n prod`\n")


# ------------------------------------------------------------------ approve

@pytest.mark.asyncio
async def test_approve_appends_an_approval_in_the_kubeconfigs_user_name_once(api: Api) -> None:
    await pipeline(api)
    result = await api.dockyard("promote", "approve", "web-2", "--comment", "canary green")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "approved promotion prod/web-2 as alice\n"
    stored = api.server.get("promotions", "web-2", "prod")
    assert stored is not None
    carol, mine = stored["spec"]["approvals"]
    assert carol["by"] == "carol"
    assert mine == {"by": "alice", "comment": "canary green", "at": mine["at"]}
    assert stages.age(mine["at"], datetime.datetime.now(datetime.UTC)).endswith("s")

    again = await api.dockyard("promote", "approve", "web-2", "-n", "prod")
    assert (again.returncode, again.stdout) == (
        0, "promotion prod/web-2 already has an approval by alice\n")
    assert len((api.server.get("promotions", "web-2", "prod") or {})["spec"]["approvals"]) == 2

    ended = await api.dockyard("promote", "approve", "web-old")
    assert ended.returncode == 1
    assert ended.stderr == \
        "Error: promotion ci/web-old has ended (Succeeded): there is nothing to approve\n"


@contextlib.asynccontextmanager
async def approvals_webhook(api: Api) -> AsyncIterator[list[str]]:
    """The operator's stamping of approvals (`admission.stamp`) as a mutating webhook; on
    its first call it also changes the promotion (a label), as a concurrent writer would,
    so that the CLI's write conflicts once. Yields the operations it saw."""
    seen: list[str] = []

    async def review(http: aiohttp.web.Request) -> aiohttp.web.Response:
        request = (await http.json())["request"]
        seen.append(request["operation"])
        if len(seen) == 1:
            async with api.client.patch(f"{API}/namespaces/prod/promotions/web-2", json={
                    "metadata": {"labels": {"touched": "yes"}}}, headers=MERGE) as response:
                assert response.status == 200, await response.text()
        old = ((request.get("oldObject") or {}).get("spec") or {}).get("approvals") or []
        new = request["object"]["spec"].get("approvals") or []
        user = request["userInfo"]
        patch = [{"op": "replace", "path": "/spec/approvals",
                  "value": stamp(old, new, user["username"], user["groups"])}]
        return aiohttp.web.json_response({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": request["uid"], "allowed": True, "patchType": "JSONPatch",
                         "patch": base64.b64encode(json.dumps(patch).encode()).decode()}})

    async with promotion_webhook(api, "Mutating", "approvals", review, "UPDATE"):
        yield seen


Review = Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.Response]]


@contextlib.asynccontextmanager
async def promotion_webhook(api: Api, kind: str, name: str, review: Review,
                            operation: str) -> AsyncIterator[None]:
    """`review` served on 127.0.0.1 at `/<name>` and registered with the API server as the
    `<kind>` (Mutating or Validating) webhook `<name>.dockyard.dev` for `operation`s on
    Promotions, as the chart registers the operator's."""
    app = aiohttp.web.Application()
    app.router.add_post(f"/{name}", review)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with api.client.post(
                f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}webhookconfigurations",
                json={"apiVersion": "admissionregistration.k8s.io/v1",
                      "kind": f"{kind}WebhookConfiguration", "metadata": {"name": "dockyard"},
                      "webhooks": [{
                          "name": f"{name}.dockyard.dev", "sideEffects": "None",
                          "admissionReviewVersions": ["v1"],
                          "clientConfig": {"url": f"http://127.0.0.1:{port}/{name}"},
                          "rules": [{"apiGroups": ["dockyard.dev"],
                                     "apiVersions": ["v1alpha1"], "resources": ["promotions"],
                                     "operations": [operation]}]}]}) as response:
            assert response.status in (200, 201), await response.text()
        yield
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_the_webhook_writes_who_approved_and_a_conflicting_write_is_retried(
        tmp_path: Path) -> None:
    bob = UserInfo("bob", groups=("release-managers",))
    async with serving(tmp_path, users={**DEFAULT_USERS, "bob-token": bob}) as api:
        await pipeline(api)
        kubeconfig(api.kubeconfig, api.url, user="alice", bearer="bob-token")
        async with approvals_webhook(api) as seen:
            result = await api.dockyard("--log-format", "console", "promote", "approve",
                                        "web-2", "--comment", "ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("approved promotion prod/web-2 as bob (groups: release-managers, "
                             "system:authenticated)\n")
    assert "the promotion changed since it was read; reading it again" in result.stderr
    assert seen.count("UPDATE") >= 3  # the CLI's write, the concurrent one, the CLI's again
    stored = api.server.get("promotions", "web-2", "prod")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"touched": "yes"}  # the concurrent write stays
    carol, mine = stored["spec"]["approvals"]
    assert carol["by"] == "carol"
    assert (mine["by"], mine["groups"], mine["comment"]) == \
        ("bob", ["release-managers", "system:authenticated"], "ok")


@pytest.mark.asyncio
async def test_an_admission_webhooks_refusal_is_one_line_naming_the_promotion(
        tmp_path: Path) -> None:
    async def deny(http: aiohttp.web.Request) -> aiohttp.web.Response:
        request = (await http.json())["request"]
        return aiohttp.web.json_response({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": request["uid"], "allowed": False, "status": {
                "code": 403, "message": "spec.images: staging takes no\npromotions today"}}})

    async with serving(tmp_path) as api:
        await pipeline(api)
        async with promotion_webhook(api, "Validating", "promotions", deny, "CREATE"):
            result = await api.dockyard("promote", "staging", f"web={WEB}")
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: creating promotion staging/{NAME}: admission webhook "
        "\"promotions.dockyard.dev\" denied the request: spec.images: staging takes no "
        "promotions today\n")


# ------------------------------------------------------------------ list and show

@pytest.mark.asyncio
async def test_list_shows_every_promotion_and_what_holds_it(api: Api) -> None:
    await pipeline(api)
    everywhere = await api.dockyard("promote", "list", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    lines = everywhere.stdout.splitlines()
    assert cells(lines[0]) == ["NAMESPACE", "NAME", "STAGE", "IMAGES", "PHASE", "AGE",
                               "WAITING ON"]
    rows = [cells(line) for line in lines[1:]]
    assert all(re.fullmatch(r"\d+s", row.pop(5)) for row in rows)  # AGE: just created
    assert rows == [
        ["ci", "api-bad", "ci", "web@sha256:0f0f0f0f0f0f", "Failed", "-"],
        ["ci", "web-old", "ci", "web@sha256:0f0f0f0f0f0f", "Succeeded", "-"],
        ["prod", "web-2", "prod", "web@sha256:0f0f0f0f0f0f, api@sha256:9f86d081884c",
         "Waiting", "Approval: 0 of 2 approvals; not counted: carol is neither a named "
                    "approver nor in an approving group"],
        ["prod-batch", "web-3", "prod", "web@sha256:1a2b3c4d5e6f", "Pending", "-"],
        ["staging", "web-to-staging", "staging", "web@sha256:1a2b3c4d5e6f", "Verifying",
         "Verification: running verify-web"],
    ]
    # No -n and no namespace in the context: every namespace, as with -A.
    default = await api.dockyard("promote", "list")
    assert [cells(line)[:5] for line in default.stdout.splitlines()] == \
        [cells(line)[:5] for line in lines]

    one = await api.dockyard("promote", "list", "-n", "staging")
    assert [[*row[:4], row[5]] for row in map(cells, one.stdout.splitlines())] == [
        ["NAME", "STAGE", "IMAGES", "PHASE", "WAITING ON"],
        ["web-to-staging", "staging", "web@sha256:1a2b3c4d5e6f", "Verifying",
         "Verification: running verify-web"]]

    as_json = await api.dockyard("promote", "list", "-n", "ci", "-o", "json")
    assert [p["metadata"]["name"] for p in json.loads(as_json.stdout)] == ["api-bad", "web-old"]
    both = await api.dockyard("promote", "list", "-n", "ci", "-A")
    assert both.returncode == 2
    assert "-n and -A exclude each other" in both.stderr


@pytest.mark.asyncio
async def test_show_gives_every_gate_the_approvals_and_the_previous_digests(api: Api) -> None:
    await pipeline(api)
    await api.status("promotions", "web-2", {
        "previous": [{"image": "web", "digest": WEB}],
        "conditions": [{"type": "Promoted", "status": "False", "reason": "Waiting",
                        "message": "needs approvals", "lastTransitionTime": T}]}, "prod")
    result = await api.dockyard("promote", "show", "web-2")  # found by its name alone
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    created = next(i for i, line in enumerate(lines) if line.startswith("Created:"))
    assert re.fullmatch(r"Created:      \S+Z \(\d+s ago\)", lines.pop(created))
    assert lines == [
        "Name:         web-2",
        "Namespace:    prod",
        "Stage:        prod (from staging)",
        "Phase:        Waiting",
        "Requested by: -",
        "Reason:       release 3.2",
        "Images:",
        f"  web   {WEB_OLD}",
        f"  api   {API_DIGEST}",
        "Previous:",
        f"  web   {WEB}",
        "Gates:",
        "  GATE       STATE     AT                     MESSAGE",
        f"  Upstream   Passed    {T}   every digest was promoted into staging",
        f"  SoakTime   Passed    {T}   at least 1h in stage staging",
        f"  Approval   Waiting   {T}   0 of 2 approvals; not counted: carol is neither a "
        "named approver nor in an approving group",
        "Approvals:",
        "  BY      GROUPS             AT                     COMMENT",
        f"  carol   release-managers   {T}   dashboards green",
        "Applied:      -",
        "Completed:    -",
        "Git commit:   -",
        "Outcome:      Waiting: needs approvals",
    ]
    missing = await api.dockyard("promote", "show", "web-9", "-n", "prod")
    assert missing.returncode == 1
    assert missing.stderr == ('Error: reading promotion prod/web-9: promotions.dockyard.dev '
                              '"web-9" not found\n')


# ------------------------------------------------------------------ help and rules

def test_the_help_shows_both_forms_of_promote_and_the_columns_of_stages(
        tmp_path: Path) -> None:
    promote_help = dockyard("promote", "--help", env=environment(tmp_path))
    assert promote_help.returncode == 0
    assert promote_help.stdout.startswith(
        "Usage: dockyard promote STAGE IMAGE=DIGEST... [OPTIONS] | COMMAND [ARGS]...")
    for text in ("dockyard promote prod web=sha256:", "--wait", "--reason", "IMAGE=DIGEST...",
                 "approve ", "list ", "show ", "wait "):
        assert text in promote_help.stdout
    approve_help = dockyard("promote", "approve", "--help", env=environment(tmp_path))
    assert "the admission webhook replaces that" in " ".join(approve_help.stdout.split())
    stages_help = dockyard("stages", "--help", env=environment(tmp_path))
    for column in ("STAGE", "UPSTREAM", "PHASE", "IMAGE", "SINCE", "WAITING"):
        assert f"\n    {column} " in stages_help.stdout
    assert "the DIGEST it runs" in stages_help.stdout


def test_the_clis_argument_rules_are_the_api_models() -> None:
    assert promote.DIGEST.pattern == fields.DIGEST_PATTERN
    assert stages.DNS_LABEL.pattern == fields.DNS_LABEL_PATTERN
    assert stages.DNS_SUBDOMAIN.pattern == fields.DNS_SUBDOMAIN_PATTERN
    assert promote.DURATION.pattern == DURATION_PATTERN
    assert promote.API_VERSION == meta.API_VERSION
    assert (kubeapi.GROUP, kubeapi.VERSION) == (meta.GROUP, meta.VERSION)
    assert stages.REQUESTED_BY == REQUESTED_BY
    assert set(stages.ENDED) == {PromotionPhase.FAILED, PromotionPhase.ROLLED_BACK}
    spec = kind_schema("Promotion")["properties"]["spec"]["properties"]
    assert (spec["images"]["maxItems"], spec["reason"]["maxLength"]) == \
        (promote.MAX_IMAGES, promote.MAX_REASON)


def test_the_default_name_fits_a_kubernetes_name() -> None:
    assert promote.default_name([("web", WEB), ("api", API_DIGEST)], "prod") == \
        "web-1a2b3c4d5e6f-to-prod"
    long = promote.default_name([("a." * 120 + "b", WEB)], "p" * 63)
    assert len(long) <= 253
    assert re.fullmatch(fields.DNS_SUBDOMAIN_PATTERN, long)


# ------------------------------------------------------------------ finding the cluster

def _write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_kubeconfig_files_merge_and_the_first_to_name_an_entry_wins(tmp_path: Path) -> None:
    first = _write(tmp_path / "a" / "config", {
        "current-context": "one",
        "clusters": [{"name": "c1", "cluster": {"server": "https://one:6443"}}],
        "users": [{"name": "u1", "user": {"token": "first"}}],
        "contexts": [{"name": "one", "context": {"cluster": "c1", "user": "u1",
                                                 "namespace": "team"}}]})
    second = _write(tmp_path / "b" / "config", {
        "current-context": "two",
        "clusters": [{"name": "c1", "cluster": {"server": "https://ignored:6443"}},
                     {"name": "c2", "cluster": {"server": "https://two:6443",
                                                "certificate-authority": "ca.pem"}}],
        "users": [{"name": "u2", "user": {"tokenFile": "token"}}],
        "contexts": [{"name": "one", "context": {"cluster": "c2", "user": "u2"}},
                     {"name": "two", "context": {"cluster": "c2", "user": "u2"}}]})
    (tmp_path / "b" / "token").write_text("second\n")
    env = {"KUBECONFIG": f"{first}:{tmp_path / 'missing'}:{second}", "HOME": str(tmp_path)}

    current = kubeapi.connection(environ=env)
    assert (current.server, current.token, current.namespace, current.user) == \
        ("https://one:6443", "first", "team", "u1")
    other = kubeapi.connection(context="two", environ=env)
    assert (other.server, other.token, other.ca_file, other.namespace) == \
        ("https://two:6443", "second", str(tmp_path / "b" / "ca.pem"), "")
    assert other.source == f"context two of {first}, {second}"

    with pytest.raises(kubeapi.ConfigError, match=r"no context 'three' in .* \(contexts: "
                                                  r"one, two\)"):
        kubeapi.connection(context="three", environ=env)
    flag = kubeapi.connection(str(second), environ=env)  # --kubeconfig wins over $KUBECONFIG
    assert flag.server == "https://two:6443"
    with pytest.raises(kubeapi.ConfigError, match="--kubeconfig /nowhere: no such file"):
        kubeapi.connection("/nowhere", environ=env)


def test_home_kubeconfig_then_the_pods_service_account(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / ".kube" / "config", {
        "current-context": "home",
        "clusters": [{"name": "c", "cluster": {"server": "https://home:6443"}}],
        "contexts": [{"name": "home", "context": {"cluster": "c"}}]})
    assert kubeapi.connection(environ={"HOME": str(tmp_path)}).server == "https://home:6443"

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token\n")
    (account / "namespace").write_text("dockyard-system")
    (account / "ca.crt").write_text("")
    monkeypatch.setattr(kubeapi, "SERVICE_ACCOUNT", account)
    pod = kubeapi.connection(environ={"HOME": str(tmp_path / "nohome"),
                                      "KUBERNETES_SERVICE_HOST": "fd00::1",
                                      "KUBERNETES_SERVICE_PORT": "443"})
    assert (pod.server, pod.token, pod.namespace, pod.ca_file, pod.user) == \
        ("https://[fd00::1]:443", "pod-token", "dockyard-system", str(account / "ca.crt"), "")


def test_an_exec_plugins_token_is_used(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['spec'] == {'interactive': False}, info\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',\n"
        "                  'status': {'token': 'from-' + os.environ['WHO']}}))\n")
    config = _write(tmp_path / "config", {
        "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "https://x:6443"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(plugin)], "env": [{"name": "WHO", "value": "plugin"}]}}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]})
    found = kubeapi.connection(str(config), environ={})
    assert (found.server, found.token) == ("https://x:6443", "from-plugin")
