"""The chart's delivery pipeline: the Stages it creates from `stages` (real helm).

By default dev -> ci -> staging -> prod, each stage at least as strict as the one before,
field by field; `stages.create=false` renders none; a pipeline of one's own renders as
written. Every Stage is validated against our CRD, as the API server would.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard_api import Stage, parse
from dockyard_api.stage import StagePolicy
from tests.conftest import tool
from tests.deploy.manifests import (
    CHART,
    NAMESPACE,
    RELEASE,
    STAGES,
    Doc,
    helm_template,
    kinds,
    ok,
    problems,
    run,
)
from tests.deploy.strictness import RULES, loosened

CUSTOM = Path(__file__).parent / "values" / "custom-pipeline.yaml"
_rendered: dict[str, list[Doc]] = {}


def rendered(name: str = "defaults") -> list[Doc]:
    """The chart rendered with its defaults or with the custom pipeline, once per run."""
    if name not in _rendered:
        _rendered[name] = helm_template(values_file=CUSTOM if name == "custom" else None)
    return _rendered[name]


def stages(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Stage"}


def policy(stage: Doc) -> StagePolicy:
    parsed = parse(stage)
    assert isinstance(parsed, Stage)
    return parsed.spec.policy


def test_the_defaults_create_the_four_stages_chained_dev_ci_staging_prod() -> None:
    found = stages(rendered())
    assert list(found) == list(STAGES)
    assert {name: s["spec"].get("upstream") for name, s in found.items()} == {
        "dev": None, "ci": "dev", "staging": "ci", "prod": "staging"}
    for name, stage in found.items():
        assert stage["apiVersion"] == "dockyard.dev/v1alpha1"
        assert "namespace" not in stage["metadata"]  # cluster-scoped
        assert stage["spec"]["namespaces"] == [name]


@pytest.mark.parametrize("name", ["defaults", "custom"])
def test_every_rendered_stage_is_valid_against_our_crd_and_parses(name: str) -> None:
    found = stages(rendered(name))
    assert found
    assert {key: problems(doc) for key, doc in found.items()} == {key: [] for key in found}
    for doc in found.values():
        assert isinstance(parse(doc), Stage)


@pytest.mark.parametrize(("before", "after"), list(pairwise(STAGES)))
def test_no_default_stage_is_looser_than_the_one_before_it(before: str, after: str) -> None:
    found = stages(rendered())
    assert loosened(policy(found[before]), policy(found[after])) == []


def test_the_default_policy_is_strictest_in_prod() -> None:
    prod = policy(stages(rendered())["prod"])
    assert (prod.require_pinned_digests, prod.require_resource_limits,
            prod.require_read_only_rootfs) == (True, True, True)
    assert prod.allow_host_path is False
    assert prod.allowed_capabilities == []
    assert prod.require_no_new_privileges is True
    assert prod.allow_unconfined_seccomp is False
    staging = policy(stages(rendered())["staging"])
    assert loosened(prod, staging) == ["requireNoNewPrivileges", "allowHostPath",
                                       "allowUnconfinedSeccomp", "allowedCapabilities"]


def test_the_defaults_need_nothing_only_the_application_or_the_team_knows() -> None:
    """No verification command (it lives in the application's image) and no approvers
    (none are known at install time): a gate that can never pass would block every
    promotion."""
    for stage in stages(rendered()).values():
        assert stage["spec"].get("gates") is None, stage["metadata"]["name"]
    assert stages(rendered())["prod"]["spec"]["rollback"] == {
        "enabled": True, "window": "10m", "maxRestarts": 2}


@pytest.mark.parametrize("name", ["defaults", "custom"])
def test_the_stages_are_labelled_and_kept_by_helm_on_uninstall(name: str) -> None:
    for stage in stages(rendered(name)).values():
        assert stage["metadata"]["labels"]["app.kubernetes.io/component"] == "pipeline"
        assert stage["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert stage["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_stages_create_false_renders_no_stage_and_leaves_the_rest(tmp_path: Path) -> None:
    docs = helm_template({"stages": {"create": False}}, tmp=tmp_path)
    assert stages(docs) == {}
    assert kinds(docs) == [kind for kind in kinds(rendered()) if kind != "Stage"]


def test_a_pipeline_of_ones_own_replaces_the_default_and_renders_as_written() -> None:
    values: dict[str, Any] = yaml.safe_load(CUSTOM.read_text(encoding="utf-8"))
    wanted = {entry["name"]: entry["spec"] for entry in values["stages"]["pipeline"]}
    found = stages(rendered("custom"))
    assert {name: stage["spec"] for name, stage in found.items()} == wanted
    assert list(found) == ["build", "qa", "live"]


def test_a_stage_listed_twice_fails_the_render_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"stages": {"pipeline": [
        {"name": "dev", "spec": {}}, {"name": "dev", "spec": {"upstream": "dev"}}]}}),
        encoding="utf-8")
    done = run(tool("helm"), "template", RELEASE, str(CHART), "--values", str(path))
    assert done.returncode != 0
    assert 'the stage "dev" is listed twice' in done.stderr, done.stderr


def test_an_empty_pipeline_renders_no_stage(tmp_path: Path) -> None:
    assert stages(helm_template({"stages": {"pipeline": []}}, tmp=tmp_path)) == {}


@pytest.mark.parametrize(("values", "said"), [
    (None, ["Stages dev -> ci -> staging -> prod",
            "kubectl create namespace dev ci staging prod"]),
    (CUSTOM, ["Stages build -> qa -> live",
              "kubectl create namespace build build-tools qa live"]),
], ids=["defaults", "custom"])
def test_the_install_notes_name_the_pipeline_and_the_namespaces_to_create(
        values: Path | None, said: list[str]) -> None:
    args = ["--values", str(values)] if values else []
    notes = ok(tool("helm"), "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
               "--dry-run=client", *args).partition("NOTES:")[2]
    for line in said:
        assert line in notes, notes


# The strictness check itself: each way of loosening prod's default policy is caught.
LOOSER: list[tuple[dict[str, Any], dict[str, Any], list[str]]] = [
    ({}, {"requirePinnedDigests": False}, ["requirePinnedDigests"]),
    ({}, {"requireResourceLimits": False}, ["requireResourceLimits"]),
    ({}, {"requireReadOnlyRootfs": False}, ["requireReadOnlyRootfs"]),
    ({"requireNoNewPrivileges": True}, {"requireNoNewPrivileges": False},
     ["requireNoNewPrivileges"]),
    ({}, {"allowHostPath": True}, ["allowHostPath"]),
    ({}, {"allowUnconfinedSeccomp": True}, ["allowUnconfinedSeccomp"]),
    ({}, {"allowedCapabilities": ["NET_ADMIN"]}, ["allowedCapabilities"]),
    ({}, {"allowedCapabilities": None}, ["allowedCapabilities"]),
    ({"maxResources": {"cpu": "2"}}, {"maxResources": {"cpu": "2500m"}}, ["maxResources"]),
    ({"maxResources": {"memory": "1Gi"}}, {"maxResources": {"memory": "1025Mi"}},
     ["maxResources"]),
    ({"maxResources": {"pids": 100}}, {"maxResources": {"cpu": "1"}}, ["maxResources"]),
    ({"maxResources": {"cpu": "1"}}, {"maxResources": None}, ["maxResources"]),
    ({"maxResources": {"cpu": "1"}}, {"maxResources": {"cpu": "500m", "pids": 10}}, []),
    ({"allowedCapabilities": ["CHOWN", "KILL"]}, {"allowedCapabilities": ["KILL"]}, []),
]


@pytest.mark.parametrize(("base", "change", "named"), LOOSER,
                         ids=[f"{'+'.join(row[2]) or 'tighter'}-{i}"
                              for i, row in enumerate(LOOSER)])
def test_the_strictness_check_names_each_loosened_field(
        base: dict[str, Any], change: dict[str, Any], named: list[str]) -> None:
    prod = stages(rendered())["prod"]["spec"]["policy"]
    before = StagePolicy.model_validate_json(json.dumps({**prod, **base}))
    after = StagePolicy.model_validate_json(json.dumps({**prod, **base, **change}))
    assert loosened(before, after) == named


def test_the_strictness_check_knows_every_policy_field() -> None:
    assert set(StagePolicy.model_fields) == RULES
