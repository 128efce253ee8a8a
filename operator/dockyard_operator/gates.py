"""A Promotion's gates, decided: its status and the world now → the one next step.

The gates, in the order a promotion meets them:
1. Upstream: every digest of the bundle entered the upstream stage (is or was in its
   status), so a version enters a stage only after it passed the one before. The first
   stage has no upstream.
2. Verification: a Container run from each candidate digest must exit 0 within the
   stage's timeout.
3. Soak time: each digest has been in the upstream stage at least that long.
4. Approval: enough distinct approvers allowed by the stage's policy (named users or
   members of named groups), the promotion's author not counted unless allowed.
5. Freeze: the stage is not frozen (emergency stop) and no freeze window is open.
Then the digests are applied; for the stage's rollback window the containers that run them
are watched, and a failure restores the previous digests.

Verification runs before the waits, so that its result is known while the promotion waits
for its soak, approvals or the end of a freeze.

Pure computation: the caller observes (Stages, the verification Containers, the stage's
Containers), asks `decide`, and carries out the step.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dockyard_api.container import ContainerPhase
from dockyard_api.duration import format_duration
from dockyard_api.promotion import (
    GateEvidence,
    GateName,
    GateState,
    Promotion,
    PromotionPhase,
)
from dockyard_api.stage import ApprovalPolicy, PromotedImage, Stage, StageImage

TERMINAL = (PromotionPhase.FAILED, PromotionPhase.ROLLED_BACK)
POLL = datetime.timedelta(seconds=1)
"""How soon a promotion that waits on something observed (a container) looks again."""
FROZEN_POLL = datetime.timedelta(seconds=5)
"""How soon one held by an emergency stop looks again (the stop has no end time)."""


@dataclass(frozen=True)
class Run:
    """A container the promotion watches, as observed: its phase, exit code, restarts."""

    name: str
    phase: ContainerPhase
    exit_code: int | None = None
    restart_count: int = 0
    restarting: bool = False
    """It exited and its restart policy starts it again."""
    created: datetime.datetime | None = None
    digest: str | None = None
    started: datetime.datetime | None = None
    """When its process last started (`status.startedAt`)."""


@dataclass(frozen=True)
class World:
    """What the promotion's decision depends on, observed just before it."""

    now: datetime.datetime
    target: Stage | None
    upstream: Stage | None
    requested_by: str | None = None
    verifications: Mapping[str, Run] = field(default_factory=dict)
    """The verification Container of each image of the bundle, by image name."""
    workload: Sequence[Run] = ()
    """The stage's Containers that run the promoted digests (once applied)."""


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet: look again after `retry` (None: when the promotion changes)."""

    phase: PromotionPhase
    retry: datetime.timedelta | None


@dataclass(frozen=True)
class Verify:
    """Create the verification Containers of these images (the others exist)."""

    images: tuple[StageImage, ...]


@dataclass(frozen=True)
class Apply:
    """Every gate passed: move the digests into the stage."""


@dataclass(frozen=True)
class Fail:
    """The promotion cannot succeed: stop, saying why."""

    message: str


@dataclass(frozen=True)
class Rollback:
    """The promoted version failed in the stage: restore the previous digests."""

    message: str


@dataclass(frozen=True)
class Done:
    """Nothing more to do, ever (succeeded and watched, failed, or rolled back)."""


Step = Wait | Verify | Apply | Fail | Rollback | Done


@dataclass(frozen=True)
class Decision:
    """The next step, and the evidence of every gate met so far (for `status.gates`)."""

    step: Step
    gates: tuple[GateEvidence, ...]


def decide(promotion: Promotion, world: World) -> Decision:
    """The next step of `promotion` in `world` (see the module docstring)."""
    evidence = _Evidence(promotion, world.now)
    step = _decide(promotion, world, evidence)
    return Decision(step, evidence.gates())


def _decide(promotion: Promotion, world: World, evidence: _Evidence) -> Step:
    status = promotion.status
    if status is not None and status.phase in TERMINAL:
        return Done()
    target = world.target
    if target is None:
        return Fail(f"no Stage {promotion.spec.stage}")
    if status is not None and status.applied_at is not None:
        return _watch(promotion, target, status.applied_at, world, evidence)
    namespace = promotion.metadata.namespace
    if namespace not in target.spec.namespaces:
        return Fail(f"namespace {namespace} does not belong to stage {target.metadata.name}: "
                    f"create the Promotion in one of {', '.join(target.spec.namespaces)}")
    for gate in (_upstream, _verification, _soak, _approval, _freeze):
        step = gate(promotion, target, world, evidence)
        if step is not None:
            return step
    return Apply()


def _upstream(promotion: Promotion, target: Stage, world: World, evidence: _Evidence
              ) -> Step | None:
    if target.spec.upstream is None:
        evidence.passed(GateName.UPSTREAM, f"{target.metadata.name} is the first stage")
        return None
    upstream = world.upstream
    if upstream is None:
        return evidence.failed(GateName.UPSTREAM, f"no upstream Stage {target.spec.upstream}")
    missing = [f"{i.image}@{i.digest}" for i in promotion.spec.images
               if entered(upstream, i) is None]
    if missing:
        return evidence.failed(GateName.UPSTREAM, f"{', '.join(missing)} never entered stage "
                               f"{upstream.metadata.name}: promote it there first")
    evidence.passed(GateName.UPSTREAM, f"every digest was promoted into "
                    f"{upstream.metadata.name}")
    return None


def _verification(promotion: Promotion, target: Stage, world: World, evidence: _Evidence
                  ) -> Step | None:
    verification = target.spec.gates.verification
    if verification is None:
        return None
    missing = tuple(i for i in promotion.spec.images if i.image not in world.verifications)
    if missing:
        evidence.waiting(GateName.VERIFICATION, "starting the verification containers")
        return Verify(missing)
    runs = [world.verifications[i.image] for i in promotion.spec.images]
    for run in runs:
        if run.phase == ContainerPhase.FAILED or (run.exit_code not in (None, 0)):
            return evidence.failed(GateName.VERIFICATION, f"container {run.name} exited "
                                   f"with code {run.exit_code}")
    pending = [run for run in runs if run.phase != ContainerPhase.SUCCEEDED]
    if pending:
        started = min((run.created or world.now) for run in pending)
        if world.now - started > verification.timeout:
            names = ", ".join(run.name for run in pending)
            return evidence.failed(GateName.VERIFICATION, f"{names} did not finish within "
                                   f"{_span(verification.timeout)}")
        evidence.waiting(GateName.VERIFICATION, f"running {', '.join(r.name for r in pending)}")
        return Wait(PromotionPhase.VERIFYING, POLL)
    evidence.passed(GateName.VERIFICATION, "exit code 0 from " +
                    ", ".join(run.name for run in runs))
    return None


def _soak(promotion: Promotion, target: Stage, world: World, evidence: _Evidence
          ) -> Step | None:
    upstream = world.upstream
    soak = target.spec.gates.soak_time
    if soak is None or upstream is None:
        return None
    shortest = min(_soaked(entered(upstream, i), world.now) for i in promotion.spec.images)
    if shortest < soak:
        evidence.waiting(GateName.SOAK_TIME, f"{_span(shortest)} of {_span(soak)} in stage "
                         f"{upstream.metadata.name}")
        return Wait(PromotionPhase.WAITING, soak - shortest)
    evidence.passed(GateName.SOAK_TIME, f"at least {_span(soak)} in stage "
                    f"{upstream.metadata.name}")
    return None


def _approval(promotion: Promotion, target: Stage, world: World, evidence: _Evidence
              ) -> Step | None:
    policy = target.spec.gates.approval
    if policy is None:
        return None
    counted, refused = approvers(promotion, policy, world.requested_by)
    message = f"{len(counted)} of {policy.required} approvals"
    if counted:
        message += f" ({', '.join(counted)})"
    if refused:
        message += "; not counted: " + "; ".join(refused)
    if len(counted) < policy.required:
        evidence.waiting(GateName.APPROVAL, message)
        return Wait(PromotionPhase.WAITING, None)
    evidence.passed(GateName.APPROVAL, message)
    return None


def approvers(promotion: Promotion, policy: ApprovalPolicy, requested_by: str | None
              ) -> tuple[list[str], list[str]]:
    """The approvers that count under `policy`, and why each other one does not."""
    allowed, groups = set(policy.approvers or ()), set(policy.groups or ())
    counted: list[str] = []
    refused: list[str] = []
    for approval in promotion.spec.approvals:
        if approval.by == requested_by and not policy.allow_self_approval:
            refused.append(f"{approval.by} requested the promotion")
        elif approval.by in allowed or groups & set(approval.groups):
            counted.append(approval.by)
        else:
            refused.append(f"{approval.by} is neither a named approver nor in an approving "
                           "group")
    return counted, refused


def _freeze(promotion: Promotion, target: Stage, world: World, evidence: _Evidence
            ) -> Step | None:
    if target.spec.frozen:
        evidence.waiting(GateName.FREEZE, f"stage {target.metadata.name} is frozen "
                         "(emergency stop)")
        return Wait(PromotionPhase.WAITING, FROZEN_POLL)
    for window in target.spec.freeze_windows:
        if window.start <= world.now < window.end:
            reason = f": {window.reason}" if window.reason else ""
            evidence.waiting(GateName.FREEZE, f"freeze window until "
                             f"{window.end.isoformat()}{reason}")
            return Wait(PromotionPhase.WAITING, window.end - world.now)
    evidence.passed(GateName.FREEZE, "no freeze")
    return None


def _watch(promotion: Promotion, target: Stage, applied: datetime.datetime, world: World,
           evidence: _Evidence) -> Step:
    """After the digests were applied: the rollback window's verdict. Only containers
    started since the digests were applied count: until its node agent replaces it, a
    Container's status still shows the instance of the digest before. A promotion whose
    digests a later one replaced (or rolled back) is no longer watched: that one is."""
    rollback = target.spec.rollback
    if not rollback.enabled:
        return Done()
    key = f"{promotion.metadata.namespace}/{promotion.metadata.name}"
    current = {(e.image, e.digest, e.promotion) for e in
               (target.status.images if target.status is not None else [])}
    if any((i.image, i.digest, key) not in current for i in promotion.spec.images):
        evidence.passed(GateName.HEALTH, "superseded: a later promotion changed these "
                        "images in the stage")
        return Done()
    for run in world.workload:
        if run.started is None or run.started < applied:
            continue
        if run.restart_count > rollback.max_restarts:
            return _roll_back(evidence, f"container {run.name} restarted {run.restart_count} "
                              f"times (more than {rollback.max_restarts})")
        if run.phase == ContainerPhase.FAILED and not run.restarting:
            return _roll_back(evidence, f"container {run.name} failed with exit code "
                              f"{run.exit_code}")
    ends = applied + rollback.window
    if world.now >= ends:
        evidence.passed(GateName.HEALTH, f"no failure within {_span(rollback.window)}")
        return Done()
    evidence.waiting(GateName.HEALTH, f"watching {len(world.workload)} containers until "
                     f"{ends.isoformat()}")
    return Wait(PromotionPhase.SUCCEEDED, min(POLL, ends - world.now))


def _roll_back(evidence: _Evidence, message: str) -> Rollback:
    evidence.failed(GateName.HEALTH, message)
    return Rollback(message)


def entered(stage: Stage, image: StageImage) -> PromotedImage | None:
    """When `image`'s digest entered `stage`, from its status (current or history); None
    if it never did, or failed there and was rolled back."""
    status = stage.status
    if status is None:
        return None
    for entry in (*status.images, *status.history):
        if entry.image == image.image and entry.digest == image.digest:
            return None if entry.rolled_back else entry
    return None


def _soaked(entry: PromotedImage | None, now: datetime.datetime) -> datetime.timedelta:
    if entry is None:
        return datetime.timedelta(0)
    return (entry.until or now) - entry.since


def _span(delta: datetime.timedelta) -> str:
    """`1h2m3s`, as the API's durations are written, to the whole second."""
    return format_duration(datetime.timedelta(seconds=int(delta.total_seconds())))


class _Evidence:
    """The gates' records; one whose state did not change keeps its time."""

    def __init__(self, promotion: Promotion, now: datetime.datetime) -> None:
        status = promotion.status
        self._before = {g.gate: g for g in status.gates} if status is not None else {}
        self._now = now
        self._records: dict[GateName, GateEvidence] = {}

    def _record(self, gate: GateName, state: GateState, message: str) -> None:
        before = self._before.get(gate)
        at = before.at if before is not None and before.state == state else self._now
        self._records[gate] = GateEvidence(gate=gate, state=state, at=at, message=message)

    def passed(self, gate: GateName, message: str) -> None:
        self._record(gate, GateState.PASSED, message)

    def waiting(self, gate: GateName, message: str) -> None:
        self._record(gate, GateState.WAITING, message)

    def failed(self, gate: GateName, message: str) -> Fail:
        self._record(gate, GateState.FAILED, message)
        return Fail(message)

    def gates(self) -> tuple[GateEvidence, ...]:
        """Earlier records of gates not met this time (a promotion being watched after it
        was applied meets only its health) are kept, in the order they were met."""
        merged = dict(self._before)
        merged.update(self._records)
        return tuple(merged.values())
