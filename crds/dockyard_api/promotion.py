"""The `Promotion` kind: move a bundle of verified digests into the next stage.

A Promotion names its target stage; the source is that stage's upstream. Its status records
the evidence of every gate (verification, soak time, approvals) before the digests move.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from dockyard_api.fields import DnsLabel, DnsSubdomain
from dockyard_api.meta import AGE, ApiModel, KindInfo, PrinterColumn, Resource, StatusBase, unique
from dockyard_api.stage import StageImage

Principal = Annotated[str, StringConstraints(min_length=1, max_length=253)]

REQUESTED_BY = "dockyard.dev/requested-by"
"""The annotation the admission webhook stamps with the user who created a Promotion."""


class Approval(ApiModel):
    """One person's approval. The admission webhook writes `by` and `groups` from the
    identity the API server authenticated, whatever the request said."""

    by: Principal
    """The user who approved."""
    groups: Annotated[list[Principal], Field(max_length=64)] = Field(default_factory=list)
    """The user's groups when they approved."""
    at: datetime | None = None
    """When."""
    comment: Annotated[str, StringConstraints(max_length=1024)] = ""
    """What the approver checked."""


class PromotionSpec(ApiModel):
    """Which digests go into which stage."""

    stage: DnsLabel
    """The target Stage; versions come from its upstream."""
    images: Annotated[list[StageImage], Field(min_length=1, max_length=32, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["image"]})]
    """The bundle: Image names and the digests to promote, moved together."""
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    """Why this promotion, for the record."""
    approvals: Annotated[list[Approval], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["by"]})] = \
        Field(default_factory=list)
    """Approvals given so far (`dockyard promote approve NAME` adds yours)."""

    @model_validator(mode="after")
    def _images_unique(self) -> PromotionSpec:
        unique(self.images, "image", what="images")
        unique(self.approvals, "by", what="approvals")
        return self


class GateName(StrEnum):
    """A gate a promotion must pass."""

    VERIFICATION = "Verification"
    SOAK_TIME = "SoakTime"
    UPSTREAM = "Upstream"
    APPROVAL = "Approval"
    FREEZE = "Freeze"
    HEALTH = "Health"


class GateState(StrEnum):
    """Where a gate stands."""

    WAITING = "Waiting"
    PASSED = "Passed"
    FAILED = "Failed"


class GateEvidence(ApiModel):
    """The record of one gate: its verdict, when, and why."""

    gate: GateName
    """Which gate."""
    state: GateState
    """`Waiting`, `Passed` or `Failed`."""
    at: datetime
    """When the state was reached."""
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    """The evidence: exit code and container, soak start, approvers…"""


class PromotionPhase(StrEnum):
    """A promotion's progress, in one word."""

    PENDING = "Pending"
    VERIFYING = "Verifying"
    WAITING = "Waiting"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


class PromotionStatus(StatusBase):
    """Gate evidence and the outcome."""

    phase: PromotionPhase = PromotionPhase.PENDING
    """`Pending`, `Verifying`, `Waiting` (soak, approval or freeze), `Promoting`, `Succeeded`,
    `Failed` or `RolledBack`."""
    source_stage: DnsLabel | None = None
    """The upstream stage the digests come from."""
    gates: Annotated[list[GateEvidence], Field(max_length=16, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["gate"]})] = \
        Field(default_factory=list)
    """Evidence for every gate."""
    previous: Annotated[list[StageImage], Field(max_length=32)] = Field(default_factory=list)
    """The digests the stage ran before, restored on rollback."""
    verification_container: DnsSubdomain | None = None
    """The verification Container of the bundle's first image, in the promotion's
    namespace (the Verification gate's evidence names every one)."""
    git_commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40,64}$")] | None = None
    """For a GitOps stage: the commit that wrote the digests (or the rollback's)."""
    applied_at: datetime | None = None
    """When the digests reached the stage; its health is watched from then on."""
    completed_at: datetime | None = None
    """When the promotion succeeded, failed or was rolled back."""


class Promotion(Resource):
    """A request to move verified digests into the next stage."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="Promotion", plural="promotions", short_names=("promo",), namespaced=True,
        columns=(
            PrinterColumn("Stage", ".spec.stage", description="Target stage"),
            PrinterColumn("From", ".status.sourceStage", description="Source stage"),
            PrinterColumn("Phase", ".status.phase", description="Progress"),
            AGE,
        ),
    )

    kind: Literal["Promotion"] = "Promotion"
    """Always `Promotion`."""
    spec: PromotionSpec
    """What to promote, and where."""
    status: PromotionStatus | None = None
    """Gate evidence and outcome (written by Dockyard)."""
