"""The `Promotion` kind: move a bundle of verified digests into the next stage.

A Promotion names its target stage; the source is that stage's upstream. Its status records
the evidence of every gate (verification, soak time, approvals) before the digests move.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from dockyard_api.fields import DnsLabel
from dockyard_api.meta import AGE, ApiModel, KindInfo, PrinterColumn, Resource, StatusBase, unique
from dockyard_api.stage import StageImage


class PromotionSpec(ApiModel):
    """Which digests go into which stage."""

    stage: DnsLabel
    """The target Stage; versions come from its upstream."""
    images: Annotated[list[StageImage], Field(min_length=1, max_length=32, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["image"]})]
    """The bundle: Image names and the digests to promote, moved together."""
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    """Why this promotion, for the record."""

    @model_validator(mode="after")
    def _images_unique(self) -> PromotionSpec:
        unique(self.images, "image", what="images")
        return self


class GateName(StrEnum):
    """A gate a promotion must pass."""

    VERIFICATION = "Verification"
    SOAK_TIME = "SoakTime"
    APPROVAL = "Approval"
    FREEZE = "Freeze"


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
