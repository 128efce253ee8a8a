"""A Promotion's gates, decided without any API server: upstream, verification, soak,
approval, freeze, then the rollback window."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from dockyard_api import Container, Promotion, Stage
from dockyard_api.container import ContainerPhase
from dockyard_api.manifests import parse_as
from dockyard_api.policy import violations
from dockyard_api.promotion import GateName, GateState, PromotionPhase
from dockyard_operator import gates
from dockyard_operator.gates import Apply, Done, Fail, Rollback, Run, Verify, Wait, World
from dockyard_operator.promotions import verification_container

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
GOOD = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def _stage(name: str, upstream: str | None = None, *, status: dict[str, Any] | None = None,
           **spec: Any) -> Stage:
    body: dict[str, Any] = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Stage",
                            "metadata": {"name": name},
                            "spec": {"namespaces": [name], **spec}}
    if upstream:
        body["spec"]["upstream"] = upstream
    if status is not None:
        body["status"] = status
    return parse_as(Stage, body)


def _entered(digest: str = GOOD, since: datetime.datetime = NOW - datetime.timedelta(hours=2),
             **extra: Any) -> dict[str, Any]:
    return {"images": [{"image": "web", "digest": digest, "since": since.isoformat(),
                        **extra}]}


def _promotion(stage: str = "staging", *, approvals: list[dict[str, Any]] | None = None,
               status: dict[str, Any] | None = None) -> Promotion:
    body: dict[str, Any] = {
        "apiVersion": "dockyard.dev/v1alpha1", "kind": "Promotion",
        "metadata": {"name": "web-1", "namespace": stage, "uid": "u1",
                     "annotations": {"dockyard.dev/requested-by": "bob"}},
        "spec": {"stage": stage, "images": [{"image": "web", "digest": GOOD}],
                 "approvals": approvals or []}}
    if status is not None:
        body["status"] = status
    return parse_as(Promotion, body)


def _world(target: Stage | None, upstream: Stage | None = None, **extra: Any) -> World:
    return World(now=NOW, target=target, upstream=upstream, requested_by="bob", **extra)


def _gate(decision: gates.Decision, gate: GateName) -> tuple[GateState, str]:
    (found,) = [g for g in decision.gates if g.gate == gate]
    return found.state, found.message


def test_every_gate_open_applies_and_records_the_evidence() -> None:
    decision = gates.decide(_promotion(), _world(_stage("staging", "ci"),
                                                 _stage("ci", status=_entered())))
    assert decision.step == Apply()
    assert [(g.gate, g.state) for g in decision.gates] == [
        (GateName.UPSTREAM, GateState.PASSED), (GateName.FREEZE, GateState.PASSED)]


def test_a_digest_that_never_entered_the_upstream_stage_fails() -> None:
    upstream = _stage("ci", status=_entered(OTHER))
    decision = gates.decide(_promotion(), _world(_stage("staging", "ci"), upstream))
    assert isinstance(decision.step, Fail)
    assert f"web@{GOOD} never entered stage ci" in decision.step.message


def test_a_digest_rolled_back_upstream_goes_no_further() -> None:
    upstream = _stage("ci", status={"history": [{
        "image": "web", "digest": GOOD, "since": NOW.isoformat(),
        "until": NOW.isoformat(), "rolledBack": True}]})
    decision = gates.decide(_promotion(), _world(_stage("staging", "ci"), upstream))
    assert isinstance(decision.step, Fail)


def test_the_first_stage_has_no_upstream_to_pass() -> None:
    decision = gates.decide(_promotion("dev"), _world(_stage("dev")))
    assert decision.step == Apply()
    assert _gate(decision, GateName.UPSTREAM) == (GateState.PASSED, "dev is the first stage")


def test_a_promotion_outside_the_stage_namespaces_fails() -> None:
    promotion = _promotion()
    target = _stage("staging", "ci", namespaces=["other"])
    decision = gates.decide(promotion, _world(target, _stage("ci", status=_entered())))
    assert isinstance(decision.step, Fail)
    assert "does not belong to stage staging" in decision.step.message


def test_a_missing_stage_fails() -> None:
    assert gates.decide(_promotion(), _world(None)).step == Fail("no Stage staging")


VERIFY = {"gates": {"verification": {"command": ["/app/selftest"], "timeout": "5m"}}}


def test_verification_starts_its_containers_then_waits_for_them() -> None:
    target = _stage("staging", "ci", **VERIFY)
    upstream = _stage("ci", status=_entered())
    first = gates.decide(_promotion(), _world(target, upstream))
    assert isinstance(first.step, Verify)
    assert [i.image for i in first.step.images] == ["web"]
    running = Run("v", ContainerPhase.RUNNING, created=NOW - datetime.timedelta(minutes=1))
    second = gates.decide(_promotion(), _world(target, upstream, verifications={"web": running}))
    assert second.step == Wait(PromotionPhase.VERIFYING, gates.POLL)


def test_verification_passes_on_exit_code_zero_and_fails_otherwise() -> None:
    target, upstream = _stage("staging", "ci", **VERIFY), _stage("ci", status=_entered())
    passed = Run("v", ContainerPhase.SUCCEEDED, exit_code=0)
    decision = gates.decide(_promotion(), _world(target, upstream,
                                                 verifications={"web": passed}))
    assert decision.step == Apply()
    assert _gate(decision, GateName.VERIFICATION) == (GateState.PASSED, "exit code 0 from v")
    failed = Run("v", ContainerPhase.FAILED, exit_code=3)
    decision = gates.decide(_promotion(), _world(target, upstream,
                                                 verifications={"web": failed}))
    assert decision.step == Fail("container v exited with code 3")


def test_a_verification_past_its_timeout_fails() -> None:
    target, upstream = _stage("staging", "ci", **VERIFY), _stage("ci", status=_entered())
    slow = Run("v", ContainerPhase.RUNNING, created=NOW - datetime.timedelta(minutes=6))
    decision = gates.decide(_promotion(), _world(target, upstream, verifications={"web": slow}))
    assert decision.step == Fail("v did not finish within 5m")


def test_soak_time_waits_for_the_rest_of_it() -> None:
    target = _stage("staging", "ci", gates={"soakTime": "3h"})
    upstream = _stage("ci", status=_entered())  # entered two hours ago
    decision = gates.decide(_promotion(), _world(target, upstream))
    assert decision.step == Wait(PromotionPhase.WAITING, datetime.timedelta(hours=1))
    assert _gate(decision, GateName.SOAK_TIME) == (GateState.WAITING, "2h of 3h in stage ci")


def test_soak_time_of_a_replaced_digest_ends_when_it_was_replaced() -> None:
    target = _stage("staging", "ci", gates={"soakTime": "1h"})
    upstream = _stage("ci", status={"history": [{
        "image": "web", "digest": GOOD, "since": (NOW - datetime.timedelta(hours=5)).isoformat(),
        "until": (NOW - datetime.timedelta(hours=4, minutes=30)).isoformat()}]})
    decision = gates.decide(_promotion(), _world(target, upstream))
    assert isinstance(decision.step, Wait)
    assert _gate(decision, GateName.SOAK_TIME)[1] == "30m of 1h in stage ci"


APPROVAL = {"gates": {"approval": {"approvers": ["alice"], "groups": ["release"],
                                   "required": 2}}}


@pytest.mark.parametrize(("approvals", "counted"), [
    ([], "0 of 2 approvals"),
    ([{"by": "alice"}], "1 of 2 approvals (alice)"),
    ([{"by": "alice"}, {"by": "bob", "groups": ["release"]}],
     "1 of 2 approvals (alice); not counted: bob requested the promotion"),
    ([{"by": "alice"}, {"by": "mallory", "groups": ["dev"]}],
     "1 of 2 approvals (alice); not counted: mallory is neither a named approver nor in "
     "an approving group"),
])
def test_approvals_wait_until_enough_allowed_people_approved(
        approvals: list[dict[str, Any]], counted: str) -> None:
    target, upstream = _stage("staging", "ci", **APPROVAL), _stage("ci", status=_entered())
    decision = gates.decide(_promotion(approvals=approvals), _world(target, upstream))
    assert decision.step == Wait(PromotionPhase.WAITING, None)
    assert _gate(decision, GateName.APPROVAL) == (GateState.WAITING, counted)


def test_two_allowed_approvals_one_by_group_let_it_pass() -> None:
    target, upstream = _stage("staging", "ci", **APPROVAL), _stage("ci", status=_entered())
    approvals = [{"by": "alice"}, {"by": "carol", "groups": ["release"]}]
    decision = gates.decide(_promotion(approvals=approvals), _world(target, upstream))
    assert decision.step == Apply()


def test_self_approval_counts_when_the_stage_allows_it() -> None:
    policy = {"gates": {"approval": {"approvers": ["bob"], "allowSelfApproval": True}}}
    target, upstream = _stage("staging", "ci", **policy), _stage("ci", status=_entered())
    decision = gates.decide(_promotion(approvals=[{"by": "bob"}]), _world(target, upstream))
    assert decision.step == Apply()


def test_a_freeze_window_holds_the_promotion_until_it_ends() -> None:
    window = {"start": (NOW - datetime.timedelta(hours=1)).isoformat(),
              "end": (NOW + datetime.timedelta(minutes=20)).isoformat(), "reason": "holidays"}
    target = _stage("staging", "ci", freezeWindows=[window])
    decision = gates.decide(_promotion(), _world(target, _stage("ci", status=_entered())))
    assert decision.step == Wait(PromotionPhase.WAITING, datetime.timedelta(minutes=20))
    state, message = _gate(decision, GateName.FREEZE)
    assert state == GateState.WAITING
    assert message.endswith(": holidays")


def test_a_window_that_ended_or_has_not_begun_holds_nothing() -> None:
    past = {"start": (NOW - datetime.timedelta(hours=2)).isoformat(),
            "end": (NOW - datetime.timedelta(hours=1)).isoformat()}
    future = {"start": (NOW + datetime.timedelta(hours=1)).isoformat(),
              "end": (NOW + datetime.timedelta(hours=2)).isoformat()}
    target = _stage("staging", "ci", freezeWindows=[past, future])
    assert gates.decide(_promotion(), _world(target, _stage("ci", status=_entered()))
                        ).step == Apply()


def test_an_emergency_stop_holds_every_promotion() -> None:
    target = _stage("staging", "ci", frozen=True)
    decision = gates.decide(_promotion(), _world(target, _stage("ci", status=_entered())))
    assert decision.step == Wait(PromotionPhase.WAITING, gates.FROZEN_POLL)


def _applied(minutes_ago: float) -> dict[str, Any]:
    applied = NOW - datetime.timedelta(minutes=minutes_ago)
    return {"phase": "Succeeded", "appliedAt": applied.isoformat(),
            "gates": [{"gate": "Upstream", "state": "Passed", "at": applied.isoformat()}]}


def _in_staging(promotion: str = "staging/web-1", **spec: Any) -> Stage:
    """Staging, whose ledger shows the promotion's digest as the one it brought in."""
    return _stage("staging", "ci", status=_entered(promotion=promotion), **spec)


RECENT = NOW - datetime.timedelta(seconds=30)


def test_after_applying_the_stage_is_watched_through_the_rollback_window() -> None:
    target = _in_staging()
    healthy = Run("web", ContainerPhase.RUNNING, digest=GOOD, started=RECENT)
    decision = gates.decide(_promotion(status=_applied(1)), _world(target, workload=[healthy]))
    assert decision.step == Wait(PromotionPhase.SUCCEEDED, gates.POLL)
    assert _gate(decision, GateName.UPSTREAM)[0] == GateState.PASSED  # kept from before
    done = gates.decide(_promotion(status=_applied(11)), _world(target, workload=[healthy]))
    assert done.step == Done()
    assert _gate(done, GateName.HEALTH) == (GateState.PASSED, "no failure within 10m")


@pytest.mark.parametrize(("run", "why"), [
    (Run("web", ContainerPhase.RUNNING, restart_count=3, restarting=True, started=RECENT),
     "container web restarted 3 times (more than 2)"),
    (Run("web", ContainerPhase.FAILED, exit_code=1, started=RECENT),
     "container web failed with exit code 1"),
])
def test_a_failing_container_of_the_new_version_rolls_it_back(run: Run, why: str) -> None:
    decision = gates.decide(_promotion(status=_applied(1)),
                            _world(_in_staging(), workload=[run]))
    assert decision.step == Rollback(why)
    assert _gate(decision, GateName.HEALTH) == (GateState.FAILED, why)


def test_a_container_that_restarts_within_its_allowance_is_not_a_failure() -> None:
    run = Run("web", ContainerPhase.FAILED, exit_code=1, restart_count=1, restarting=True,
              started=RECENT)
    decision = gates.decide(_promotion(status=_applied(1)),
                            _world(_in_staging(), workload=[run]))
    assert isinstance(decision.step, Wait)


def test_the_instance_from_before_the_promotion_is_not_judged() -> None:
    # Until its agent replaces it, the Container's status shows the old digest's instance.
    old = Run("web", ContainerPhase.FAILED, exit_code=1, started=NOW - datetime.timedelta(
        minutes=5))
    decision = gates.decide(_promotion(status=_applied(1)),
                            _world(_in_staging(), workload=[old]))
    assert isinstance(decision.step, Wait)


def test_a_promotion_whose_digest_a_later_one_replaced_is_no_longer_watched() -> None:
    run = Run("web", ContainerPhase.FAILED, exit_code=1, started=RECENT)
    decision = gates.decide(_promotion(status=_applied(1)),
                            _world(_in_staging(promotion="staging/web-2"), workload=[run]))
    assert decision.step == Done()
    assert _gate(decision, GateName.HEALTH)[1].startswith("superseded")


def test_without_rollback_an_applied_promotion_is_done() -> None:
    target = _stage("staging", "ci", rollback={"enabled": False})
    run = Run("web", ContainerPhase.FAILED, exit_code=1)
    assert gates.decide(_promotion(status=_applied(1)), _world(target, workload=[run])
                        ).step == Done()


def test_ended_promotions_have_nothing_left_to_do() -> None:
    for phase in ("Failed", "RolledBack"):
        assert gates.decide(_promotion(status={"phase": phase}),
                            _world(_stage("staging", "ci"))).step == Done()


def test_a_gate_keeps_its_time_while_its_state_stays() -> None:
    earlier = NOW - datetime.timedelta(hours=1)
    target = _stage("staging", "ci", gates={"soakTime": "3h"})
    status = {"phase": "Waiting", "gates": [
        {"gate": "SoakTime", "state": "Waiting", "at": earlier.isoformat(), "message": "x"}]}
    decision = gates.decide(_promotion(status=status),
                            _world(target, _stage("ci", status=_entered())))
    (soak,) = [g for g in decision.gates if g.gate == GateName.SOAK_TIME]
    assert soak.at == earlier
    (upstream,) = [g for g in decision.gates if g.gate == GateName.UPSTREAM]
    assert upstream.at == NOW


def test_the_verification_container_complies_with_the_strictest_stage_policy() -> None:
    # Else the stage's own admission webhook refuses the container that verifies for it.
    policy = {"requirePinnedDigests": True, "allowHostPath": False,
              "requireResourceLimits": True, "requireReadOnlyRootfs": True,
              "requireNoNewPrivileges": True, "allowUnconfinedSeccomp": False,
              "allowedCapabilities": [],
              "maxResources": {"cpu": "500m", "memory": "256Mi", "pids": 64}}
    target = _stage("prod", "staging", policy=policy,
                    gates={"verification": {"command": ["/smoke-test"]}})
    promotion = _promotion("prod")
    body = verification_container(promotion, target, promotion.spec.images[0],
                                  "registry.test/shop/web")
    assert body is not None
    assert body["spec"]["image"] == f"registry.test/shop/web@{GOOD}"
    assert violations(parse_as(Container, body), target.spec.policy) == []
    assert verification_container(promotion, _stage("prod"), promotion.spec.images[0],
                                  "registry.test/shop/web") is None
