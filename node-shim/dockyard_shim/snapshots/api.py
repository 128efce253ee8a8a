"""The snapshotter contract: its vocabulary, its values, and the rules every implementation keeps.

Modelled on containerd's snapshotter. A snapshot is a filesystem state, and there are three
kinds. An ACTIVE snapshot is writable: `prepare` creates it, a container's rootfs or a layer
being unpacked lives in it. A VIEW is a read-only look at a committed snapshot: `view`
creates it, and it can never be committed. A COMMITTED snapshot is immutable: `commit` turns
an active snapshot into one, under a new name, and only committed snapshots can be parents.
Active snapshots never become views and views never become anything; everything can be
removed, but only once it has no children.

Keys and names share one namespace: an active snapshot cannot take the key of a committed
one. Image layers are committed under their chain id, so an image's top chain id is the
parent of every container made from it.

Pure data and a `Protocol`: no I/O. `OverlaySnapshotter` is the implementation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import NewType, Protocol

from dockyard_shim.mounts import Mount

SnapshotKey = NewType("SnapshotKey", str)
"""The key of an active snapshot or view, or the name of a committed one (a chain id)."""


class Kind(StrEnum):
    """What a snapshot is, which decides what may be done with it."""

    VIEW = "view"
    ACTIVE = "active"
    COMMITTED = "committed"


@dataclass(frozen=True)
class Info:
    """What the snapshotter knows about one snapshot.

    `parent` is the key of the committed snapshot this one descends from, or None for a
    snapshot that starts empty. Times are UTC; `updated` moves on commit.
    """

    key: SnapshotKey
    parent: SnapshotKey | None
    kind: Kind
    created: datetime
    updated: datetime
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Usage:
    """Disk used by one snapshot alone, without its parents: bytes allocated, as du counts
    them (a sparse file counts its allocated blocks, a hard link once), and inodes."""

    size: int
    inodes: int


class Snapshotter(Protocol):
    """Allocates, mounts and commits filesystem states with parent-child relationships.

    The rules below are the contract; the conformance suite in
    `tests/shim/test_snapshots_conformance.py` checks them against every implementation.

    - Mounts are returned as data with an empty target: where they go is the caller's choice,
      and the caller mounts and unmounts them. A snapshot must be unmounted before `remove`.
    - Unknown keys or parents raise NotFoundError; a key in use raises AlreadyExistsError; a
      parent that is not committed, `commit` of anything but an active snapshot, and `remove`
      of a snapshot with children raise FailedPreconditionError.
    - Every call is atomic: after a crash, a snapshot either exists completely or not at all;
      disk space of half-made or removed snapshots is reclaimed by `cleanup`.
    - Creating a snapshot costs the same whatever the size of its parents: nothing is copied.
    """

    def prepare(self, key: str, parent: str | None = None,
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create an ACTIVE snapshot `key` on top of committed `parent` (or empty); its mounts.

        After mounting, the target shows the parent's content, and changes land in this
        snapshot only. Finish with `commit` to keep the changes, or `remove` to drop them.
        """
        ...

    def view(self, key: str, parent: str | None = None,
             labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create a VIEW `key` of committed `parent`: read-only mounts; release with `remove`."""
        ...

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn ACTIVE snapshot `key` into COMMITTED snapshot `name`, with the same parent.

        `key` is gone afterwards. The committed snapshot carries the `labels` given here, not
        those of the active snapshot (as containerd). Its usage is measured once, now.
        """
        ...

    def remove(self, key: str) -> None:
        """Remove a snapshot of any kind; refused while other snapshots descend from it."""
        ...

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an ACTIVE snapshot or a VIEW, as `prepare` or `view` returned them."""
        ...

    def stat(self, key: str) -> Info:
        """The info of a snapshot of any kind."""
        ...

    def usage(self, key: str) -> Usage:
        """Disk used by the snapshot itself (not its parents).

        Committed snapshots answer from what was measured at commit; active ones and views
        are measured now, which takes time in proportion to what they hold.
        """
        ...

    def walk(self, *, kind: Kind | None = None, parent: str | None = None,
             labels: Mapping[str, str] | None = None) -> Iterator[Info]:
        """Every snapshot, or those of `kind`, with direct parent `parent`, and carrying all
        of `labels`; in creation order."""
        ...

    def cleanup(self) -> list[Path]:
        """Reclaim the disk of removed or half-created snapshots; the paths reclaimed."""
        ...

    def upper_dir(self, key: str) -> Path:
        """The writable directory of ACTIVE snapshot `key`: unpack a layer into it, or read it
        to compute a diff, without mounting anything."""
        ...

    def close(self) -> None:
        """Release the metadata store. Calling it twice is harmless."""
        ...
