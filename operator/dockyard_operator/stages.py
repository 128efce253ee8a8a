"""The Stage handlers: the pipeline's shape, and objects admitted before a policy tightened
(kopf, thin).

- An index keeps every Stage, parsed; the admission webhook and the promotions read it.
- A Stage's `status.phase` says whether the pipeline around it holds: `Invalid` when its
  upstream does not exist, the upstreams form a cycle, or another stage claims one of its
  namespaces; `Frozen` under an emergency stop; else `Ready`. A condition `Ready` says why.
- The audit: when a Stage's policy or namespaces change, and every `AUDIT_EVERY` seconds,
  each Container, Image and Volume in its namespaces is checked against the policy. One
  that breaks it is not touched (it was admitted under the old policy, and killing it
  would be an outage): it gets a condition `PolicyViolation` (True, with the fields) and
  an Event `PolicyViolation`; once it complies, the condition turns False.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from dockyard_api import Container, Image, Stage, Volume
from dockyard_api.kube import ApiError, KubeClient, condition, path
from dockyard_api.manifests import parse_as
from dockyard_api.meta import GROUP, VERSION
from dockyard_api.policy import Governed, violations
from dockyard_api.stage import StagePhase

AUDIT_EVERY = 300.0
"""Seconds between two audits of a stage's objects (a webhook that was down, or failed
open, lets a breaking object in)."""
GOVERNED: Mapping[str, type[Governed]] = {"containers": Container, "images": Image,
                                          "volumes": Volume}
VIOLATION = "PolicyViolation"


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Stage handlers to `registry`."""

    @kopf.index(GROUP, VERSION, "stages", id="stages", registry=registry)
    def stages(*, name: str, body: kopf.Body, **_: Any) -> dict[str, Stage]:
        return {name: parse_as(Stage, dict(body), served=True)}

    @kopf.on.resume(GROUP, VERSION, "stages", id="shape", registry=registry)
    @kopf.on.create(GROUP, VERSION, "stages", id="shape", registry=registry)
    @kopf.on.update(GROUP, VERSION, "stages", id="shape", field="spec", registry=registry)
    @kopf.timer(GROUP, VERSION, "stages", id="audit", interval=AUDIT_EVERY,
                registry=registry)
    async def shape(*, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                    logger: kopf.Logger, **kwargs: Any) -> None:
        stage = parse_as(Stage, dict(body), served=True)
        known = [s for store in kwargs["stages"].values() for s in store]
        phase, reason, message = judge(stage, known)
        status = body.get("status") or {}
        if status.get("phase") != phase or _ready_reason(status) != reason:
            patch.status["phase"] = phase
            patch.status["observedGeneration"] = stage.metadata.generation
            patch.status["conditions"] = [condition(
                "Ready", "True" if phase != StagePhase.INVALID else "False", reason, message)]
        broken = await audit(memo["kube"], stage)
        if broken:
            logger.info(f"{broken} objects break the policy of stage {stage.metadata.name}")


def judge(stage: Stage, stages: Iterable[Stage]) -> tuple[StagePhase, str, str]:
    """The stage's phase among `stages`, the reason and a message."""
    by_name = {str(s.metadata.name): s for s in stages}
    name = str(stage.metadata.name)
    by_name[name] = stage
    upstream = stage.spec.upstream
    if upstream is not None and upstream not in by_name:
        return StagePhase.INVALID, "UpstreamNotFound", f"no Stage {upstream}"
    seen = [name]
    while upstream is not None and upstream in by_name:
        if upstream in seen:
            return (StagePhase.INVALID, "UpstreamCycle",
                    f"the upstreams form a cycle: {' → '.join([*seen, upstream])}")
        seen.append(upstream)
        upstream = by_name[upstream].spec.upstream
    for other in by_name.values():
        shared = set(other.spec.namespaces) & set(stage.spec.namespaces)
        if other.metadata.name != name and shared:
            return (StagePhase.INVALID, "NamespaceClaimed", f"namespaces {sorted(shared)} "
                    f"belong to stage {other.metadata.name} too")
    if stage.spec.frozen:
        return StagePhase.FROZEN, "Frozen", "emergency stop: no promotion enters"
    return StagePhase.READY, "Ready", " → ".join(reversed(seen))


def _ready_reason(status: Mapping[str, Any]) -> str | None:
    for found in status.get("conditions") or []:
        if found.get("type") == "Ready":
            return str(found.get("reason"))
    return None


async def audit(kube: KubeClient, stage: Stage) -> int:
    """Mark every object in the stage's namespaces with its `PolicyViolation` condition;
    how many break the policy."""
    broken = 0
    for namespace in stage.spec.namespaces:
        for plural, kind in GOVERNED.items():
            for body in await kube.list(path(GROUP, VERSION, plural, namespace=namespace)):
                found = violations(parse_as(kind, body, served=True), stage.spec.policy)
                broken += bool(found)
                await _mark(kube, plural, body, str(stage.metadata.name),
                            "; ".join(map(str, found)))
    return broken


async def _mark(kube: KubeClient, plural: str, body: Mapping[str, Any], stage: str,
                found: str) -> None:
    """Write the object's `PolicyViolation` condition if it changed, keeping the others
    (the node agent writes `Ready`): a patch that names the resourceVersion it read, so a
    write in between makes it fail (409) rather than lose that write; the next audit
    tries again."""
    meta = body["metadata"]
    conditions = list((body.get("status") or {}).get("conditions") or [])
    current = next((c for c in conditions if c.get("type") == VIOLATION), None)
    status = "True" if found else "False"
    if current is None and not found:
        return  # never violated: no condition to write
    if current is not None and current.get("status") == status and \
            (not found or current.get("message") == found[:32768]):
        return
    reason = "BreaksStagePolicy" if found else "CompliesWithStagePolicy"
    message = f"stage {stage}: {found}" if found else f"complies with stage {stage}"
    wanted = condition(VIOLATION, status, reason, message[:32768])
    conditions = [c for c in conditions if c.get("type") != VIOLATION] + [wanted]
    url = path(GROUP, VERSION, plural, namespace=meta.get("namespace"), name=meta["name"],
               subresource="status")
    try:
        await kube.patch(url, {"metadata": {"resourceVersion": meta["resourceVersion"]},
                               "status": {"conditions": conditions}})
    except ApiError as e:
        if e.status not in (404, 409):
            raise
        return
    if found:
        kopf.warn(kopf.Body(cast(kopf.RawBody, dict(body))), reason=VIOLATION, message=message)

