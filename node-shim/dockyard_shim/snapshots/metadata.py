"""The snapshotter's metadata: one SQLite table of snapshots, and transactions around it.

Each snapshot is a row with a numeric id (the name of its directory on disk), its key, its
kind, its parent's id, times, labels, and the usage measured at commit. Ids come from
AUTOINCREMENT, so an id is never handed out twice once committed: a directory left behind by a
removal can never be mistaken for a newer snapshot's.

Several processes may open one database (the daemon and a CLI), and several threads one
object: `dockyard_shim.db` gives the WAL journal, the up-front write lock and the thread
lock.

Stores rows; knows nothing about directories or mounts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard_shim.db import Database, TransactionStore
from dockyard_shim.errors import UnavailableError
from dockyard_shim.snapshots.api import Kind, SnapshotKey, Usage

_SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS snapshots (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    key       TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id) ON DELETE RESTRICT,
    kind      TEXT NOT NULL CHECK (kind IN ('view', 'active', 'committed')),
    created   REAL NOT NULL,
    updated   REAL NOT NULL,
    labels    TEXT NOT NULL,
    size      INTEGER,
    inodes    INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS snapshots_by_parent ON snapshots(parent_id)",
)

# Every query that returns snapshots returns these columns, in the order `_row` reads them.
_SELECT = """SELECT s.id, s.key, s.parent_id, p.key, s.kind, s.created, s.updated, s.labels,
                    s.size, s.inodes
             FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id"""
_BY_KEY = _SELECT + " WHERE s.key = ?"
_ALL = _SELECT + " ORDER BY s.id"
_ANCESTORS = """WITH RECURSIVE chain(id, depth) AS (
                    SELECT ?, 0
                    UNION ALL
                    SELECT s.parent_id, chain.depth + 1 FROM snapshots s
                    JOIN chain ON s.id = chain.id WHERE s.parent_id IS NOT NULL)
                SELECT s.id, s.key, s.parent_id, p.key, s.kind, s.created, s.updated, s.labels,
                       s.size, s.inodes
                FROM chain JOIN snapshots s ON s.id = chain.id
                LEFT JOIN snapshots p ON p.id = s.parent_id ORDER BY chain.depth"""


@dataclass(frozen=True)
class Row:
    """One snapshot as stored."""

    id: int
    key: SnapshotKey
    parent_id: int | None
    parent_key: SnapshotKey | None
    kind: Kind
    created: float
    updated: float
    labels: Mapping[str, str]
    size: int | None
    inodes: int | None


def _row(values: tuple[Any, ...]) -> Row:
    (id_, key, parent_id, parent_key, kind, created, updated, labels, size, inodes) = values
    return Row(id=id_, key=SnapshotKey(key), parent_id=parent_id,
               parent_key=None if parent_key is None else SnapshotKey(parent_key),
               kind=Kind(kind), created=created, updated=updated, labels=json.loads(labels),
               size=size, inodes=inodes)


class Transaction:
    """Reads and writes within one SQLite transaction; only valid inside `MetaStore.write`
    or `MetaStore.read`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str) -> Row | None:
        """The snapshot with this key, or None."""
        found = self._conn.execute(_BY_KEY, (key,)).fetchone()
        return None if found is None else _row(found)

    def ancestors(self, row: Row) -> list[Row]:
        """The parent chain of `row`, nearest first (its parent, grandparent, …)."""
        if row.parent_id is None:
            return []
        rows = self._conn.execute(_ANCESTORS, (row.parent_id,)).fetchall()
        return [_row(values) for values in rows]

    def children(self, row: Row) -> list[SnapshotKey]:
        """The keys of the snapshots whose parent is `row`."""
        cur = self._conn.execute("SELECT key FROM snapshots WHERE parent_id = ? ORDER BY id",
                                 (row.id,))
        return [SnapshotKey(str(key)) for (key,) in cur.fetchall()]

    def all(self) -> Iterator[Row]:
        """Every snapshot, in creation order."""
        for values in self._conn.execute(_ALL).fetchall():
            yield _row(values)

    def ids(self) -> set[int]:
        """The ids in use, which are the directory names that must be kept."""
        return {int(i) for (i,) in self._conn.execute("SELECT id FROM snapshots").fetchall()}

    def create(self, kind: Kind, key: str, parent: Row | None, labels: Mapping[str, str],
               now: float) -> Row:
        """Insert a new snapshot; the caller has checked that `key` is free."""
        self._conn.execute(
            "INSERT INTO snapshots (key, parent_id, kind, created, updated, labels) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, None if parent is None else parent.id, kind.value, now, now,
             json.dumps(dict(labels), sort_keys=True)))
        created = self.get(key)
        if created is None:  # impossible inside our transaction; keeps the type honest
            raise UnavailableError(f"snapshot {key!r} vanished while being created")
        return created

    def commit(self, row: Row, name: str, *, labels: Mapping[str, str], usage: Usage,
               now: float) -> None:
        """Turn active `row` into committed `name`; the row (and so its directory) is kept."""
        self._conn.execute(
            "UPDATE snapshots SET key = ?, kind = ?, updated = ?, labels = ?, size = ?, "
            "inodes = ? WHERE id = ?",
            (name, Kind.COMMITTED.value, now, json.dumps(dict(labels), sort_keys=True),
             usage.size, usage.inodes, row.id))

    def delete(self, row: Row) -> None:
        """Delete the row; the caller has checked that it has no children."""
        self._conn.execute("DELETE FROM snapshots WHERE id = ?", (row.id,))


class MetaStore(TransactionStore[Transaction]):
    """The snapshot metadata at `path`, created on first use (see `dockyard_shim.db`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(Database(path, what="snapshot metadata", schema=_SCHEMA,
                                  version=_SCHEMA_VERSION), Transaction)
