"""The Promotion handlers: walk each promotion through its gates (kopf, thin).

`gates.decide` decides. Each Promotion that has not ended has a kopf daemon: it observes
(the Stages, the verification Containers and the stage's workload, all from kopf indexes,
so a look costs no request), asks `decide`, carries out the step, and looks again after
at most a second (an approval or a Stage change can come at any moment) — until the
promotion failed, was rolled back, or succeeded and outlived its rollback window.

Steps carried out here:
- `Verify`: a Container per image of the bundle, run from the candidate digest with the
  stage's verification command, in the promotion's namespace and owned by it (deleting
  the Promotion deletes them); within the stage's policy (read-only root filesystem when
  required, limits kept within `maxResources`).
- `Apply`: first the digests the stage ran (`status.previous`, phase `Promoting`), then
  `delivery.deliver`, then the stage's ledger, then phase `Succeeded` and `appliedAt`.
  A promotion interrupted anywhere between redoes the same: delivery is idempotent and
  `previous` is already recorded.
- `Rollback`: the previous digests are delivered again, the failed ones marked in the
  ledger so they never go further; phase `RolledBack` with the reason.
Promotions into one stage take turns (a lock per stage), so two never interleave their
ledger writes.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from dockyard_api import Promotion, Stage
from dockyard_api.container import ContainerPhase, RestartPolicy
from dockyard_api.kube import ApiError, KubeClient, condition, object_key, path, time
from dockyard_api.manifests import parse_as
from dockyard_api.meta import API_VERSION, GROUP, VERSION
from dockyard_api.promotion import REQUESTED_BY, PromotionPhase
from dockyard_api.quantity import Quantity, cpu_millis, memory_bytes
from dockyard_api.registries import pinned_reference
from dockyard_api.stage import StageImage
from dockyard_operator import gates
from dockyard_operator.delivery import DeliveryError, deliver
from dockyard_operator.ledger import Ledger

PROMOTION_UID = "dockyard.dev/promotion-uid"
"""The label on a verification Container: the uid of the Promotion it verifies for."""
VERIFIES = "dockyard.dev/verifies"
"""The annotation on a verification Container: the Image it verifies."""
LOOK_EVERY = datetime.timedelta(seconds=1)
RETRY_DELIVERY = 10.0  # seconds before delivering again after a failure (a git remote)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Promotion handlers to `registry`."""

    @kopf.on.startup(id="promotions", registry=registry)
    def remember(memo: kopf.Memo, **_: Any) -> None:
        memo.setdefault("stage_locks", {})

    @kopf.index(GROUP, VERSION, "images", id="references", registry=registry)
    def references(*, namespace: str | None, name: str, body: kopf.Body, **_: Any
                   ) -> dict[str, str]:
        reference = (body.get("spec") or {}).get("reference")
        return {f"{namespace}/{name}": str(reference)} if reference else {}

    @kopf.index(GROUP, VERSION, "containers", id="verifications", registry=registry,
                labels={PROMOTION_UID: kopf.PRESENT})
    def verifications(*, body: kopf.Body, **_: Any) -> dict[str, tuple[str, gates.Run]]:
        meta = body["metadata"]
        return {meta["labels"][PROMOTION_UID]:
                (meta.get("annotations", {}).get(VERIFIES, ""), run_of(body))}

    @kopf.index(GROUP, VERSION, "containers", id="workload", registry=registry,
                labels={PROMOTION_UID: kopf.ABSENT})
    def workload(*, namespace: str | None, body: kopf.Body, **_: Any
                 ) -> dict[tuple[str, str], gates.Run]:
        image = (body.get("spec") or {}).get("imageRef")
        return {(str(namespace), str(image)): run_of(body)} if image else {}

    @kopf.daemon(GROUP, VERSION, "promotions", id="promote", registry=registry,
                 when=lambda body, **_: not _ended(body))
    async def promote(*, stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo,
                      logger: kopf.Logger, **kwargs: Any) -> None:
        kube: KubeClient = memo["kube"]
        context = _Context(kube, memo, kwargs)
        while not stopped:
            promotion = parse_as(Promotion, dict(body), served=True)
            world = observe(promotion, kwargs)
            decision = gates.decide(promotion, world)
            try:
                await _act(context, promotion, world, decision)
            except DeliveryError as e:
                kopf.warn(body, reason="DeliveryFailed", message=str(e))
                ended = {"phase": PromotionPhase.FAILED, "completedAt": time()} \
                    if not e.temporary else {}
                await _status(kube, promotion, {**ended, "conditions": _conditions(
                    promotion, "Promoted", "False", "DeliveryFailed", str(e))})
                if ended:
                    return
                await stopped.wait(RETRY_DELIVERY)
                continue
            if isinstance(decision.step, gates.Done | gates.Fail | gates.Rollback):
                logger.info(f"promotion {object_key(body)} ended: "
                            f"{type(decision.step).__name__}")
                return
            retry = decision.step.retry if isinstance(decision.step, gates.Wait) else None
            await stopped.wait(min(retry or LOOK_EVERY, LOOK_EVERY).total_seconds())


def _ended(body: Mapping[str, Any]) -> bool:
    status = body.get("status") or {}
    phase = status.get("phase")
    return phase in gates.TERMINAL or (phase == PromotionPhase.SUCCEEDED and
                                       bool(status.get("completedAt")))


def run_of(body: Mapping[str, Any]) -> gates.Run:
    """A Container as the gates see it (read raw: this runs on every Container event)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    exit_code = status.get("exitCode")
    policy = spec.get("restartPolicy", RestartPolicy.NEVER)
    created = body["metadata"].get("creationTimestamp")
    started = status.get("startedAt")
    return gates.Run(
        name=body["metadata"]["name"], phase=ContainerPhase(status.get("phase", "Pending")),
        exit_code=exit_code, restart_count=int(status.get("restartCount") or 0),
        restarting=policy == RestartPolicy.ALWAYS or
        (policy == RestartPolicy.ON_FAILURE and exit_code not in (None, 0)),
        created=datetime.datetime.fromisoformat(created) if created else None,
        digest=status.get("imageDigest"),
        started=datetime.datetime.fromisoformat(started) if started else None)


def observe(promotion: Promotion, indexes: Mapping[str, Any]) -> gates.World:
    """The world of `promotion` from the operator's indexes."""
    stages = {str(s.metadata.name): s for store in indexes["stages"].values() for s in store}
    target = stages.get(promotion.spec.stage)
    upstream = stages.get(target.spec.upstream or "") if target is not None else None
    uid = str(promotion.metadata.uid)
    runs = dict(indexes["verifications"].get(uid, []))
    workload: list[gates.Run] = []
    if target is not None:
        for image in promotion.spec.images:
            for namespace in target.spec.namespaces:
                workload += [run for run in indexes["workload"].get((namespace, image.image), [])
                             if run.digest == image.digest]
    return gates.World(
        now=datetime.datetime.now(datetime.UTC), target=target, upstream=upstream,
        requested_by=promotion.metadata.annotations.get(REQUESTED_BY),
        verifications=runs, workload=workload)


@dataclass(frozen=True)
class _Context:
    """What every step may use: the API, the operator's memo, kopf's indexes."""

    kube: KubeClient
    memo: kopf.Memo
    indexes: Mapping[str, Any]


async def _act(context: _Context, promotion: Promotion, world: gates.World,
               decision: gates.Decision) -> None:
    step, target, kube = decision.step, world.target, context.kube
    evidence = _evidence(decision)
    body = _body(promotion)
    if isinstance(step, gates.Wait):
        await _status(kube, promotion, {"phase": step.phase, "gates": evidence,
                                        "sourceStage": _source(world)})
    elif isinstance(step, gates.Verify) and target is not None:
        for image in step.images:
            await _verify(kube, promotion, target, image, _reference(
                image.image, promotion, world, context.indexes["references"]))
        meta = promotion.metadata
        first = verification_name(str(meta.name), str(meta.uid), promotion.spec.images[0].image)
        await _status(kube, promotion, {"phase": PromotionPhase.VERIFYING, "gates": evidence,
                                        "sourceStage": _source(world),
                                        "verificationContainer": first})
    elif isinstance(step, gates.Fail):
        kopf.warn(body, reason="PromotionFailed", message=step.message)
        await _status(kube, promotion, {
            "phase": PromotionPhase.FAILED, "gates": evidence, "completedAt": time(),
            "conditions": _conditions(promotion, "Promoted", "False", "GateFailed",
                                      step.message)})
    elif isinstance(step, gates.Apply) and target is not None:
        await _apply(context, promotion, world, target, decision)
    elif isinstance(step, gates.Rollback) and target is not None:
        await _roll_back(context, promotion, world, target, decision)
    elif isinstance(step, gates.Done):
        await _status(kube, promotion, {"gates": evidence, "completedAt": time()})


def _evidence(decision: gates.Decision) -> list[dict[str, Any]]:
    return [g.model_dump(mode="json", by_alias=True) for g in decision.gates]


async def _apply(context: _Context, promotion: Promotion, world: gates.World, target: Stage,
                 decision: gates.Decision) -> None:
    images, kube = promotion.spec.images, context.kube
    key = object_key(_body(promotion))
    async with _lock(context.memo, target):
        stage = await _fresh(kube, target)
        ledger = Ledger.of(stage.status)
        status = promotion.status
        previous = status.previous if status is not None and \
            status.phase == PromotionPhase.PROMOTING else \
            ledger.current([i.image for i in images])
        await _status(kube, promotion, {
            "phase": PromotionPhase.PROMOTING, "gates": _evidence(decision),
            "sourceStage": _source(world),
            "previous": [p.model_dump(mode="json", by_alias=True) for p in previous]})
        commit = await deliver(kube, stage, images, namespace=_namespace(promotion),
                               references=_references(promotion, world, context.indexes),
                               promotion=key)
        now = datetime.datetime.now(datetime.UTC)
        await _write_ledger(kube, stage, ledger.enter(images, key, now))
    message = "moved " + ", ".join(f"{i.image}@{i.digest}" for i in images) + \
        f" into stage {target.metadata.name}" + (f" (commit {commit[:12]})" if commit else "")
    kopf.info(_body(promotion), reason="Promoted", message=message)
    await _status(kube, promotion, {
        "phase": PromotionPhase.SUCCEEDED, "appliedAt": time(now), "gitCommit": commit,
        "conditions": _conditions(promotion, "Promoted", "True", "Promoted", message)})


async def _roll_back(context: _Context, promotion: Promotion, world: gates.World,
                     target: Stage, decision: gates.Decision) -> None:
    kube, status = context.kube, promotion.status
    previous = list(status.previous) if status is not None else []
    key = object_key(_body(promotion))
    async with _lock(context.memo, target):
        stage = await _fresh(kube, target)
        commit = await deliver(kube, stage, previous, namespace=_namespace(promotion),
                               references=_references(promotion, world, context.indexes),
                               promotion=key, rollback=True) if previous else None
        now = datetime.datetime.now(datetime.UTC)
        await _write_ledger(kube, stage, Ledger.of(stage.status).roll_back(
            promotion.spec.images, previous, key, now))
    restored = ", ".join(f"{p.image}@{p.digest}" for p in previous) or "nothing (no " \
        "earlier digest in the stage)"
    why = decision.step.message if isinstance(decision.step, gates.Rollback) else "failed"
    message = f"{why}; restored {restored}"
    kopf.warn(_body(promotion), reason="RolledBack", message=message)
    await _status(kube, promotion, {
        "phase": PromotionPhase.ROLLED_BACK, "gates": _evidence(decision),
        "completedAt": time(now),
        **({"gitCommit": commit} if commit else {}),
        "conditions": _conditions(promotion, "Promoted", "False", "RolledBack", message)})


async def _verify(kube: KubeClient, promotion: Promotion, target: Stage, image: StageImage,
                  reference: str) -> None:
    """Create the verification Container of `image` (once: a second create is a 409)."""
    body = verification_container(promotion, target, image, reference)
    if body is None:
        return
    try:
        await kube.create(path(GROUP, VERSION, "containers",
                               namespace=promotion.metadata.namespace), body)
    except ApiError as e:
        if e.status != 409:
            raise DeliveryError(f"cannot create the verification container: {e}") from e


def verification_container(promotion: Promotion, target: Stage, image: StageImage,
                           reference: str) -> dict[str, Any] | None:
    """The verification Container of `image`, or None when the stage verifies nothing.
    It runs within the target stage's policy (read-only root, no new privileges, limits
    lowered to the maximum), so the stage's own admission lets it in."""
    verification = target.spec.gates.verification
    if verification is None:
        return None
    meta = promotion.metadata
    policy = target.spec.policy
    resources = _within(verification.resources.model_dump(mode="json", exclude_none=True),
                        target)
    return {
        "apiVersion": API_VERSION, "kind": "Container",
        "metadata": {
            "name": verification_name(str(meta.name), str(meta.uid), image.image),
            "namespace": meta.namespace, "labels": {PROMOTION_UID: str(meta.uid)},
            "annotations": {VERIFIES: image.image},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "Promotion",
                                 "name": meta.name, "uid": meta.uid, "controller": True,
                                 "blockOwnerDeletion": True}]},
        "spec": {"image": pinned_reference(reference, image.digest),
                 "command": list(verification.command),
                 "args": list(verification.args or []), "resources": resources,
                 "readOnlyRootfs": policy.require_read_only_rootfs,
                 "noNewPrivileges": policy.require_no_new_privileges,
                 "network": verification.network.model_dump(mode="json", by_alias=True),
                 "restartPolicy": RestartPolicy.NEVER}}


def verification_name(promotion: str, uid: str, image: str) -> str:
    """A Container name (a DNS label) for one image's verification: readable, unique per
    promotion and image."""
    base = re.sub(r"[^a-z0-9-]", "-", promotion)[:40].strip("-")
    return f"{base}-verify-{hashlib.sha256(f'{uid}/{image}'.encode()).hexdigest()[:8]}"


def _within(resources: dict[str, Any], target: Stage) -> dict[str, Any]:
    """The verification's limits, lowered to the stage's maximum where they exceed it."""
    top = target.spec.policy.max_resources
    if top is None:
        return resources
    for name, size, limit in (("cpu", cpu_millis, top.cpu),
                              ("memory", memory_bytes, top.memory)):
        asked = resources.get(name)
        if limit is not None and (asked is None or
                                  size(Quantity.parse(asked)) > size(limit)):
            resources[name] = str(limit)
    if top.pids is not None:
        resources["pids"] = min(resources.get("pids") or top.pids, top.pids)
    return resources


def _reference(image: str, promotion: Promotion, world: gates.World,
               references: kopf.Index[str, str]) -> str:
    """The registry reference of Image `image`: the one in the promotion's namespace,
    else in the target stage's, else in the upstream stage's."""
    namespaces = [str(promotion.metadata.namespace)]
    for stage in (world.target, world.upstream):
        if stage is not None:
            namespaces += stage.spec.namespaces
    for namespace in namespaces:
        for reference in references.get(f"{namespace}/{image}", []):
            return reference
    raise DeliveryError(f"no Image {image} with a reference in namespaces "
                        f"{', '.join(dict.fromkeys(namespaces))}")


def _references(promotion: Promotion, world: gates.World, indexes: Mapping[str, Any]
                ) -> dict[str, str]:
    return {i.image: _reference(i.image, promotion, world, indexes["references"])
            for i in promotion.spec.images}


def _source(world: gates.World) -> str | None:
    return str(world.upstream.metadata.name) if world.upstream is not None else None


def _namespace(promotion: Promotion) -> str:
    return str(promotion.metadata.namespace)


def _lock(memo: kopf.Memo, stage: Stage) -> asyncio.Lock:
    locks: dict[str, asyncio.Lock] = memo["stage_locks"]
    return locks.setdefault(str(stage.metadata.name), asyncio.Lock())


async def _fresh(kube: KubeClient, stage: Stage) -> Stage:
    """The stage as stored now: the index may lag behind the last promotion's write."""
    body = await kube.get(path(GROUP, VERSION, "stages", name=str(stage.metadata.name)))
    return parse_as(Stage, body, served=True)


async def _write_ledger(kube: KubeClient, stage: Stage, ledger: Ledger) -> None:
    await kube.patch(path(GROUP, VERSION, "stages", name=str(stage.metadata.name),
                          subresource="status"), {"status": ledger.status()})


def _body(promotion: Promotion) -> kopf.Body:
    meta = promotion.metadata
    return kopf.Body(cast(kopf.RawBody, {
        "apiVersion": API_VERSION, "kind": "Promotion",
        "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid}}))


def _conditions(promotion: Promotion, kind: str, status: str, reason: str, message: str
                ) -> list[dict[str, Any]]:
    """The promotion's conditions with `kind` set (its time kept if its status stays)."""
    current = list(promotion.status.conditions) if promotion.status is not None else []
    kept = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in current
            if c.type != kind]
    before = next((c for c in current if c.type == kind), None)
    new = condition(kind, status, reason, message[:32768])
    if before is not None and before.status == status:
        new["lastTransitionTime"] = time(before.last_transition_time)
    return [*kept, new]


async def _status(kube: KubeClient, promotion: Promotion, fields: Mapping[str, Any]) -> None:
    """Write `fields` into the promotion's status, if any differs from what it shows."""
    current = promotion.status.model_dump(mode="json", by_alias=True) \
        if promotion.status is not None else {}
    changed = {k: v for k, v in fields.items() if current.get(k) != v}
    if not changed:
        return
    meta = promotion.metadata
    await kube.patch(path(GROUP, VERSION, "promotions", namespace=meta.namespace,
                          name=meta.name, subresource="status"),
                     {"status": {**changed, "observedGeneration": meta.generation}})
