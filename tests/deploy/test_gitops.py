"""The GitOps layout of deploy/: the platform, the stage overlays, Argo CD and Flux (real kubectl).

Everything kustomize renders is validated as the chart's output is (manifests.py). What
cannot be checked here: that Argo CD or Flux accept their objects (their schemas are not
on this machine, and no API server can run here), so their fields are checked by hand.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard_api import Container, Image, Stage, Volume, parse
from dockyard_api.policy import stage_of, violations
from tests.conftest import ROOT
from tests.deploy.manifests import (
    STAGES,
    Doc,
    documents,
    find,
    kinds,
    kustomize,
    problems,
    run,
)

REPOSITORY = "https://git.example.com/acme/dockyard-deploy.git"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
TREES = ["deploy/platform", *(f"deploy/stages/{stage}" for stage in STAGES)]
_rendered: dict[str, list[Doc]] = {}


def rendered(path: str) -> list[Doc]:
    if path not in _rendered:
        _rendered[path] = kustomize(path)
    return _rendered[path]


def overlay(stage: str) -> dict[str, Any]:
    text = (ROOT / f"deploy/stages/{stage}/kustomization.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def loaded(path: str) -> list[Doc]:
    return documents((ROOT / path).read_text(encoding="utf-8"))


def test_the_rendered_platform_is_what_the_chart_renders() -> None:
    done = run(sys.executable, "deploy/render.py", "--check")
    assert done.returncode == 0, done.stderr  # names the command that regenerates it


@pytest.mark.parametrize("path", TREES)
def test_every_object_kustomize_renders_is_valid(path: str) -> None:
    found = {f"{d['kind']}/{d['metadata']['name']}": problems(d) for d in rendered(path)}
    assert {key: p for key, p in found.items() if p} == {}


def test_the_platform_is_the_chart_plus_the_crds_and_the_namespace() -> None:
    platform = rendered("deploy/platform")
    assert sorted(set(kinds(platform))) == sorted({
        "CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole",
        "ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet", "Deployment",
        "PodDisruptionBudget", "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration", "Certificate", "Issuer", "ClusterKopfPeering"})
    assert "Secret" not in kinds(platform)  # no generated secret is ever committed
    assert "Stage" not in kinds(platform)  # the overlays own them; two owners would fight
    crds = {d["metadata"]["name"] for d in platform if d["kind"] == "CustomResourceDefinition"}
    assert {"clusterkopfpeerings.kopf.dev", "containers.dockyard.dev"} <= crds
    namespace = find(platform, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == \
        "privileged"  # the node shim is privileged
    for doc in platform:
        if doc["kind"] not in ("CustomResourceDefinition", "Namespace") and \
                doc["metadata"].get("namespace"):
            assert doc["metadata"]["namespace"] == namespace["metadata"]["name"]


def test_the_stage_overlays_chain_dev_ci_staging_prod() -> None:
    upstream = {}
    for stage in STAGES:
        found = find(rendered(f"deploy/stages/{stage}"), "Stage")
        assert found["metadata"]["name"] == stage
        upstream[stage] = found["spec"].get("upstream")
    assert upstream == {"dev": None, "ci": "dev", "staging": "ci", "prod": "staging"}


def test_policy_only_gets_stricter_towards_prod() -> None:
    rules = ("requirePinnedDigests", "requireResourceLimits", "requireReadOnlyRootfs")
    previous: set[str] = set()
    for stage in STAGES:
        policy = find(rendered(f"deploy/stages/{stage}"), "Stage")["spec"].get("policy", {})
        required = {rule for rule in rules if policy.get(rule)}
        assert previous <= required, f"{stage} drops {previous - required}"
        previous = required
    assert previous == set(rules)


@pytest.mark.parametrize("stage", STAGES)
def test_an_overlay_puts_its_objects_in_its_namespace_and_its_stage_owns_it(stage: str
                                                                              ) -> None:
    docs = rendered(f"deploy/stages/{stage}")
    assert find(docs, "Namespace")["metadata"]["name"] == stage
    assert overlay(stage)["namespace"] == stage
    found = find(docs, "Stage")
    assert "namespace" not in found["metadata"]  # cluster-scoped, despite `namespace:`
    assert found["spec"]["namespaces"] == [stage]
    for kind in ("Container", "Image"):
        assert find(docs, kind, "web")["metadata"]["namespace"] == stage


@pytest.mark.parametrize("stage", STAGES)
def test_the_stage_admits_what_its_overlay_runs(stage: str) -> None:
    """The policy webhook would let each overlay's application in (the same verdicts)."""
    docs = rendered(f"deploy/stages/{stage}")
    parsed = [parse(d) for d in docs if d["kind"] != "Namespace"]
    stages = [p for p in parsed if isinstance(p, Stage)]
    for obj in parsed:
        if isinstance(obj, Container | Image | Volume):
            owner = stage_of(obj.metadata.namespace, stages)
            assert owner is not None
            assert violations(obj, owner.spec.policy) == []


@pytest.mark.parametrize("stage", STAGES)
def test_an_overlays_digest_lands_in_the_rendered_image(stage: str) -> None:
    (entry,) = overlay(stage)["images"]
    assert DIGEST.match(entry["digest"])
    assert set(entry) == {"name", "digest"}  # what GitOps write-back edits
    image = find(rendered(f"deploy/stages/{stage}"), "Image", "web")
    assert image["spec"]["reference"] == f"{entry['name']}@{entry['digest']}"


def test_the_overlays_run_different_digests_of_the_same_repository() -> None:
    entries = [overlay(stage)["images"][0] for stage in STAGES]
    assert {e["name"] for e in entries} == {"127.0.0.1:5000/shop/web"}
    assert len({e["digest"] for e in entries}) == len(STAGES)


def test_the_image_transformer_also_rewrites_a_containers_own_reference(
        tmp_path: Path) -> None:
    """The same configuration reaches Container.spec.image (a Container that names its
    image directly, without an Image object)."""
    work = tmp_path
    (work / "container.yaml").write_text(yaml.safe_dump({
        "apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
        "metadata": {"name": "api"}, "spec": {"image": "127.0.0.1:5000/shop/api:2.0"}}))
    components = os.path.relpath(ROOT / "deploy/components/dockyard-kinds", work)
    (work / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["container.yaml"], "components": [components],
        "images": [{"name": "127.0.0.1:5000/shop/api", "digest": "sha256:" + "ab" * 32}]}))
    (container,) = kustomize(str(work))
    assert container["spec"]["image"] == "127.0.0.1:5000/shop/api@sha256:" + "ab" * 32


def test_each_stage_delivers_through_this_repository_and_its_overlay() -> None:
    for stage in STAGES:
        delivery = find(rendered(f"deploy/stages/{stage}"), "Stage")["spec"].get("delivery")
        if stage == "dev":
            assert delivery is None  # builds land in dev from CI; nothing is promoted in
            continue
        assert delivery == {"mode": "GitOps", "git": {
            "repository": REPOSITORY, "path": f"deploy/stages/{stage}"}}
        assert (ROOT / delivery["git"]["path"] / "kustomization.yaml").is_file()


def test_argocd_syncs_the_platform_and_one_application_per_stage() -> None:
    docs = loaded("deploy/argocd/project.yaml") + loaded("deploy/argocd/platform.yaml") + \
        loaded("deploy/argocd/stages.yaml")
    assert sorted(d["metadata"]["name"] for d in kustomize("deploy/argocd")) == \
        sorted(d["metadata"]["name"] for d in docs)
    project = find(docs, "AppProject")
    assert project["spec"]["sourceRepos"] == [REPOSITORY]
    allowed = {d["namespace"] for d in project["spec"]["destinations"]}
    platform = find(docs, "Application")
    assert platform["spec"]["project"] == project["metadata"]["name"]
    assert (ROOT / platform["spec"]["source"]["path"] / "kustomization.yaml").is_file()
    assert platform["spec"]["destination"]["namespace"] in allowed
    appset = find(docs, "ApplicationSet")
    template = appset["spec"]["template"]
    assert template["spec"]["project"] == project["metadata"]["name"]
    (generator,) = appset["spec"]["generators"]
    elements = generator["list"]["elements"]
    assert [e["stage"] for e in elements] == list(STAGES)
    for element in elements:  # what Argo CD's Go templates make of each element
        path = template["spec"]["source"]["path"].replace("{{.stage}}", element["stage"])
        assert (ROOT / path / "kustomization.yaml").is_file(), path
        namespace = template["spec"]["destination"]["namespace"].replace(
            "{{.stage}}", element["stage"])
        assert namespace == element["stage"]
        assert namespace in allowed


def test_argocd_syncs_only_dev_and_ci_automatically() -> None:
    appset = find(loaded("deploy/argocd/stages.yaml"), "ApplicationSet")
    automated = {e["stage"]: e["automated"]
                 for e in appset["spec"]["generators"][0]["list"]["elements"]}
    assert automated == {"dev": True, "ci": True, "staging": False, "prod": False}
    assert "syncPolicy" not in appset["spec"]["template"]["spec"]
    assert "{{- if .automated }}" in appset["spec"]["templatePatch"]
    assert appset["spec"]["goTemplate"] is True


def test_argocd_may_deploy_every_cluster_scoped_kind_the_trees_hold() -> None:
    project = find(loaded("deploy/argocd/project.yaml"), "AppProject")
    allowed = {(e["group"], e["kind"]) for e in project["spec"]["clusterResourceWhitelist"]}
    needed = {(d["apiVersion"].rpartition("/")[0], d["kind"])
              for tree in TREES for d in rendered(tree) if "namespace" not in d["metadata"]}
    assert needed <= allowed


def test_flux_syncs_the_platform_first_then_every_stage() -> None:
    docs = kustomize("deploy/flux")
    source = find(docs, "GitRepository")
    assert source["spec"]["url"] == REPOSITORY
    assert source["spec"]["interval"]
    syncs = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Kustomization"}
    assert set(syncs) == {"dockyard-platform", *(f"shop-{stage}" for stage in STAGES)}
    for name, spec in syncs.items():
        assert spec["sourceRef"] == {"kind": "GitRepository",
                                     "name": source["metadata"]["name"]}
        assert (ROOT / spec["path"] / "kustomization.yaml").is_file(), spec["path"]
        assert spec["prune"] is True
        assert spec["interval"]
        expected = [] if name == "dockyard-platform" else [{"name": "dockyard-platform"}]
        assert spec.get("dependsOn", []) == expected
    assert {spec["path"] for spec in syncs.values()} == {f"./{tree}" for tree in TREES}
