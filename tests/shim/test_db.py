"""The stores' shared SQLite handling: versioned schema, transactions that roll back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dockyard_shim.db import Database
from dockyard_shim.errors import UnavailableError

SCHEMA = ("CREATE TABLE t (x INTEGER)",)


def test_a_new_file_gets_the_schema_and_its_version(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", what="test data", schema=SCHEMA, version=3)
    with db.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    db.close()


def test_a_file_from_a_newer_dockyard_is_refused(tmp_path: Path) -> None:
    Database(tmp_path / "a.db", what="test data", schema=SCHEMA, version=5).close()
    with pytest.raises(UnavailableError, match="newer than this dockyard understands"):
        Database(tmp_path / "a.db", what="test data", schema=SCHEMA, version=4)


def test_a_failing_write_rolls_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db", what="test data", schema=SCHEMA, version=1)

    def insert_then_fail() -> None:
        with db.write() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            raise RuntimeError("halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        insert_then_fail()
    with db.read() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    db.close()


def test_a_write_lock_held_elsewhere_times_out_clearly(tmp_path: Path) -> None:
    one = Database(tmp_path / "a.db", what="test data", schema=SCHEMA, version=1)
    two = Database(tmp_path / "a.db", what="test data", schema=SCHEMA, version=1,
                   busy_timeout=0.2)
    with one.write(), pytest.raises(UnavailableError, match="locked by another process"), \
            two.write():
        pass
    one.close()
    two.close()


def test_connections_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL races between openers; SQLite reports the loser as
    "locked" without waiting, so the open retries (it once failed about 1 round in 30)."""

    def open_and_close(path: Path) -> None:
        Database(path, what="test data", schema=SCHEMA, version=1).close()

    with ThreadPoolExecutor(4) as pool:
        for attempt in range(150):
            path = tmp_path / f"{attempt}.db"
            list(pool.map(open_and_close, [path] * 4))
