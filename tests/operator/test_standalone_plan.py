"""Desired + observed -> actions: create, keep, replace, start, remove, prune, refuse."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dockyard_api.converge import (
    Absent,
    Create,
    DesiredContainer,
    Keep,
    ManifestSetError,
    NodeName,
    ObjectKey,
    ObservedContainer,
    Plan,
    Remove,
    Replace,
    Start,
    plan_down,
    plan_up,
)
from tests.operator import container, desired, edited, manifests, one, volume

WEB = container("web", args=["serve"], restartPolicy="Always")


def running(want: DesiredContainer, status: str = "running", exit_code: int | None = None,
            cid: str = "") -> ObservedContainer:
    """What the daemon lists after `up` made `want`."""
    return ObservedContainer(id=cid or f"id-{want.name}", name=want.name, status=status,
                             labels=dict(want.config["labels"]), exit_code=exit_code,
                             config=dict(want.config))


def by_hand(name: str) -> ObservedContainer:
    """A container someone ran with `dockyard run --name NAME`."""
    return ObservedContainer(id=f"id-{name}", name=name, status="running")


def summary(plan: Plan) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.name) for a in plan.actions]


def test_an_absent_container_is_created() -> None:
    want = one(WEB)
    (action,) = plan_up([want], []).actions
    assert action == Create(name=NodeName("default.web"), key=ObjectKey("default/web"),
                            desired=want,
                            reason="not on this machine")


def test_the_same_spec_running_is_kept_so_a_second_up_changes_nothing() -> None:
    wants = desired(WEB, container("job", restartPolicy="Never"))
    plan = plan_up(wants, [running(wants[0]), running(wants[1], "stopped", 0)])
    assert summary(plan) == [("Keep", "default.web"), ("Keep", "default.job")]
    assert [a.reason for a in plan.actions] == ["running", "exited with code 0"]
    assert not plan.changes


def test_a_changed_spec_is_replaced_and_the_reason_names_the_fields() -> None:
    before = one(WEB)
    after = one(edited(WEB, "spec.resources", {"memory": "64Mi"}))
    (action,) = plan_up([after], [running(before, cid="old")]).actions
    assert isinstance(action, Replace)
    assert (action.container_id, action.desired) == ("old", after)
    assert action.reason == "spec changed (memory_bytes)"


def test_a_replace_without_the_old_config_still_says_why() -> None:
    before, after = one(WEB), one(edited(WEB, "spec.args", ["other"]))
    observed = ObservedContainer(id="old", name="default.web", status="running",
                                 labels=dict(before.config["labels"]))
    (action,) = plan_up([after], [observed]).actions
    assert action.reason == "spec changed"


@pytest.mark.parametrize(("policy", "status", "code", "action", "reason"), [
    ("Always", "stopped", 0, Start, "exited with code 0; restartPolicy is Always"),
    ("Always", "stopped", 137, Start, "exited with code 137; restartPolicy is Always"),
    ("OnFailure", "stopped", 1, Start, "exited with code 1; restartPolicy is OnFailure"),
    ("OnFailure", "stopped", 0, Keep, "exited with code 0"),
    ("Never", "stopped", 1, Keep, "exited with code 1"),
    ("Never", "created", None, Start, "created but never started"),
    ("Always", "paused", None, Keep, "paused"),
])
def test_a_container_that_should_run_is_started_again(
        policy: str, status: str, code: int | None, action: type, reason: str) -> None:
    want = one(edited(WEB, "spec.restartPolicy", policy))
    (found,) = plan_up([want], [running(want, status, code)]).actions
    assert type(found) is action
    assert found.reason == reason
    if isinstance(found, Start):
        assert found.container_id == "id-default.web"


def test_a_container_made_by_hand_is_never_replaced_and_nothing_is_planned() -> None:
    wants = desired(container("db"), WEB)
    with pytest.raises(ManifestSetError) as caught:
        plan_up(wants, [by_hand("default.web")])
    (problem,) = caught.value.problems
    assert (problem.source, problem.path) == ("app.yaml#1", "metadata.name")
    assert "dockyard up did not make it" in problem.message
    assert "dockyard rm -f default.web" in problem.message


def test_a_container_labelled_for_another_object_is_refused() -> None:
    want = one(WEB)
    other = running(want)
    impostor = ObservedContainer(id="x", name=other.name, status="running",
                                 labels={**other.labels, "dockyard.dev/object": "x/y"})
    with pytest.raises(ManifestSetError):
        plan_up([want], [impostor])


def test_without_prune_leftovers_are_kept_and_listed() -> None:
    web, old = desired(WEB, container("old"))
    plan = plan_up([web], [running(web), running(old), by_hand("other")],
                   namespaces={"default"})
    assert summary(plan) == [("Keep", "default.web")]
    assert plan.unpruned == ("default.old",)


def test_prune_removes_what_up_made_for_objects_gone_from_the_set_first() -> None:
    web, old, older = desired(WEB, container("old"), container("older"))
    elsewhere = one(container("api", "billing"))
    plan = plan_up([web], [running(older), running(web), running(old), running(elsewhere),
                           by_hand("default.other")],
                   namespaces={"default"}, prune=True)
    assert summary(plan) == [("Remove", "default.old"), ("Remove", "default.older"),
                             ("Keep", "default.web")]  # billing's and the hand-made stay
    removal = plan.actions[0]
    assert isinstance(removal, Remove)
    assert (removal.key, removal.container_id) == ("default/old", "id-default.old")
    assert removal.reason == "no longer in the manifests (--prune)"
    assert plan.unpruned == ()


def test_prune_with_no_namespace_in_scope_removes_nothing() -> None:
    web, old = desired(WEB, container("old"))
    assert summary(plan_up([web], [running(old)], prune=True)) == [("Create", "default.web")]


def test_actions_follow_the_order_of_the_manifests() -> None:
    wants = desired(container("c"), container("a"), container("b"))
    assert [a.name for a in plan_up(wants, []).actions] == \
        ["default.c", "default.a", "default.b"]


def test_down_removes_exactly_the_containers_of_the_manifests() -> None:
    web, job, keep = desired(WEB, container("job"), container("keep"))
    plan = plan_down(manifests(WEB, container("job"), container("gone")),
                     [running(web), running(job, "stopped", 0), running(keep),
                      by_hand("other")])
    assert summary(plan) == [("Remove", "default.web"), ("Remove", "default.job"),
                             ("Absent", "default.gone")]
    assert [a.reason for a in plan.actions][-1] == "not on this machine"
    assert plan.changes


def test_down_only_needs_identities_not_a_translatable_spec() -> None:
    doc = container("web", volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}])
    (action,) = plan_down(manifests(doc), []).actions
    assert isinstance(action, Absent)
    assert not plan_down(manifests(doc), []).changes


def test_down_never_removes_a_container_made_by_hand() -> None:
    with pytest.raises(ManifestSetError) as caught:
        plan_down(manifests(WEB), [by_hand("default.web")])
    assert caught.value.problems[0].path == "metadata.name"


def test_an_observed_container_reads_the_daemons_listing() -> None:
    want = one(WEB)
    record: dict[str, Any] = {"id": "c0ffee", "name": "default.web", "image": "busybox",
                              "status": "stopped", "exit_code": 3, "config": dict(want.config),
                              "labels": dict(want.config["labels"]), "pid": 0}
    observed = ObservedContainer.from_record(record)
    assert (observed.id, observed.status, observed.exit_code) == ("c0ffee", "stopped", 3)
    assert observed.managed
    assert observed.object == "default/web"
    bare = ObservedContainer.from_record({"id": "1", "name": "x", "status": "running"})
    assert (bare.managed, bare.object, bare.labels) == (False, None, {})


def test_a_storage_provider_is_started_before_its_consumers() -> None:
    """A consumer's start waits for its provider, whatever order the manifests give."""
    consumer = container("app", volumeMounts=[{"name": "ceph", "mountPath": "/data"}])
    provider = container("storage")
    wanted = desired(consumer, provider, container("other"),
                     volume("ceph", provider={"container": "storage", "path": "/export"}))
    plan = plan_up(wanted, [])
    assert [a.name for a in plan.actions] == ["default.storage", "default.app",
                                              "default.other"]


@pytest.mark.parametrize(("policy", "by_user", "action"), [
    ("Always", False, Keep), ("OnFailure", False, Keep), ("Always", True, Start)])
def test_the_node_agent_leaves_restarts_to_the_daemon_unless_a_user_stopped_it(
        policy: str, by_user: bool, action: type) -> None:
    # The daemon restarts with a back-off and counts the restarts; an agent that started
    # the container itself on every pass made a crash loop without either.
    want = one(edited(WEB, "spec.restartPolicy", policy))
    found = replace(running(want, "stopped", 1), stopped_by_user=by_user)
    (planned,) = plan_up([want], [found], daemon_restarts=True).actions
    assert type(planned) is action
    if action is Keep:
        assert planned.reason.endswith(": the daemon restarts it")
