"""The `Stage` kind: one step of the path dev → ci → staging → prod, with its policy.

Stages are cluster-scoped and chained by `upstream`; each owns namespaces, enforces a policy
on the Dockyard objects in them, and names the gates a version passes to enter.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, StrictInt, StringConstraints

from dockyard_api.container import Arg, ArgList, Network, NetworkMode, Resources
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
    allow_unconfined_seccomp: StrictBool = True
    """Whether containers may run without a seccomp filter (`seccompProfile.type:
    Unconfined`); `RuntimeDefault` and `Localhost` profiles are always allowed."""
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
    resources: Resources = Field(default_factory=lambda: Resources.model_validate(
                                     {"cpu": "1", "memory": "256Mi"}),
                                 json_schema_extra={"default": {"cpu": "1", "memory": "256Mi"}})
    """The verification container's limits (kept within the stage's `maxResources`)."""
    network: Network = Field(default_factory=lambda: Network(mode=NetworkMode.BRIDGE))
    """Its network, as a Container's: `{mode: None}` for a test that needs none."""
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


class FreezeWindow(ApiModel):
    """A time during which no promotion enters the stage (a release freeze)."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.end > self.start", "end must be after start", "end"),
    )

    start: datetime
    """When the freeze begins: `2026-12-20T00:00:00Z`."""
    end: datetime
    """When it ends; promotions that waited go on then."""
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    """Why, shown on the promotions that wait."""


class Rollback(ApiModel):
    """When a promoted version counts as failed in the stage, and the previous one returns."""

    enabled: StrictBool = True
    """Restore the previous digests automatically when the new version fails."""
    # The schema default is written out: pydantic would emit the ISO form (PT10M).
    window: Duration = Field(default=timedelta(minutes=10), json_schema_extra={"default": "10m"})
    """How long after a promotion its containers are watched for failure."""
    max_restarts: Annotated[StrictInt, Field(ge=0, le=1000)] = 2
    """A container of the new version restarting more often than this has failed, as has
    one that exits non-zero and is not restarted."""


class DeliveryMode(StrEnum):
    """How a promotion reaches the stage."""

    IN_CLUSTER = "InCluster"
    GIT_OPS = "GitOps"


class GitTarget(ApiModel):
    """Where GitOps write-back commits a stage's digests."""

    repository: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    """The repository the operator clones and pushes to: `https://…`, `ssh://…`, a path."""
    branch: Annotated[str, StringConstraints(
        min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")] = "main"
    """The branch Argo CD or Flux syncs the stage from."""
    path: Annotated[str, StringConstraints(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")]
    """The stage's kustomize overlay in the repository: `deploy/stages/prod`; its
    `kustomization.yaml` `images:` entries get the digests."""
    author_name: Annotated[str, StringConstraints(min_length=1, max_length=256)] = \
        "Dockyard"
    """The commit author's name."""
    author_email: Annotated[str, StringConstraints(min_length=3, max_length=256)] = \
        "dockyard@localhost"
    """The commit author's email."""


class Delivery(ApiModel):
    """How promotions change what runs: the Images in the cluster, or the stage's overlay
    in git, which Argo CD or Flux then sync."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.mode != 'GitOps' || has(self.git)",
                "mode GitOps writes digests to git: set git (repository, path)", "git",
                "FieldValueRequired"),
    )

    mode: DeliveryMode = DeliveryMode.IN_CLUSTER
    """`InCluster` (pin the stage's Image objects and roll its Containers) or `GitOps`
    (commit the digests to `git` and push)."""
    git: GitTarget | None = None
    """The repository, branch and overlay, for `GitOps`."""


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
    freeze_windows: Annotated[list[FreezeWindow], Field(max_length=64)] = \
        Field(default_factory=list)
    """Times during which promotions into the stage wait."""
    rollback: Rollback = Field(default_factory=Rollback)
    """When a new version counts as failed, and whether the previous one returns."""
    delivery: Delivery = Field(default_factory=Delivery)
    """How promotions reach the stage: in the cluster, or through git."""


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


class PromotedImage(StageImage):
    """A digest that entered the stage, when, and through which Promotion."""

    since: datetime
    """When it entered the stage."""
    until: datetime | None = None
    """When a later digest replaced it (history only)."""
    promotion: Annotated[str, StringConstraints(max_length=317)] = ""
    """The Promotion that brought it in: `namespace/name`."""
    rolled_back: StrictBool = False
    """It failed here and the previous digest was restored: it goes no further."""


class StageStatus(StatusBase):
    """What runs in the stage."""

    phase: StagePhase = StagePhase.READY
    """`Ready`, `Frozen` or `Invalid` (for example a cycle of upstreams)."""
    images: Annotated[list[PromotedImage], Field(max_length=1024, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["image"]})] = \
        Field(default_factory=list)
    """The digests currently promoted into this stage, one per Image."""
    history: Annotated[list[PromotedImage], Field(max_length=256)] = \
        Field(default_factory=list)
    """Digests that were in the stage before, newest first: a version verified here may
    still be promoted onward after a newer one replaced it."""


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
