"""A version's way from dev to prod, end to end: two nodes running real containers, the
operator with its admission webhooks called by the test API server, a real registry with
two versions of an app, and a local git repository for the GitOps stage.

- v1 enters dev; in ci its verification container (from the candidate digest) exits 0;
  a freeze window holds it out of staging until the window ends, then the staging
  Container runs it; prod waits for an approval (the requester's own does not count),
  then v1 is written to prod's overlay in git and pushed.
- v2 passes dev and ci, but its server exits at once: in staging it restarts past the
  allowance, the operator restores v1, the Promotion says why, and v2 can never be
  promoted to prod.
- The policy webhook refuses a tagged image in staging, naming the field and the stage.

Root: every node runs a real daemon (overlayfs, namespaces, cgroups).
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard_operator.pinning import resolve
from tests.operator.cluster import Cluster, eventually, running_cluster
from tests.shim.rootfs_dir import busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio]

API = "/apis/dockyard.dev/v1alpha1"
USERS = {"bob": ("developers",), "alice": ("release",)}
FREEZE = datetime.timedelta(seconds=12)


def _app_image(cluster: Cluster, tmp_path: Path, version: str, serve: str) -> tuple[str, str]:
    """An app image (busybox with /app/serve and /app/selftest) pushed to the registry:
    its repository and digest."""
    rootfs = busybox_rootfs(tmp_path / f"rootfs-{version}")
    app = rootfs / "app"
    app.mkdir()
    (app / "serve").write_text(f"#!/bin/sh\n{serve}\n")
    (app / "selftest").write_text("#!/bin/sh\ntest -x /app/serve\n")
    for script in app.iterdir():
        script.chmod(0o755)
    archive = tmp_path / f"web-{version}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    node = next(iter(cluster.nodes.values())).node
    repository = f"{cluster.registry.host}/shop/web"
    node.dockyard("import", str(archive), f"web:{version}", check=True)
    node.dockyard("push", f"web:{version}", f"{repository}:{version}", check=True)
    node.dockyard("rmi", f"web:{version}", check=True)
    return repository, resolve(f"{repository}:{version}").digest


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=cwd, capture_output=True, text=True, check=True,
                          env={"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
                               "PATH": "/usr/bin:/bin", "HOME": str(cwd or "/")})
    return done.stdout


def _gitops_repository(tmp_path: Path, repository: str) -> Path:
    """A bare repository with prod's overlay, its `images:` entry still on a tag."""
    work, bare = tmp_path / "deploy-work", tmp_path / "deploy.git"
    overlay = work / "stages" / "prod"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        "# prod: synced by Argo CD\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../../app\nimages:\n"
        f"  - name: {repository}\n    newTag: \"1\"  # until promotions pin it\n")
    _git("init", "-q", "-b", "main", str(work))
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "prod overlay", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(bare))
    return bare


def _stages(bare: Path, freeze_start: datetime.datetime) -> list[dict[str, Any]]:
    window = {"start": freeze_start.isoformat().replace("+00:00", "Z"),
              "end": (freeze_start + FREEZE).isoformat().replace("+00:00", "Z"),
              "reason": "release freeze"}
    specs: dict[str, dict[str, Any]] = {
        "dev": {},
        "ci": {"upstream": "dev", "gates": {"verification": {
            "command": ["/app/selftest"], "network": {"mode": "None"}, "timeout": "2m"}}},
        "staging": {"upstream": "ci", "policy": {"requirePinnedDigests": True},
                    "freezeWindows": [window],
                    "rollback": {"window": "5m", "maxRestarts": 1}},
        "prod": {"upstream": "staging", "policy": {"requirePinnedDigests": True},
                 "gates": {"approval": {"approvers": ["alice"], "required": 1}},
                 "delivery": {"mode": "GitOps", "git": {
                     "repository": str(bare), "branch": "main", "path": "stages/prod",
                     "authorName": "Dockyard", "authorEmail": "dockyard@example.com"}}},
    }
    return [{"apiVersion": "dockyard.dev/v1alpha1", "kind": "Stage", "metadata": {"name": n},
             "spec": {"namespaces": [n], **spec}} for n, spec in specs.items()]


def _promotion(name: str, stage: str, digest: str) -> dict[str, Any]:
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Promotion",
            "metadata": {"name": name, "namespace": stage},
            "spec": {"stage": stage, "images": [{"image": "web", "digest": digest}],
                     "reason": f"{name} to {stage}"}}


def _status(cluster: Cluster, plural: str, name: str, namespace: str | None = None
            ) -> dict[str, Any]:
    return dict((cluster.server.get(plural, name, namespace) or {}).get("status") or {})


def _gate(status: dict[str, Any], gate: str) -> dict[str, Any]:
    return next((g for g in status.get("gates") or [] if g["gate"] == gate), {})


async def _promote(cluster: Cluster, name: str, stage: str, digest: str, *,
                   phase: str = "Succeeded", timeout: float = 60) -> dict[str, Any]:
    await cluster.request("POST", f"{API}/namespaces/{stage}/promotions",
                          _promotion(name, stage, digest), user="bob")
    await eventually(cluster, lambda: _status(cluster, "promotions", name, stage)
                     .get("phase") == phase, timeout=timeout)
    return _status(cluster, "promotions", name, stage)


async def test_a_version_goes_from_dev_to_prod_and_a_broken_one_is_rolled_back(
        tmp_path: Path) -> None:
    async with running_cluster(tmp_path, ("n1", "n2"), webhooks=True,
                               users=USERS) as cluster:
        repository, v1 = await asyncio.to_thread(
            _app_image, cluster, tmp_path, "1", "exec sleep 600")
        _, v2 = await asyncio.to_thread(
            _app_image, cluster, tmp_path, "2", "echo 'cannot start: no config'; exit 1")
        bare = await asyncio.to_thread(_gitops_repository, tmp_path, repository)
        freeze_start = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        for stage in _stages(bare, freeze_start):
            await cluster.request("POST", f"{API}/stages", stage)
        await cluster.request("POST", f"{API}/namespaces/dev/images", {
            "apiVersion": "dockyard.dev/v1alpha1", "kind": "Image",
            "metadata": {"name": "web", "namespace": "dev"},
            "spec": {"reference": f"{repository}:1"}})

        # The policy webhook: staging runs pinned digests only.
        refused = await cluster.request("POST", f"{API}/namespaces/staging/containers", {
            "apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": "tagged", "namespace": "staging"},
            "spec": {"image": f"{repository}:1"}}, expect=403)
        assert "stage staging forbids this: spec.image:" in refused["message"]
        await cluster.request("POST", f"{API}/namespaces/staging/containers", {
            "apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": "web", "namespace": "staging"},
            "spec": {"imageRef": "web", "args": ["/app/serve"], "restartPolicy": "Always",
                     "network": {"mode": "None"}}})

        # v1: dev, then ci through its verification container.
        await _promote(cluster, "v1", "dev", v1)
        ci = await _promote(cluster, "v1", "ci", v1)
        verification = _gate(ci, "Verification")
        assert verification["state"] == "Passed"
        assert verification["message"].startswith("exit code 0 from v1-verify-")
        run = _status(cluster, "containers", ci["verificationContainer"], "ci") \
            if ci.get("verificationContainer") else None
        assert run is None or run["exitCode"] == 0

        # staging: held by the freeze window, then in, and the Container runs v1.
        await cluster.request("POST", f"{API}/namespaces/staging/promotions",
                              _promotion("v1", "staging", v1), user="bob")
        await eventually(cluster, lambda: _gate(_status(cluster, "promotions", "v1",
                                                        "staging"), "Freeze").get("state")
                         == "Waiting")
        held = _status(cluster, "promotions", "v1", "staging")
        assert held["phase"] == "Waiting"
        assert "release freeze" in _gate(held, "Freeze")["message"]
        await eventually(cluster, lambda: _status(cluster, "promotions", "v1", "staging")
                         .get("phase") == "Succeeded", timeout=FREEZE.total_seconds() + 30)
        entered = datetime.datetime.fromisoformat(
            _status(cluster, "promotions", "v1", "staging")["appliedAt"])
        assert entered >= freeze_start + FREEZE
        await eventually(cluster, lambda: _status(cluster, "containers", "web", "staging")
                         .get("imageDigest") == v1 and _status(
                             cluster, "containers", "web", "staging").get("phase") ==
                         "Running", timeout=60)

        # prod: the requester's own approval does not count; alice's does.
        await cluster.request("POST", f"{API}/namespaces/prod/promotions",
                              _promotion("v1", "prod", v1), user="bob")
        await eventually(cluster, lambda: _gate(_status(cluster, "promotions", "v1", "prod"),
                                                "Approval").get("state") == "Waiting")
        await _approve(cluster, "bob")
        await eventually(cluster, lambda: "bob requested the promotion" in _gate(
            _status(cluster, "promotions", "v1", "prod"), "Approval").get("message", ""))
        assert _status(cluster, "promotions", "v1", "prod")["phase"] == "Waiting"
        await _approve(cluster, "alice")
        await eventually(cluster, lambda: _status(cluster, "promotions", "v1", "prod")
                         .get("phase") == "Succeeded", timeout=60)
        prod = _status(cluster, "promotions", "v1", "prod")
        assert "1 of 1 approvals (alice)" in _gate(prod, "Approval")["message"]
        commits = _git("log", "--format=%H %an <%ae> %s", "main", cwd=bare).splitlines()
        assert len(commits) == 2
        assert commits[0].startswith(f"{prod['gitCommit']} Dockyard <dockyard@example.com>")
        overlay = yaml.safe_load(_git("show", "main:stages/prod/kustomization.yaml", cwd=bare))
        assert overlay["images"] == [{"name": repository, "digest": v1}]

        # v2 passes dev and ci, fails in staging and is rolled back to v1.
        await _promote(cluster, "v2", "dev", v2)
        await _promote(cluster, "v2", "ci", v2)
        rolled = await _promote(cluster, "v2", "staging", v2, phase="RolledBack", timeout=90)
        assert _gate(rolled, "Health")["state"] == "Failed"
        (promoted,) = [c for c in rolled["conditions"] if c["type"] == "Promoted"]
        assert promoted["reason"] == "RolledBack"
        assert "container web restarted" in promoted["message"]
        assert f"restored web@{v1}" in promoted["message"]
        ledger = _status(cluster, "stages", "staging")
        assert [(i["image"], i["digest"]) for i in ledger["images"]] == [("web", v1)], ledger
        assert any(h["digest"] == v2 and h["rolledBack"] for h in ledger["history"])
        await eventually(cluster, lambda: _status(cluster, "containers", "web", "staging")
                         .get("imageDigest") == v1 and _status(
                             cluster, "containers", "web", "staging").get("phase") ==
                         "Running", timeout=60)

        # v2 never reaches prod.
        failed = await _promote(cluster, "v2", "prod", v2, phase="Failed")
        assert f"web@{v2} never entered stage staging" in _gate(failed, "Upstream")["message"]
        assert len(_git("log", "--format=%H", "main", cwd=bare).splitlines()) == 2


async def _approve(cluster: Cluster, user: str) -> None:
    current = cluster.server.get("promotions", "v1", "prod") or {}
    approvals = [*current["spec"].get("approvals", []), {"by": "anyone"}]
    await cluster.request("PATCH", f"{API}/namespaces/prod/promotions/v1",
                          {"metadata": {"resourceVersion": current["metadata"]
                                        ["resourceVersion"]},
                           "spec": {"approvals": approvals}}, user=user)
