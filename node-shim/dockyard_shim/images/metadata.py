"""The image index: which images exist, their names, and what they hold on to, in SQLite.

Tables: `images` (id = config digest, as Docker; the manifest; created; size), `names` (a
normalised reference -> image, so one image may have many names and a name moves when it is
loaded again), `blobs` (every blob each image keeps alive) and `layers` (each image's layers
in order with diff id and chain id, which unpacking and garbage collection read).

Same discipline as the snapshot metadata: WAL, so a CLI can read while the daemon writes;
`BEGIN IMMEDIATE` for every change; one connection per object guarded by a lock. Rows only:
blobs and snapshots are someone else's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dockyard_shim.db import Database, TransactionStore
from dockyard_shim.images.digest import ChainId, Digest

_SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS images (
        id            TEXT PRIMARY KEY,
        manifest      TEXT NOT NULL,
        manifest_type TEXT NOT NULL,
        created       REAL,
        loaded        REAL NOT NULL,
        size          INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS names (
        name  TEXT PRIMARY KEY,
        image TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    )""",
    """CREATE TABLE IF NOT EXISTS blobs (
        image  TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (image, digest)
    )""",
    """CREATE TABLE IF NOT EXISTS layers (
        image      TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position   INTEGER NOT NULL,
        blob       TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size       INTEGER NOT NULL,
        diff_id    TEXT NOT NULL,
        chain_id   TEXT NOT NULL,
        PRIMARY KEY (image, position)
    )""",
    "CREATE INDEX IF NOT EXISTS names_by_image ON names(image)",
    "CREATE INDEX IF NOT EXISTS layers_by_chain ON layers(chain_id)",
)


@dataclass(frozen=True)
class ImageRecord:
    """An image in the store.

    `id` is the config digest, as Docker's image id; `names` are normalised references,
    sorted (empty for a dangling image); `size` is what its blobs take in the content store;
    `created` comes from the image config when it says, `loaded` is when it arrived here.
    """

    id: Digest
    names: tuple[str, ...]
    manifest_digest: Digest
    manifest_media_type: str
    created: datetime | None
    loaded: datetime
    size: int

    @property
    def config_digest(self) -> Digest:
        return self.id

    @property
    def short_id(self) -> str:
        """The first 12 hex digits, as `docker images` shows."""
        return self.id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class LayerRow:
    """One layer of an image, bottom first."""

    position: int
    blob: Digest
    media_type: str
    size: int
    diff_id: Digest
    chain_id: ChainId


class Transaction:
    """Queries and changes inside one transaction of `ImageDB`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _one(self, sql: str, *args: Any) -> Any:
        found = self._conn.execute(sql, args).fetchone()
        return None if found is None else found[0]

    def _column(self, sql: str, *args: Any) -> list[Any]:
        return [row[0] for row in self._conn.execute(sql, args).fetchall()]

    def image_of(self, name: str) -> Digest | None:
        """The image a name points to."""
        found = self._one("SELECT image FROM names WHERE name = ?", name)
        return None if found is None else Digest(found)

    def ids_starting(self, prefix: str) -> list[Digest]:
        """Image ids starting with `prefix` (`sha256:` included)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return [Digest(i) for i in self._column(
            "SELECT id FROM images WHERE id LIKE ? ESCAPE '\\' ORDER BY id", escaped + "%")]

    def ids_by_manifest(self, digest: str) -> list[Digest]:
        """Images whose manifest is `digest` (what `name@digest` refers to)."""
        return [Digest(i) for i in self._column(
            "SELECT id FROM images WHERE manifest = ? ORDER BY id", digest)]

    def get(self, image_id: str) -> ImageRecord | None:
        row = self._conn.execute(
            "SELECT id, manifest, manifest_type, created, loaded, size FROM images "
            "WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            return None
        id_, manifest, manifest_type, created, loaded, size = row
        return ImageRecord(
            id=Digest(id_), names=tuple(self.names_of(id_)), manifest_digest=Digest(manifest),
            manifest_media_type=manifest_type,
            created=None if created is None else datetime.fromtimestamp(created, UTC),
            loaded=datetime.fromtimestamp(loaded, UTC), size=size)

    def all(self) -> list[ImageRecord]:
        """Every image, newest first."""
        ids = self._column("SELECT id FROM images ORDER BY COALESCE(created, loaded) DESC, id")
        return [record for i in ids if (record := self.get(i)) is not None]

    def names_of(self, image_id: str) -> list[str]:
        return self._column("SELECT name FROM names WHERE image = ? ORDER BY name", image_id)

    def layers(self, image_id: str) -> list[LayerRow]:
        rows = self._conn.execute(
            "SELECT position, blob, media_type, size, diff_id, chain_id FROM layers "
            "WHERE image = ? ORDER BY position", (image_id,)).fetchall()
        return [LayerRow(p, Digest(b), t, s, Digest(d), ChainId(c)) for p, b, t, s, d, c in rows]

    def add_image(self, record: ImageRecord, layers: Iterable[LayerRow],
                  blobs: Iterable[Digest]) -> bool:
        """Insert the image unless it exists; add its blobs either way. True when new."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO images (id, manifest, manifest_type, created, loaded, size) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (record.id, record.manifest_digest, record.manifest_media_type,
             None if record.created is None else record.created.timestamp(),
             record.loaded.timestamp(), record.size))
        new = cur.rowcount == 1
        if new:
            self._conn.executemany(
                "INSERT INTO layers (image, position, blob, media_type, size, diff_id, "
                "chain_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(record.id, layer.position, layer.blob, layer.media_type, layer.size,
                  layer.diff_id, layer.chain_id) for layer in layers])
        # An image loaded again from another archive may bring another manifest (a legacy
        # docker save gets one we build): keep its blobs alive with the image too.
        self._conn.executemany("INSERT OR IGNORE INTO blobs (image, digest) VALUES (?, ?)",
                               [(record.id, blob) for blob in blobs])
        return new

    def set_name(self, name: str, image_id: str) -> Digest | None:
        """Point `name` at the image; the image it pointed to before, if another."""
        before = self.image_of(name)
        self._conn.execute("INSERT OR REPLACE INTO names (name, image) VALUES (?, ?)",
                           (name, image_id))
        return before if before != image_id else None

    def delete_name(self, name: str) -> None:
        self._conn.execute("DELETE FROM names WHERE name = ?", (name,))

    def delete_image(self, image_id: str) -> None:
        """Delete the image with its names, blob references and layers."""
        self._conn.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def referenced_blobs(self) -> set[Digest]:
        return {Digest(d) for d in self._column("SELECT DISTINCT digest FROM blobs")}

    def referenced_chains(self) -> set[ChainId]:
        return {ChainId(c) for c in self._column("SELECT DISTINCT chain_id FROM layers")}


class ImageDB(TransactionStore[Transaction]):
    """The image metadata at `path`, created on first use (see `dockyard_shim.db`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(Database(path, what="image metadata", schema=_SCHEMA,
                                  version=_SCHEMA_VERSION), Transaction)
