"""Volume placement and migration: where a container's `local` volumes hold it, and what
binding it to a node does to them.

A `local` volume's data lives on one node (`status.node`). A container that mounts it
- runs on that node when the volume's migration is `Never` (a constraint for `place`);
- may run elsewhere when it is `Transfer`: binding it to another node marks the volume
  `Migrating` to that node from the old one (`status.sourceNode`); the new node's agent
  pulls the data through the shims' transfer, verified, before the container starts, and
  marks the volume `Ready` there.
A volume no container has used yet is placed with its first consumer. Other sources
(hostPath, tmpfs, provider) are not placed.

Pure computation: the scheduling handler reads the Volumes from an index and writes what
`moves` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard_api import Container, Volume
from dockyard_api.volume import MigrationPolicy


@dataclass(frozen=True)
class Placed:
    """What scheduling needs of one Volume."""

    local: bool
    node: str | None = None
    migration: MigrationPolicy = MigrationPolicy.NEVER

    @classmethod
    def of(cls, volume: Volume) -> Placed:
        status = volume.status
        return cls(local=volume.spec.local is not None,
                   node=status.node if status is not None else None,
                   migration=volume.spec.migration)


def _local_mounts(container: Container, volumes: Mapping[str, Placed]
                  ) -> dict[str, Placed]:
    namespace = container.metadata.namespace
    found = {}
    for mount in container.spec.volume_mounts:
        key = f"{namespace}/{mount.name}"
        placed = volumes.get(key)
        if placed is not None and placed.local:
            found[key] = placed
    return found


def constraints(container: Container, volumes: Mapping[str, Placed]
                ) -> tuple[frozenset[str], int]:
    """The nodes that hold the container's placed `local` volumes that may not move, and
    how many such volumes it mounts (for `scheduling.Request.of`)."""
    pinned = [placed.node for placed in _local_mounts(container, volumes).values()
              if placed.node is not None and placed.migration is MigrationPolicy.NEVER]
    return frozenset(node for node in pinned if node is not None), len(pinned)


def moves(container: Container, node: str, volumes: Mapping[str, Placed]
          ) -> dict[str, dict[str, Any]]:
    """The status each of the container's `local` volumes gets when the container is bound
    to `node`: `namespace/name` -> status fields (only the volumes that change)."""
    changes: dict[str, dict[str, Any]] = {}
    for key, placed in _local_mounts(container, volumes).items():
        if placed.node is None:
            changes[key] = {"node": node, "phase": "Ready", "sourceNode": None}
        elif placed.node != node:
            changes[key] = {"node": node, "phase": "Migrating", "sourceNode": placed.node}
    return changes
