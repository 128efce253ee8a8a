"""The container lifecycle as an explicit state machine, persisted in SQLite.

    created ──start──► running ──pause──► paused
       ▲                 │  ▲               │
       │                 │  └───unpause─────┘
       │               exit / kill
       │                 ▼
       └────(restart)── stopped ──delete──► (gone)

Guards (`can_*`) say which verbs a status allows, as youki does; the runtime refuses the
rest with FailedPreconditionError. Stored state is never trusted blindly: the runtime
re-derives it from /proc and the monitor's exit file (`observe`) before it acts.

The store is one SQLite database per node (`dockyard_shim.db`: WAL, one writer at a time),
safe to open from the daemon and a CLI at once and to use from several threads.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from dockyard_shim.db import Database
from dockyard_shim.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError


class Status(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


def can_start(status: Status) -> bool:
    return status in (Status.CREATED, Status.STOPPED)


def can_kill(status: Status) -> bool:
    return status in (Status.RUNNING, Status.PAUSED)


def can_pause(status: Status) -> bool:
    return status is Status.RUNNING


def can_unpause(status: Status) -> bool:
    return status is Status.PAUSED


def can_delete(status: Status) -> bool:
    # runc and Docker allow removing a container that was created but never started.
    return status in (Status.CREATED, Status.STOPPED)


def require(allowed: bool, verb: str, record: ContainerRecord, hint: str = "") -> None:
    """Refuse `verb` on `record` unless its status allows it."""
    if not allowed:
        raise FailedPreconditionError(
            f"cannot {verb} container {record.name}: it is {record.status}"
            + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class ContainerRecord:
    """What the node remembers about one container."""

    id: str
    name: str
    image: str
    status: Status
    bundle: str
    config: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    pid: int = 0
    pid_start: int = 0
    """The kernel's start time of `pid` (/proc/PID/stat field 22): tells a live container
    from an unrelated process that reused its pid."""
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    """Restarts by the restart policy since the container was last started by hand."""
    backoff: float = 0.0
    """The delay before the last restart by policy (it doubles while the container
    keeps crashing soon after starting)."""
    ip_address: str = ""
    """The container's address on the node's bridge while it runs (bridge network only)."""
    stopped_by_user: bool = False
    """Stopped or killed on request: restart policies hold off until a manual start."""
    labels: dict[str, str] = field(default_factory=dict)
    id_map: dict[str, int] | None = None
    """With `--userns auto`: the block of the node's subordinate ids the container runs
    as (`userns.IdMap`), held from create to removal."""

    def with_(self, **changes: Any) -> ContainerRecord:
        return replace(self, **changes)


_SCHEMA = ("""CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
)""",)


class StateStore:
    """Container records by id and by name, in one SQLite file (see `dockyard_shim.db`)."""

    def __init__(self, path: Path) -> None:
        self._db = Database(path, what="container state", schema=_SCHEMA, version=1)

    def close(self) -> None:
        self._db.close()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.write()

    def _query(self, sql: str, args: tuple[str, ...] = ()) -> list[tuple[str]]:
        return self._db.query(sql, args)

    def add(self, record: ContainerRecord) -> None:
        """Store a new record; AlreadyExistsError when the name or id is taken."""
        try:
            with self._write() as db:
                db.execute("INSERT INTO containers (id, name, body) VALUES (?, ?, ?)",
                           (record.id, record.name, _encode(record)))
        except sqlite3.IntegrityError as e:
            raise AlreadyExistsError(
                f"the container name {record.name!r} is already in use: remove that "
                "container or choose another name") from e

    def put(self, record: ContainerRecord) -> None:
        """Replace an existing record."""
        with self._write() as db:
            cursor = db.execute("UPDATE containers SET body = ? WHERE id = ?",
                                (_encode(record), record.id))
            if cursor.rowcount == 0:
                raise NotFoundError(f"no such container: {record.name}")

    def delete(self, container_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def get(self, ref: str) -> ContainerRecord:
        """A record by name, full id or unique id prefix (as Docker resolves them)."""
        rows = self._query("SELECT body FROM containers WHERE name = ? OR id = ?", (ref, ref))
        row = rows[0] if rows else None
        if row is None and len(ref) >= 3:
            rows = self._query("SELECT body FROM containers WHERE id LIKE ?",
                               (ref.replace("%", "") + "%",))
            if len(rows) > 1:
                raise NotFoundError(f"container id prefix {ref!r} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise NotFoundError(f"no such container: {ref}")
        return _decode(row[0])

    def all(self) -> list[ContainerRecord]:
        rows = self._query("SELECT body FROM containers ORDER BY rowid")
        return [_decode(body) for (body,) in rows]


def _encode(record: ContainerRecord) -> str:
    return json.dumps(vars(record))  # not asdict(): its deep copy costs more than the dump


@functools.lru_cache(maxsize=4096)
def _decode(body: str) -> ContainerRecord:
    """The record a stored body holds. Memoized on the body's text: a node agent lists
    every container each second, and decoding hundreds of unchanged bodies was most of
    the daemon's work. The records are frozen and shared; their dicts are read-only."""
    data = json.loads(body)
    data["status"] = Status(data["status"])
    return ContainerRecord(**data)
