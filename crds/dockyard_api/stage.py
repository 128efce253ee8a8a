"""The `Stage` kind: one step of the path dev → ci → staging → prod, with its policy.

Stages are cluster-scoped and chained by `upstream`; each owns namespaces, enforces a policy
on the Dockyard objects in them, and names the gates a version passes to enter.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, StrictInt, StringConstraints

from dockyard_api.container import Arg, ArgList, Resources
from dockyard_api.duration import Duration
from dockyard_api.fields import Capability, Digest, DnsLabel, DnsSubdomain
from dockyard_api.meta import AGE, ApiModel, CelRule, KindInfo, PrinterColumn, Resource, StatusBase

Principal = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class StagePolicy(ApiModel):
    """Rules for the Dockyard objects in the stage's namespaces (checked at admission)."""

    require_pinned_digests: StrictBool = False
    """Containers must run a digest: `image` written with `@sha256:…`, or `imageRef`."""
    allow_host_path: StrictBool = True
    """Whether `hostPath` volumes may be used."""
    require_resource_limits: StrictBool = False
    """Containers must set cpu and memory limits."""
    require_read_only_rootfs: StrictBool = False
    """Containers must set `readOnlyRootfs: true`."""
    require_no_new_privileges: StrictBool = False
    """Processes may not gain privileges through setuid binaries."""
    allowed_capabilities: Annotated[list[Capability], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "set"})] | None = None
    """The capabilities containers may add; omitted means any, empty means none."""
    max_resources: Resources | None = None
    """The largest limits one container may ask for."""


class Verification(ApiModel):
    """A container run from the candidate digest that must exit 0 for the version to pass."""

    command: Annotated[list[Arg], Field(min_length=1, max_length=1024)]
    """The command to run in the candidate image: `["/app/smoke-test"]`."""
    args: ArgList | None = None
    """Arguments for the command."""
    # The schema default is written out: pydantic would emit the ISO form (PT10M).
    timeout: Duration = Field(default=timedelta(minutes=10), json_schema_extra={"default": "10m"})
    """How long the verification may run before it counts as failed."""


class ApprovalPolicy(ApiModel):
    """Who must approve a promotion into this stage."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("(has(self.approvers) && self.approvers.size() > 0) || "
                "(has(self.groups) && self.groups.size() > 0)",
                "name at least one approver or group", "approvers", "FieldValueRequired"),
    )

    approvers: Annotated[list[Principal], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "set"})] | None = None
    """Users who may approve."""
    groups: Annotated[list[Principal], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "set"})] | None = None
    """Groups whose members may approve."""
    required: Annotated[StrictInt, Field(ge=1, le=64)] = 1
    """How many distinct approvals are needed (N of M)."""
    allow_self_approval: StrictBool = False
    """Whether the author of a promotion may approve it."""


class StageGates(ApiModel):
    """What a version must pass to enter the stage."""

    verification: Verification | None = None
    """A test run from the candidate digest."""
    soak_time: Duration | None = None
    """The least time the version must have run in the upstream stage: `1h`."""
    approval: ApprovalPolicy | None = None
    """Approvals needed before the version enters."""


class StageSpec(ApiModel):
    """The stage's place in the pipeline, its namespaces, policy and gates."""

    upstream: DnsLabel | None = None
    """The stage versions come from; omitted for the first stage (dev)."""
    namespaces: Annotated[list[DnsLabel], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "set"})] = Field(default_factory=list)
    """The namespaces this stage owns; its policy applies to the Dockyard objects in them."""
    policy: StagePolicy = Field(default_factory=StagePolicy)
    """The rules objects in the stage must follow."""
    gates: StageGates = Field(default_factory=StageGates)
    """What a version must pass to enter."""
    frozen: StrictBool = False
    """Emergency stop: no promotion enters while set."""


class StagePhase(StrEnum):
    """A stage's state, in one word."""

    READY = "Ready"
    FROZEN = "Frozen"
    INVALID = "Invalid"


class StageImage(ApiModel):
    """One image digest that runs in a stage."""

    image: DnsSubdomain
    """The Image object's name."""
    digest: Digest
    """The digest it is pinned to in this stage."""


class StageStatus(StatusBase):
    """What runs in the stage."""

    phase: StagePhase = StagePhase.READY
    """`Ready`, `Frozen` or `Invalid` (for example a cycle of upstreams)."""
    images: Annotated[list[StageImage], Field(max_length=1024)] = Field(default_factory=list)
    """The digests currently promoted into this stage."""


class Stage(Resource):
    """A step of the delivery path, its policy and its gates."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="Stage", plural="stages", short_names=("stg",), namespaced=False,
        name_format="label",
        columns=(
            PrinterColumn("Upstream", ".spec.upstream", description="Previous stage"),
            PrinterColumn("Phase", ".status.phase", description="Stage state"),
            PrinterColumn("Frozen", ".spec.frozen", "boolean", "Emergency stop"),
            AGE,
        ),
    )

    kind: Literal["Stage"] = "Stage"
    """Always `Stage`."""
    spec: StageSpec
    """Place, policy and gates."""
    status: StageStatus | None = None
    """What runs in the stage (written by Dockyard)."""
