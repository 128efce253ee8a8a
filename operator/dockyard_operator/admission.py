"""The admission webhooks (kopf, thin): stage policy, and who requested and approved a
Promotion.

- `/policy` (validating: Containers, Images, Volumes; create and update): an object in a
  stage's namespace that breaks the stage's policy is refused, naming each field and the
  stage. An update that leaves the spec as it was (labels, kopf's annotations, a finalizer)
  is always allowed, and on an update only violations the old object did not have count:
  an object admitted before its policy tightened can still be labelled or deleted, and
  its other fields fixed one at a time (the audit marks it, `stages`).
- `/approvals` (mutating: Promotions): the API server knows who sends a request; the
  webhook writes it down. On create, the annotation `dockyard.dev/requested-by` gets the
  requesting user; on update it keeps its value. Each approval added gets `by` and
  `groups` of the user who added it and `at`, whatever the request said, so nobody can
  approve in another's name; a second approval by the same user is dropped.
- `/promotions` (validating: Promotions): the target stage exists and owns the
  namespace; approvals come after creation; the bundle and the target never change, and
  approvals are never taken back or edited.

The chart's webhook configurations name these paths: kopf serves each handler at its id.
Every replica serves them (see `_stages` for why the Stages are read for each request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from dockyard_api import Promotion, Stage
from dockyard_api.kube import KubeClient, path, time
from dockyard_api.manifests import parse_as
from dockyard_api.meta import GROUP, VERSION
from dockyard_api.policy import Violation, stage_of, unenforced, violations
from dockyard_api.promotion import REQUESTED_BY
from dockyard_operator.stages import GOVERNED

FORBIDDEN = 403
"""The code of a refusal, as Kubernetes' own Pod Security admission answers."""


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the admission handlers to `registry`."""

    @kopf.on.validate(lambda r: r.group == GROUP and r.plural in GOVERNED, id="policy",
                      operations=["CREATE", "UPDATE"], registry=registry)
    async def policy(*, body: kopf.Body, resource: kopf.Resource, warnings: list[str],
                     memo: kopf.Memo, **kwargs: Any) -> None:
        old: kopf.Body | None = kwargs.get("old")
        stage = stage_of(body.metadata.namespace, await _stages(memo))
        if stage is None:
            return
        if old is not None and old.get("spec") == body.get("spec"):
            return
        kind = GOVERNED[resource.plural]
        found = violations(parse_as(kind, dict(body), served=True), stage.spec.policy)
        if old is not None:
            before = set(violations(parse_as(kind, dict(old), served=True),
                                    stage.spec.policy))
            found = [v for v in found if v not in before]
        if found:
            raise kopf.AdmissionError(refusal(stage, found), code=FORBIDDEN)
        warnings.extend(f"stage {stage.metadata.name}: {rule} is not enforced yet"
                        for rule in unenforced(stage.spec.policy))

    @kopf.on.mutate(GROUP, VERSION, "promotions", id="approvals",
                    operations=["CREATE", "UPDATE"], registry=registry)
    def approvals(*, body: kopf.Body, patch: kopf.Patch, userinfo: kopf.UserInfo,
                  **kwargs: Any) -> None:
        old: kopf.Body | None = kwargs.get("old")
        user = str(userinfo.get("username") or "")
        groups = [str(g) for g in userinfo.get("groups") or []]
        annotations = body.metadata.annotations
        requested_by = user if old is None else old.metadata.annotations.get(REQUESTED_BY)
        if annotations.get(REQUESTED_BY) != requested_by:
            patch.metadata.annotations[REQUESTED_BY] = requested_by
        if old is None:
            return
        stamped = stamp(list((old.get("spec") or {}).get("approvals") or []),
                        list(body.spec.get("approvals") or []), user, groups)
        if stamped != list(body.spec.get("approvals") or []):
            patch.spec["approvals"] = stamped

    @kopf.on.validate(GROUP, VERSION, "promotions", id="promotions",
                      operations=["CREATE", "UPDATE"], registry=registry)
    async def promotions(*, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
        old: kopf.Body | None = kwargs.get("old")
        promotion = parse_as(Promotion, dict(body), served=True)
        problems = judge(promotion, None if old is None else
                         parse_as(Promotion, dict(old), served=True),
                         {str(s.metadata.name): s for s in await _stages(memo)})
        if problems:
            raise kopf.AdmissionError("; ".join(map(str, problems)), code=FORBIDDEN)


def refusal(stage: Stage, found: Iterable[Violation]) -> str:
    """The message of a refusal: the stage, then each field and its fix."""
    return f"stage {stage.metadata.name} forbids this: " + "; ".join(map(str, found))


def stamp(old: list[dict[str, Any]], new: list[dict[str, Any]], user: str,
          groups: list[str]) -> list[dict[str, Any]]:
    """The approvals after `user` updated the list from `old` to `new`: the old ones as
    they were (the validating webhook refuses a change to them), each added one in the
    user's name, at most one per user."""
    kept = {str(a.get("by")): a for a in old}
    result = list(old)
    for approval in new:
        if approval in old or user in kept:
            continue
        mine = {**approval, "by": user, "groups": groups, "at": time()}
        kept[user] = mine
        result.append(mine)
    return result


def judge(promotion: Promotion, old: Promotion | None, stages: Mapping[str, Stage]
          ) -> list[Violation]:
    """What makes a Promotion's create (`old` None) or update unacceptable."""
    spec = promotion.spec
    if old is not None:
        return _changes(promotion, old)
    found: list[Violation] = []
    stage = stages.get(spec.stage)
    if stage is None:
        found.append(Violation("spec.stage", f"no Stage {spec.stage}: "
                               f"known stages are {', '.join(sorted(stages)) or 'none'}"))
    elif promotion.metadata.namespace not in stage.spec.namespaces:
        found.append(Violation("metadata.namespace", f"stage {spec.stage} owns "
                               f"{', '.join(stage.spec.namespaces) or 'no namespace'}: "
                               "create the Promotion in one of them"))
    if spec.approvals:
        found.append(Violation("spec.approvals", "approve after the promotion exists "
                               "(dockyard promote approve NAME): approvals record who "
                               "gave them"))
    return found


def _changes(promotion: Promotion, old: Promotion) -> list[Violation]:
    found: list[Violation] = []
    spec, before = promotion.spec, old.spec
    if spec.stage != before.stage:
        found.append(Violation("spec.stage", "a promotion's target cannot change: create "
                               "another Promotion"))
    if spec.images != before.images:
        found.append(Violation("spec.images", "a promotion's bundle cannot change: create "
                               "another Promotion"))
    if any(a not in spec.approvals for a in before.approvals):
        found.append(Violation("spec.approvals", "approvals cannot be taken back or edited "
                               "(delete the Promotion to abandon it)"))
    if promotion.metadata.annotations.get(REQUESTED_BY) != \
            old.metadata.annotations.get(REQUESTED_BY):
        found.append(Violation(f"metadata.annotations[{REQUESTED_BY}]",
                               "set by Dockyard when the promotion is created"))
    return found


async def _stages(memo: kopf.Memo) -> list[Stage]:
    """The Stages as stored now. Read, not taken from the operator's index: every replica
    serves webhooks, and one that kopf's peering keeps on standby watches nothing, so its
    index would be empty and would let everything in. An API server that cannot answer
    fails the request (the webhook's failurePolicy decides)."""
    kube: KubeClient = memo["kube"]
    return [parse_as(Stage, body, served=True)
            for body in await kube.list(path(GROUP, VERSION, "stages"))]

