"""The `Image` kind: a registry reference resolved once to a digest, cluster-wide.

Every Container that names an Image runs the digest recorded in its status, so a tag that
moves in the registry never changes what runs until the Image's spec changes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictInt, StringConstraints

from dockyard_api.fields import Digest, DnsSubdomain, ImageReference
from dockyard_api.meta import AGE, ApiModel, CelRule, KindInfo, PrinterColumn, Resource, StatusBase


class PullPolicy(StrEnum):
    """When a node fetches the image's layers from the registry."""

    IF_NOT_PRESENT = "IfNotPresent"
    ALWAYS = "Always"
    NEVER = "Never"


class ImageSpec(ApiModel):
    """Where the image comes from: a registry reference, or the result of a Commit."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("has(self.reference) != has(self.fromCommit)",
                "set exactly one of reference (a registry reference) or fromCommit (the name "
                "of a Commit in this namespace)", "reference", "FieldValueRequired"),
        CelRule("!has(self.digest) || has(self.reference)",
                "digest pins a registry reference: set reference too, or remove digest",
                "digest", "FieldValueForbidden"),
        CelRule("!has(self.digest) || !self.reference.contains('@') || "
                "self.reference.endsWith('@' + self.digest)",
                "digest differs from the digest written in reference: keep one of them",
                "digest"),
    )

    reference: ImageReference | None = None
    """The registry reference: `nginx:1.27`, `registry.local:5000/team/app:v2`."""
    digest: Digest | None = None
    """Pin the reference to this digest instead of resolving its tag (promotions set it)."""
    from_commit: DnsSubdomain | None = None
    """Instead of `reference`: the name of the Commit whose result this Image is."""
    pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    """`IfNotPresent` (fetch layers a node lacks), `Always` (check the registry every start)
    or `Never` (only what a node already holds)."""


class ImagePhase(StrEnum):
    """An image's state, in one word."""

    PENDING = "Pending"
    RESOLVED = "Resolved"
    FAILED = "Failed"


class ImageStatus(StatusBase):
    """The digest every node runs, and where the image's layers are."""

    phase: ImagePhase = ImagePhase.PENDING
    """`Pending` (not yet resolved), `Resolved` or `Failed` (see conditions)."""
    digest: Digest | None = None
    """The pinned manifest digest: the bytes every node runs."""
    resolved_reference: Annotated[str, StringConstraints(max_length=640)] | None = None
    """The full reference with its digest: `registry.local:5000/app@sha256:…`."""
    resolved_at: datetime | None = None
    """When the tag was resolved to `digest`."""
    size: Annotated[StrictInt, Field(ge=0)] | None = None
    """Total size of the image's compressed layers, in bytes."""
    nodes: Annotated[list[DnsSubdomain], Field(max_length=4096)] = Field(default_factory=list)
    """The nodes that hold the image's layers."""


class Image(Resource):
    """An image pinned to a digest, shared by every node of the cluster."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="Image", plural="images", short_names=("img",), namespaced=True,
        columns=(
            PrinterColumn("Reference", ".spec.reference", description="Registry reference"),
            PrinterColumn("Commit", ".spec.fromCommit", description="Source commit",
                          priority=1),
            PrinterColumn("Phase", ".status.phase", description="Resolution state"),
            PrinterColumn("Digest", ".status.digest", description="Pinned digest"),
            PrinterColumn("Size", ".status.size", "integer", "Compressed bytes", priority=1),
            AGE,
        ),
    )

    kind: Literal["Image"] = "Image"
    """Always `Image`."""
    spec: ImageSpec
    """Where the image comes from."""
    status: ImageStatus | None = None
    """The pinned digest (written by Dockyard)."""
