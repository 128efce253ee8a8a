"""The `Commit` kind: turn a container's changes into a new Image (docker commit).

The node that holds the container computes the changes from its upper layer (docker diff),
packs them as a layer on top of the container's image, and records the counts and the new
digest here; the resulting Image is named by `spec.image`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, StrictInt, StringConstraints

from dockyard_api.fields import Digest, DnsLabel, DnsSubdomain, ImageReference
from dockyard_api.meta import AGE, ApiModel, CelRule, KindInfo, PrinterColumn, Resource, StatusBase


class CommitSpec(ApiModel):
    """Which container to snapshot and what to call the result."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("!has(self.reference) || !self.reference.contains('@')",
                "reference is where the new image is pushed: give a tag, not a digest "
                "(the digest is known only after the commit)", "reference"),
    )

    container: DnsLabel
    """The Container (same namespace) whose filesystem changes are committed."""
    image: DnsSubdomain
    """The name of the Image object to create for the result."""
    reference: ImageReference | None = None
    """Also push the result to this registry reference: `registry.local:5000/app:debug-1`."""
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    """A commit message, stored in the image's history (docker commit -m)."""
    author: Annotated[str, StringConstraints(max_length=256)] = ""
    """The author, stored in the image config (docker commit -a)."""
    pause: StrictBool = True
    """Freeze the container while its filesystem is read, as Docker does, so the snapshot is
    consistent."""


class CommitPhase(StrEnum):
    """A commit's progress, in one word."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


Count = Annotated[StrictInt, Field(ge=0)]


class CommitStatus(StatusBase):
    """The outcome: what changed (docker diff) and the new image's digest."""

    phase: CommitPhase = CommitPhase.PENDING
    """`Pending`, `Running`, `Succeeded` or `Failed` (see conditions)."""
    node: DnsSubdomain | None = None
    """The node that executed the commit."""
    added: Count | None = None
    """Paths added (`A` lines of docker diff)."""
    changed: Count | None = None
    """Paths changed (`C` lines of docker diff)."""
    deleted: Count | None = None
    """Paths deleted (`D` lines of docker diff)."""
    digest: Digest | None = None
    """The new image's manifest digest."""
    completed_at: datetime | None = None
    """When the commit finished."""


class Commit(Resource):
    """A snapshot of a container's changes as a new image."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="Commit", plural="commits", short_names=("cmt",), namespaced=True,
        columns=(
            PrinterColumn("Container", ".spec.container", description="Source container"),
            PrinterColumn("Image", ".spec.image", description="Resulting Image object"),
            PrinterColumn("Phase", ".status.phase", description="Progress"),
            PrinterColumn("Added", ".status.added", "integer", "Paths added", priority=1),
            PrinterColumn("Changed", ".status.changed", "integer", "Paths changed", priority=1),
            PrinterColumn("Deleted", ".status.deleted", "integer", "Paths deleted", priority=1),
            PrinterColumn("Digest", ".status.digest", description="New image digest"),
            AGE,
        ),
    )

    kind: Literal["Commit"] = "Commit"
    """Always `Commit`."""
    spec: CommitSpec
    """What to commit."""
    status: CommitStatus | None = None
    """The outcome (written by Dockyard)."""
