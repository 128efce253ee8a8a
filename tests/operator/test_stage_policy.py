"""Stage policy: which stage owns a namespace, and every rule an object can break, each
named by its field path (the admission webhook and the audit both use these verdicts)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard_api import Container, Image, Stage, Volume
from dockyard_api.manifests import parse_as
from dockyard_api.policy import Violation, stage_of, unenforced, violations
from dockyard_api.stage import StagePolicy
from dockyard_operator.stages import judge

STRICT = StagePolicy.model_validate({
    "requirePinnedDigests": True, "requireResourceLimits": True,
    "requireReadOnlyRootfs": True, "allowHostPath": False, "allowedCapabilities": ["CHOWN"],
    "maxResources": {"cpu": "2", "memory": "1Gi", "pids": 100}}, strict=False)
DIGEST = "sha256:" + "c" * 64


def _container(**spec: Any) -> Container:
    return parse_as(Container, {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
                                "metadata": {"name": "web", "namespace": "prod"},
                                "spec": {"image": "shop/web:1", **spec}})


def _fields(found: list[Violation]) -> list[str]:
    return [v.field for v in found]


def test_a_container_that_follows_the_strict_policy_passes() -> None:
    ok = _container(image=f"shop/web@{DIGEST}", readOnlyRootfs=True,
                    resources={"cpu": "1", "memory": "512Mi", "pids": 50},
                    capabilities={"add": ["CHOWN"]})
    assert violations(ok, STRICT) == []
    assert violations(_container(imageRef="web", image=None, readOnlyRootfs=True,
                                 resources={"cpu": "1", "memory": "512Mi", "pids": 50}),
                      STRICT) == []


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"readOnlyRootfs": True, "resources": {"cpu": "1", "memory": "1Gi", "pids": 9}},
     "spec.image", "is a tag"),
    ({"image": f"a@{DIGEST}", "resources": {"cpu": "1", "memory": "1Gi", "pids": 9}},
     "spec.readOnlyRootfs", "read-only root filesystem"),
    ({"image": f"a@{DIGEST}", "readOnlyRootfs": True,
      "resources": {"memory": "1Gi", "pids": 9}}, "spec.resources.cpu", "requires a cpu limit"),
    ({"image": f"a@{DIGEST}", "readOnlyRootfs": True,
      "resources": {"cpu": "3", "memory": "1Gi", "pids": 9}},
     "spec.resources.cpu", "3 is above the stage's maximum of 2"),
    ({"image": f"a@{DIGEST}", "readOnlyRootfs": True,
      "resources": {"cpu": "1", "memory": "2Gi", "pids": 9}},
     "spec.resources.memory", "2Gi is above the stage's maximum of 1Gi"),
    ({"image": f"a@{DIGEST}", "readOnlyRootfs": True,
      "resources": {"cpu": "1", "memory": "1Gi"}},
     "spec.resources.pids", "no pids limit: the stage allows at most 100"),
    ({"image": f"a@{DIGEST}", "readOnlyRootfs": True,
      "resources": {"cpu": "1", "memory": "1Gi", "pids": 9},
      "capabilities": {"add": ["CHOWN", "NET_ADMIN"]}},
     "spec.capabilities.add", "NET_ADMIN not allowed in the stage (allowed: CHOWN)"),
])
def test_each_broken_container_rule_names_its_field(spec: dict[str, Any], field: str,
                                                   words: str) -> None:
    found = violations(_container(**spec), STRICT)
    assert _fields(found) == [field]
    assert words in found[0].message


def test_every_rule_broken_at_once_is_reported_once() -> None:
    found = violations(_container(capabilities={"add": ["SYS_ADMIN"]}), STRICT)
    assert _fields(found) == ["spec.image", "spec.readOnlyRootfs", "spec.capabilities.add",
                              "spec.resources.cpu", "spec.resources.memory",
                              "spec.resources.pids"]


def test_an_empty_capability_list_allows_none_and_an_absent_one_any() -> None:
    none = StagePolicy.model_validate({"allowedCapabilities": []})
    assert "allowed: none" in violations(_container(capabilities={"add": ["CHOWN"]}),
                                         none)[0].message
    assert violations(_container(capabilities={"add": ["SYS_ADMIN"]}), StagePolicy()) == []


def test_a_max_without_required_limits_still_refuses_an_unlimited_container() -> None:
    policy = StagePolicy.model_validate({"maxResources": {"memory": "1Gi"}}, strict=False)
    assert [str(v) for v in violations(_container(), policy)] == [
        "spec.resources.memory: no memory limit: the stage allows at most 1Gi; set one"]


def test_images_must_be_pinned_and_host_paths_may_be_forbidden() -> None:
    image = parse_as(Image, {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Image",
                             "metadata": {"name": "web", "namespace": "prod"},
                             "spec": {"reference": "shop/web:1"}})
    assert _fields(violations(image, STRICT)) == ["spec.digest"]
    pinned = image.model_copy(update={"spec": image.spec.model_copy(update={"digest": DIGEST})})
    assert violations(pinned, STRICT) == []
    volume = parse_as(Volume, {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Volume",
                               "metadata": {"name": "logs", "namespace": "prod"},
                               "spec": {"hostPath": {"path": "/var/log"}}})
    assert _fields(violations(volume, STRICT)) == ["spec.hostPath"]
    assert violations(volume, StagePolicy()) == []


def test_no_new_privileges_is_enforced_on_containers_by_its_field() -> None:
    policy = StagePolicy.model_validate({"requireNoNewPrivileges": True})
    assert unenforced(policy) == []
    assert [str(v) for v in violations(_container(), policy)] == [
        "spec.noNewPrivileges: the stage requires that processes cannot gain privileges "
        "through setuid binaries: set noNewPrivileges: true"]
    assert violations(_container(noNewPrivileges=True), policy) == []
    assert violations(_container(), StagePolicy()) == []


def test_an_unconfined_seccomp_profile_is_refused_only_where_the_stage_forbids_it() -> None:
    """Like Docker, a stage lets `seccomp=unconfined` through unless told otherwise; told,
    it refuses only Unconfined, as Pod Security's restricted level does."""
    policy = StagePolicy.model_validate({"allowUnconfinedSeccomp": False})
    unconfined = _container(seccompProfile={"type": "Unconfined"})
    assert [str(v) for v in violations(unconfined, policy)] == [
        "spec.seccompProfile.type: Unconfined runs the container without a seccomp filter, "
        "which the stage forbids: set seccompProfile.type: RuntimeDefault (or Localhost "
        "with a profile)"]
    for confined in (_container(), _container(seccompProfile={"type": "RuntimeDefault"}),
                     _container(seccompProfile={"type": "Localhost",
                                                "localhostProfile": "/etc/dockyard/web.json"})):
        assert violations(confined, policy) == []
    assert StagePolicy().allow_unconfined_seccomp is True
    assert violations(unconfined, StagePolicy()) == []


def _stage(name: str, upstream: str | None = None, namespaces: tuple[str, ...] = (),
           **spec: Any) -> Stage:
    return parse_as(Stage, {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Stage",
                            "metadata": {"name": name},
                            "spec": {"namespaces": list(namespaces or (name,)),
                                     **({"upstream": upstream} if upstream else {}), **spec}})


def test_the_stage_of_a_namespace_is_its_owner_and_the_first_by_name_on_a_clash() -> None:
    stages = [_stage("prod", namespaces=("prod", "shared")), _stage("ci", namespaces=("ci",
                                                                                     "shared"))]
    assert stage_of("prod", stages) is stages[0]
    assert stage_of("shared", stages) is stages[1]
    assert stage_of("elsewhere", stages) is None


def test_a_stage_is_invalid_without_its_upstream_in_a_cycle_or_on_a_claimed_namespace(
        ) -> None:
    dev, ci = _stage("dev"), _stage("ci", "dev")
    assert judge(ci, [dev, ci])[:2] == ("Ready", "Ready")
    assert judge(ci, [dev, ci])[2] == "dev → ci"
    assert judge(_stage("ci", "nope"), [dev])[1] == "UpstreamNotFound"
    a, b = _stage("a", "b"), _stage("b", "a")
    phase, reason, message = judge(a, [a, b])
    assert (phase, reason) == ("Invalid", "UpstreamCycle")
    assert message == "the upstreams form a cycle: a → b → a"
    clash = _stage("x", namespaces=("dev",))
    assert judge(clash, [dev, clash])[1] == "NamespaceClaimed"
    assert judge(_stage("dev", frozen=True), [])[:2] == ("Frozen", "Frozen")
