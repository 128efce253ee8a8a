"""The overlayfs snapshotter: snapshots as directories, stacked by overlay mounts.

Layout under the root:

    metadata.db               SQLite, see `metadata`
    snapshots/<id>/fs         the snapshot's own files (the overlay upper dir when active)
    snapshots/<id>/work       overlayfs' work dir (active snapshots only)
    snapshots/new-*, trash-*  half-created and half-removed directories (see below)

Mounts: an active snapshot without parent is a read-write bind of its `fs`; with parents it
is an overlay whose lowerdir is the parent chain (nearest first) and whose upperdir is its own
`fs`. A view of one committed snapshot is a read-only bind of that snapshot's `fs` (overlay
needs two lower dirs when it has no upper), a view of several is a lowerdir-only overlay. No
mount ever copies data, so `prepare` costs the same on a 2 MiB or a 2 GiB image.

Crash safety, in the order containerd uses. Creating, in one write transaction, make
`new-<random>/{fs,work}`, insert the row (which assigns the id), rename the temp directory to
`<id>`, then commit. A crash before the commit rolls the row back and leaves a directory with
no row, which `cleanup` collects; the id may be handed out again (AUTOINCREMENT forgets a
rolled-back id), so creation moves such a leftover aside before renaming into its place.
Removing: delete the row and commit first, then rename the directory to `trash-…` and delete
it. A crash in between leaves a directory without a row, never a row without a directory.
`cleanup` takes the write lock while it looks, so it can never collect a directory whose
creation is still in flight in another process.

Limits: overlayfs takes all its options in one page (4096 bytes), so the lowerdir list must
fit: under /var/lib/dockyard/overlay a layer costs 43 bytes, so about 90 layers fit (ids are
short numbers for this reason). A longer chain is refused with UnavailableError, naming the
sizes, already when it is prepared, so an image too deep fails at unpack rather than at its
first container. The kernel's own limit is 500 lower layers; Docker builds at most 125.
(Linux 6.8 added `lowerdir+`, one option per layer through the new mount API: a kernel seam
that mounts with fsconfig(2) could lift this limit.) Paths in the root may not contain `,`
or `:`, the separators of overlay options.

`cleanup`, and removal, never delete through a mount: a directory with anything mounted
below it is left (under a trash name) for a later cleanup.

Directories and rows only: this module never mounts anything.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import MappingProxyType, TracebackType

from dockyard_shim.background import Later, now
from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.mounts import Mount
from dockyard_shim.snapshots import _disk
from dockyard_shim.snapshots.api import Info, Kind, Usage
from dockyard_shim.snapshots.metadata import MetaStore, Row, Transaction

PAGE_SIZE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096
"""The kernel copies mount(2) data into one page, NUL included: the options' hard limit."""

_MAX_KEY = 4096
_NEW_PREFIX = "new-"


def _check_key(what: str, key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY or "\0" in key:
        raise InvalidArgumentError(
            f"snapshot {what} must be a non-empty string of at most {_MAX_KEY} characters "
            f"without NUL, got {key!r:.80}")


def _labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    found = dict(labels or {})
    for name, value in found.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgumentError(f"snapshot labels map strings to strings, got "
                                       f"{name!r}: {value!r}")
    return found


class OverlaySnapshotter:
    """Snapshots on overlayfs under `root`; see the module docstring for layout and rules.

    One SQLite connection per object; several objects, in one process or many, may share a
    root. Use it as a context manager, or call `close`.
    """

    def __init__(self, root: Path, *, sweep: Later = now) -> None:
        """`sweep` runs the deletion of a removed snapshot's (renamed) directory: at once
        by default, or later (a `Background`) so that `remove` returns sooner."""
        root = Path(root).absolute()
        if "," in str(root) or ":" in str(root):
            raise InvalidArgumentError(
                f"snapshotter root {root} contains ',' or ':', which overlayfs options use "
                "as separators; choose another directory")
        self.root = root
        self._snapshots = root / "snapshots"
        self._snapshots.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)  # layer contents are not for other users (setuid binaries)
        self._meta = MetaStore(root / "metadata.db")
        self._sweep = sweep

    # Lifecycle -----------------------------------------------------------------------------

    def prepare(self, key: str, parent: str | None = None,
                labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create an ACTIVE snapshot; see `Snapshotter.prepare`."""
        return self._create(Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str | None = None,
             labels: Mapping[str, str] | None = None) -> list[Mount]:
        """Create a read-only VIEW; see `Snapshotter.view`."""
        return self._create(Kind.VIEW, key, parent, labels)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> None:
        """Turn an ACTIVE snapshot into a COMMITTED one; see `Snapshotter.commit`."""
        _check_key("name", name)
        found = _labels(labels)
        with self._meta.read() as tx:
            row = self._active(tx, key, "commit")
        # Measured outside the write lock: it walks the whole layer. The caller has finished
        # writing, and the id is checked again below.
        usage = _disk.disk_usage(self._fs(row.id))
        with self._meta.write() as tx:
            again = self._active(tx, key, "commit")
            if again.id != row.id:
                raise FailedPreconditionError(f"snapshot {key!r} was replaced during commit")
            if tx.get(name) is not None:
                raise AlreadyExistsError(f"snapshot {name!r} already exists")
            tx.commit(row, name, labels=found, usage=usage, now=time.time())

    def remove(self, key: str) -> None:
        """Remove a snapshot without children; its disk is freed now, or by `cleanup` if
        something (a mount still in place) holds it."""
        with self._meta.write() as tx:
            row = self._get(tx, key)
            children = tx.children(row)
            if children:
                shown = ", ".join(repr(c) for c in children[:3])
                more = f" and {len(children) - 3} more" if len(children) > 3 else ""
                raise FailedPreconditionError(
                    f"snapshot {key!r} has children ({shown}{more}); remove them first")
            tx.delete(row)
        # After the commit: a directory may outlive its row, never the reverse. If it cannot
        # go (still mounted), the snapshot is removed all the same; cleanup retries.
        with contextlib.suppress(OSError):
            trashed = _disk.trash(self._dir(row.id))
            if trashed is not None:
                self._sweep(partial(_disk.delete_tree, trashed))

    def cleanup(self) -> list[Path]:
        """Delete directories that no snapshot owns; the paths reclaimed. What resists (a
        directory still mounted somewhere) stays, under a trash name, for the next call."""
        found: list[tuple[Path, Path]] = []  # (as found, where it is now)
        # Under the write lock: no creation can be between its mkdtemp and its commit.
        with self._meta.write() as tx:
            owned = {str(i) for i in tx.ids()}
            for entry in sorted(self._snapshots.iterdir()):
                if entry.name in owned:
                    continue
                if entry.name.startswith(_disk.TRASH_PREFIX):
                    found.append((entry, entry))
                    continue
                with contextlib.suppress(OSError):  # busy: left for next time
                    moved = _disk.trash(entry)
                    if moved is not None:
                        found.append((entry, moved))
        return [original for original, now in found if _disk.delete_tree(now)]

    # Queries -------------------------------------------------------------------------------

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an ACTIVE snapshot or a VIEW."""
        with self._meta.read() as tx:
            row = self._get(tx, key)
            if row.kind == Kind.COMMITTED:
                raise FailedPreconditionError(
                    f"snapshot {key!r} is committed: it has no mounts of its own; "
                    "view or prepare a snapshot on top of it")
            return self._mounts(row, tx.ancestors(row))

    def stat(self, key: str) -> Info:
        """The info of any snapshot."""
        with self._meta.read() as tx:
            return _info(self._get(tx, key))

    def usage(self, key: str) -> Usage:
        """Disk used by the snapshot itself; measured at commit for committed snapshots."""
        with self._meta.read() as tx:
            row = self._get(tx, key)
        if row.kind == Kind.COMMITTED and row.size is not None and row.inodes is not None:
            return Usage(size=row.size, inodes=row.inodes)
        return _disk.disk_usage(self._fs(row.id))

    def walk(self, *, kind: Kind | None = None, parent: str | None = None,
             labels: Mapping[str, str] | None = None) -> Iterator[Info]:
        """The snapshots that match every filter given, in creation order."""
        wanted = dict(labels or {})
        with self._meta.read() as tx:
            rows = list(tx.all())
        for row in rows:
            if kind is not None and row.kind != kind:
                continue
            if parent is not None and row.parent_key != parent:
                continue
            if any(row.labels.get(name) != value for name, value in wanted.items()):
                continue
            yield _info(row)

    def upper_dir(self, key: str) -> Path:
        """The writable directory of an ACTIVE snapshot."""
        with self._meta.read() as tx:
            return self._fs(self._active(tx, key, "write into").id)

    def layers(self, key: str) -> tuple[Path, list[Path]]:
        """An ACTIVE snapshot's writable directory and its parents' (nearest first): what
        a diff compares. Read them only; the snapshot may be mounted and in use."""
        with self._meta.read() as tx:
            row = self._active(tx, key, "compare")
            return self._fs(row.id), [self._fs(a.id) for a in tx.ancestors(row)]

    # Resource management -------------------------------------------------------------------

    def close(self) -> None:
        """Close the metadata database."""
        self._meta.close()

    def __enter__(self) -> OverlaySnapshotter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # Internals -----------------------------------------------------------------------------

    def _dir(self, snapshot_id: int) -> Path:
        return self._snapshots / str(snapshot_id)

    def _fs(self, snapshot_id: int) -> Path:
        return self._dir(snapshot_id) / "fs"

    def _work(self, snapshot_id: int) -> Path:
        return self._dir(snapshot_id) / "work"

    def _get(self, tx: Transaction, key: str) -> Row:
        row = tx.get(key)
        if row is None:
            raise NotFoundError(f"snapshot {key!r} not found")
        return row

    def _active(self, tx: Transaction, key: str, verb: str) -> Row:
        row = self._get(tx, key)
        if row.kind != Kind.ACTIVE:
            raise FailedPreconditionError(
                f"cannot {verb} snapshot {key!r}: it is {row.kind.value}, not active")
        return row

    def _create(self, kind: Kind, key: str, parent: str | None,
                labels: Mapping[str, str] | None) -> list[Mount]:
        _check_key("key", key)
        if parent is not None:
            _check_key("parent", parent)
        found = _labels(labels)
        temp: Path | None = None
        placed: Path | None = None
        try:
            with self._meta.write() as tx:
                if tx.get(key) is not None:
                    raise AlreadyExistsError(f"snapshot {key!r} already exists")
                parent_row = None if parent is None else self._get(tx, parent)
                if parent_row is not None and parent_row.kind != Kind.COMMITTED:
                    raise FailedPreconditionError(
                        f"parent {parent!r} is {parent_row.kind.value}: only a committed "
                        "snapshot can be a parent; commit it first")
                temp = Path(tempfile.mkdtemp(prefix=_NEW_PREFIX, dir=self._snapshots))
                (temp / "fs").mkdir(mode=0o755)
                # Whatever the umask: a layer's root becomes the container's /, mode 0755.
                os.chmod(temp / "fs", 0o755)  # noqa: S103
                if kind == Kind.ACTIVE:
                    (temp / "work").mkdir(mode=0o711)
                row = tx.create(kind, key, parent_row, found, time.time())
                ancestors = [] if parent_row is None else [parent_row, *tx.ancestors(parent_row)]
                mounts = self._mounts(row, ancestors)  # refuses an over-long chain, rolled back
                final = self._dir(row.id)
                if os.path.lexists(final):
                    # A rolled-back creation's leftover: no row owns this id (we hold the lock).
                    _disk.discard(final)
                temp.rename(final)
                temp, placed = None, final
        except BaseException:
            if temp is not None:
                _disk.delete_tree(temp)
            if placed is not None:  # the commit itself failed after the rename
                _disk.discard(placed)
            raise
        return mounts

    def _mounts(self, row: Row, ancestors: list[Row]) -> list[Mount]:
        if not ancestors:
            flag = "rw" if row.kind == Kind.ACTIVE else "ro"
            return [Mount("bind", str(self._fs(row.id)), options=(flag, "rbind"))]
        if row.kind == Kind.VIEW and len(ancestors) == 1:
            return [Mount("bind", str(self._fs(ancestors[0].id)), options=("ro", "rbind"))]
        data = ["lowerdir=" + ":".join(str(self._fs(a.id)) for a in ancestors)]
        if row.kind == Kind.ACTIVE:
            data += [f"upperdir={self._fs(row.id)}", f"workdir={self._work(row.id)}"]
        self._check_data_size(row, ancestors, data)
        flags = ("ro",) if row.kind == Kind.VIEW else ()
        return [Mount("overlay", "overlay", options=(*flags, *data))]

    def _check_data_size(self, row: Row, ancestors: list[Row], data: list[str]) -> None:
        size = len(",".join(data).encode()) + 1  # the NUL terminator counts
        if size <= PAGE_SIZE:
            return
        per_layer = size // len(ancestors)
        raise UnavailableError(
            f"snapshot {row.key!r} stacks {len(ancestors)} layers, whose paths need {size} "
            f"bytes of overlay mount options, more than the kernel's limit of {PAGE_SIZE}; "
            f"each layer costs about {per_layer} bytes under {self.root}: use a snapshotter "
            "root with a shorter path, or squash the image into fewer layers")


def _info(row: Row) -> Info:
    return Info(
        key=row.key,
        parent=row.parent_key,
        kind=row.kind,
        created=datetime.fromtimestamp(row.created, UTC),
        updated=datetime.fromtimestamp(row.updated, UTC),
        labels=MappingProxyType(dict(row.labels)),
    )
