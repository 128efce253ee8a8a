"""The `Volume` kind: data a container keeps, bind-mounted with zero overhead.

Four sources, exactly one per Volume: `local` (a directory the node shim manages),
`hostPath` (a host directory under an allowlisted root), `tmpfs` (memory) and `provider`
(a path exported by a storage Container, the storage-plugin idea).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, StrictInt

from dockyard_api.fields import AbsolutePath, DnsLabel, DnsSubdomain
from dockyard_api.meta import AGE, ApiModel, CelRule, KindInfo, PrinterColumn, Resource, StatusBase
from dockyard_api.quantity import MemoryQuantity


class LocalSource(ApiModel):
    """A directory under the node's state root, created on first use."""


class HostPathSource(ApiModel):
    """A directory of the node, allowed only under the roots the node's configuration lists."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("!(self.path in ['/', '/etc']) && !['/proc', '/sys', '/dev']"
                ".exists(p, self.path == p || self.path.startsWith(p + '/'))",
                "hostPath cannot be /, /etc, or under /proc, /sys or /dev: pick a data "
                "directory such as /srv/data", "path", "FieldValueForbidden"),
    )

    path: AbsolutePath
    """The host directory: `/srv/data`. Nodes refuse paths outside their allowlist."""
    shared: StrictBool = False
    """The path is on storage every node mounts (NFS, CephFS…) and holds the same data
    everywhere: a consumer may move to another node without a transfer."""


class TmpfsSource(ApiModel):
    """A memory-backed filesystem, emptied when the container stops."""

    size_limit: MemoryQuantity
    """The most memory the filesystem may hold: `64Mi`."""
    mode: Annotated[StrictInt, Field(ge=0, le=0o7777)] = 0o1777
    """Permission bits of its root, as a number (default 1777 octal, like /tmp)."""


class ProviderSource(ApiModel):
    """A directory exported by a running storage Container of the same namespace."""

    container: DnsLabel
    """The providing Container (for example a Ceph or Gluster member)."""
    path: AbsolutePath
    """The exported directory inside the provider. Mounts the provider makes beneath it
    later appear in every consumer (mount propagation)."""


class MigrationPolicy(StrEnum):
    """What happens to a `local` volume's data when its consumer moves to another node."""

    NEVER = "Never"
    TRANSFER = "Transfer"


class VolumeSpec(ApiModel):
    """Where the data lives and whether it may follow its container."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("[has(self.local), has(self.hostPath), has(self.tmpfs), has(self.provider)]"
                ".filter(x, x).size() == 1",
                "set exactly one of local, hostPath, tmpfs or provider", "local",
                "FieldValueRequired"),
        CelRule("self.migration == 'Never' || has(self.local)",
                "only local volumes are transferred between nodes; a shared hostPath "
                "needs no transfer (set hostPath.shared)", "migration", "FieldValueForbidden"),
    )

    local: LocalSource | None = None
    """A directory the node shim manages under its state root."""
    host_path: HostPathSource | None = None
    """A host directory under an allowlisted root."""
    tmpfs: TmpfsSource | None = None
    """A size-limited memory filesystem."""
    provider: ProviderSource | None = None
    """A directory exported by a storage Container."""
    migration: MigrationPolicy = MigrationPolicy.NEVER
    """`Never`: consumers are placed on the volume's node. `Transfer`: when a consumer is
    moved, the new node copies the data from the old one (verified) before it starts."""


class VolumePhase(StrEnum):
    """A volume's state, in one word."""

    PENDING = "Pending"
    READY = "Ready"
    MIGRATING = "Migrating"
    FAILED = "Failed"


class VolumeStatus(StatusBase):
    """Where the volume's data is and who uses it."""

    phase: VolumePhase = VolumePhase.PENDING
    """`Pending` (not yet placed), `Ready`, `Migrating` (data on its way) or `Failed`."""
    node: DnsSubdomain | None = None
    """The node that holds the data (none for a shared hostPath); while `Migrating`, the
    node the data is being copied to."""
    source_node: DnsSubdomain | None = None
    """While `Migrating`: the node the data is copied from."""
    consumers: Annotated[list[DnsLabel], Field(max_length=1024)] = Field(default_factory=list)
    """The Containers that mount the volume."""
    size_bytes: Annotated[StrictInt, Field(ge=0)] | None = None
    """Bytes used, as last measured."""


class Volume(Resource):
    """Data for containers: a directory, a host path, memory, or a storage provider's export."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="Volume", plural="volumes", short_names=("vol",), namespaced=True,
        name_format="label",
        columns=(
            PrinterColumn("Phase", ".status.phase", description="Volume state"),
            PrinterColumn("Node", ".status.node", description="Node holding the data"),
            PrinterColumn("Migration", ".spec.migration", description="Migration policy"),
            PrinterColumn("Size", ".status.sizeBytes", "integer", "Bytes used", priority=1),
            AGE,
        ),
    )

    kind: Literal["Volume"] = "Volume"
    """Always `Volume`."""
    spec: VolumeSpec
    """Where the data lives."""
    status: VolumeStatus | None = None
    """Placement and usage (written by Dockyard)."""
