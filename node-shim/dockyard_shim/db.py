"""One SQLite database as the node shim's stores use it (snapshots, images, containers).

WAL journal (readers never wait for the writer; several processes may open one file),
`synchronous=NORMAL` (never corrupt after a crash; a power loss may drop the last commits,
which every store tolerates: they re-derive state or collect orphans), one connection per
object guarded by a lock (sqlite3 connections must not run two transactions at once from
different threads), write transactions with `BEGIN IMMEDIATE` so the write lock is taken
up front, and a schema version in `user_version` so an older dockyard refuses a newer file.

I/O on one file only; knows nothing of the tables' meaning.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from dockyard_shim.errors import UnavailableError

BUSY_TIMEOUT = 30.0
T = TypeVar("T")
"""Seconds to wait for another process's write lock; stores commit in milliseconds, so a
longer wait means something is stuck."""


class Database:
    """An open SQLite file with a versioned schema, created on first use."""

    def __init__(self, path: Path, *, what: str, schema: Sequence[str], version: int,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self._what = what
        self._timeout = busy_timeout
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: the module must not open transactions behind our back.
            self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                         check_same_thread=False)
            self._use_wal()
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            with self.write() as conn:
                found = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if found > version:
                    raise UnavailableError(
                        f"{path} has {what} version {found}, newer than this dockyard "
                        f"understands ({version}); upgrade dockyard")
                if found < version:
                    for statement in schema:  # not executescript(): it would COMMIT
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")
        except sqlite3.Error as e:
            raise UnavailableError(f"cannot open {what} {path}: {e}") from e

    def _use_wal(self) -> None:
        # Turning a new file to WAL takes an exclusive lock, and when connections race for
        # it SQLite answers "locked" at once, without waiting: retry for the busy timeout.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends normally, else rolled back."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise UnavailableError(
                    f"{self._what} is locked by another process for more than "
                    f"{self._timeout:.0f}s: {e}") from e
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """One consistent view of the database that never blocks writers."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        """The rows of one statement: on its own it reads one consistent snapshot."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class TransactionStore(Generic[T]):
    """A `Database` whose transactions come as a store's own query object: `wrap(conn)`.

    What every store built on one file needs (the image index, the snapshot metadata):
    `write` and `read` blocks that hand out the store's typed transaction, and `close`.
    """

    def __init__(self, database: Database, wrap: Callable[[sqlite3.Connection], T]) -> None:
        self._db = database
        self._wrap = wrap

    @contextmanager
    def write(self) -> Iterator[T]:
        """A write transaction: committed when the block ends normally, else rolled back."""
        with self._db.write() as conn:
            yield self._wrap(conn)

    @contextmanager
    def read(self) -> Iterator[T]:
        """A consistent read that never blocks writers (WAL)."""
        with self._db.read() as conn:
            yield self._wrap(conn)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
