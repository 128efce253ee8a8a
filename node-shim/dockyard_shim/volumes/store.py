"""The node's volumes: records in SQLite, local data under `volumes/<name>/_data`.

    DOCKYARD_ROOT/volumes/
      volumes.db           one record per volume (name -> JSON)
      <name>/_data         a local volume's data (Docker's layout)
      trash-<name>-<hex>/  a removed volume's directory, deleted in the background

Crash safety, as the other stores: a volume's record is committed before its directory is
made (a record whose directory is missing gets an empty one when first mounted), and
removal deletes the record first, then renames the directory into the trash, so a
half-deleted volume is never found by name; a directory without a record (a crash in
between) is collected when the store opens. Data is never deleted while a
container uses the volume: the caller passes the names in use (`in_use`), read from the
container records, as the image store's prune does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Collection
from functools import partial
from pathlib import Path

from dockyard_shim.background import Later, now
from dockyard_shim.db import Database
from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from dockyard_shim.kernel import Kernel, LinuxKernel
from dockyard_shim.kernel.consts import (
    AT_FDCWD,
    AT_RECURSIVE,
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOSUID,
    MS_PRIVATE,
    MS_SHARED,
    OPEN_TREE_CLOEXEC,
    OPEN_TREE_CLONE,
)
from dockyard_shim.volumes.model import HostPaths, Kind, VolumeRecord, check_name

_SCHEMA = ("""CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
)""",)
_TRASH = "trash-"
STATE_LABEL = "dockyard.dev/state"
IMPORTING = "importing"
"""A volume labelled so is being filled (`importing.import_volume`): not mounted yet."""
_DB = "volumes.db"


class VolumeStore:
    """Named volumes of one node. Safe to open from the daemon and a CLI at once."""

    def __init__(self, root: Path, *, host_paths: HostPaths | None = None,
                 later: Later = now, kernel: Kernel | None = None) -> None:
        """`root` is the `volumes/` directory; `later` deletes removed data (at once by
        default, or on a background thread); `kernel` mounts tmpfs volumes."""
        self.root = root
        self.host_paths = host_paths or HostPaths()
        self._later = later
        self._kernel = kernel or LinuxKernel()
        root.mkdir(parents=True, exist_ok=True)
        self._db = Database(root / _DB, what="volume index", schema=_SCHEMA, version=1)
        self._collect_orphans()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VolumeStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- queries

    def get(self, name: str) -> VolumeRecord:
        rows = self._db.query("SELECT body FROM volumes WHERE name = ?", (name,))
        if not rows:
            raise NotFoundError(f"no such volume: {name}")
        return VolumeRecord.from_json(json.loads(rows[0][0]))

    def all(self) -> list[VolumeRecord]:
        rows = self._db.query("SELECT body FROM volumes ORDER BY name")
        return [VolumeRecord.from_json(json.loads(body)) for (body,) in rows]

    def data_dir(self, name: str) -> Path:
        """Where a local volume's data lives (whether or not it exists yet)."""
        return self.root / check_name(name) / "_data"

    def source(self, record: VolumeRecord) -> Path:
        """The host directory a container's mount of this volume binds from (a tmpfs
        volume is mounted there now if it is not already)."""
        if record.labels.get(STATE_LABEL) == IMPORTING:
            raise FailedPreconditionError(
                f"volume {record.name} is being imported, or its import did not finish: "
                "wait, or remove it and import again")
        if record.kind is Kind.LOCAL:
            return self._make_data_dir(record.name)  # gone only after a crash: empty then
        if record.kind is Kind.HOST_PATH:
            return Path(self.host_paths.check(record.host_path, "hostPath"))
        if record.kind is Kind.TMPFS:
            data = self._make_data_dir(record.name)
            if not _is_mount_point(data):
                self._kernel.mount("tmpfs", str(data), "tmpfs", MS_NOSUID | MS_NODEV,
                                   f"size={record.size_bytes},mode={record.mode:o}")
            return data
        return self._export_hub(record)

    def export_source(self, name: str) -> Path:
        """The directory an export of the volume `name` carries (a provider volume's data
        is its provider's: refused)."""
        record = self.get(name)
        if record.kind is Kind.PROVIDER:
            raise InvalidArgumentError(
                f"{name} is a provider volume: its data is its provider's to export")
        return self.source(record)

    def usage(self, record: VolumeRecord) -> int | None:
        """Bytes used by a local volume's data (None for other kinds)."""
        if record.kind is not Kind.LOCAL:
            return None
        total = 0
        for directory, _, files in os.walk(self.data_dir(record.name)):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(directory, name)).st_blocks * 512
        return total

    # ----------------------------------------------------------------------- changes

    def create(self, record: VolumeRecord) -> VolumeRecord:
        """Make a volume. Creating one that exists with the same settings returns it (as
        `docker volume create` does); with other settings it is AlreadyExistsError."""
        record = self._checked(record.with_(created_at=record.created_at or time.time()))
        with contextlib.suppress(NotFoundError):
            return self._same_as_existing(record)
        try:
            with self._db.write() as db:
                db.execute("INSERT INTO volumes (name, body) VALUES (?, ?)",
                           (record.name, json.dumps(record.to_json())))
        except sqlite3.IntegrityError:  # made by someone else meanwhile
            return self._same_as_existing(record)
        if record.kind is Kind.LOCAL:
            try:
                self._make_data_dir(record.name)
            except BaseException:
                with self._db.write() as db:
                    db.execute("DELETE FROM volumes WHERE name = ?", (record.name,))
                raise
        return record

    def put(self, record: VolumeRecord) -> None:
        """Store a changed record of an existing volume (its labels)."""
        with self._db.write() as db:
            cursor = db.execute("UPDATE volumes SET body = ? WHERE name = ?",
                                (json.dumps(record.to_json()), record.name))
            if cursor.rowcount == 0:
                raise NotFoundError(f"no such volume: {record.name}")

    def create_anonymous(self, labels: dict[str, str] | None = None) -> VolumeRecord:
        """A local volume with a random name, for one container's `-v /path`."""
        return self.create(VolumeRecord(name=secrets.token_hex(32), anonymous=True,
                                        labels=dict(labels or {})))

    def release(self, record: VolumeRecord) -> None:
        """Unmount a tmpfs volume that no running container uses any more: its data goes,
        as with Docker's tmpfs volumes. Other kinds keep their data; nothing to do."""
        data = self.data_dir(record.name)
        if record.kind is Kind.TMPFS and _is_mount_point(data):
            self._kernel.umount2(str(data), MNT_DETACH)

    def export_tree(self, record: VolumeRecord) -> int:
        """A detached copy of a provider volume's hub (open_tree), to attach at the
        provider's export path: a peer of the hub, so that what the provider mounts there
        reaches the hub and every consumer. The caller closes it."""
        hub = self._export_hub(record)
        return self._kernel.open_tree(AT_FDCWD, str(hub), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
                                      | AT_RECURSIVE)

    def withdraw_export(self, record: VolumeRecord) -> None:
        """The provider stopped: unmount what it had mounted in its export, from the hub
        and so from every consumer (an unmount propagates to the hub's slaves). The hub
        stays, so that consumers see what the provider mounts when it starts again."""
        hub = str(self.data_dir(record.name))
        below = [m for m in _mount_points() if m.startswith(hub + "/")]
        for point in sorted(below, key=len, reverse=True):
            with contextlib.suppress(OSError):  # gone with its parent already
                self._kernel.umount2(point, MNT_DETACH)

    def _export_hub(self, record: VolumeRecord) -> Path:
        """A provider volume's hub: its data directory bound onto itself as a mount of its
        own peer group (private, then shared). The provider's export joins the group;
        consumers bind the hub, and as slaves of the group they see the provider's
        mounts come and go."""
        hub = self._make_data_dir(record.name)
        if not _is_mount_point(hub):
            self._kernel.mount(str(hub), str(hub), "", MS_BIND, "")
            self._kernel.mount("", str(hub), "", MS_PRIVATE, "")
            self._kernel.mount("", str(hub), "", MS_SHARED, "")
        return hub

    def remove(self, name: str, *, in_use: Collection[str]) -> None:
        """Delete a volume and its data. A volume any container uses (running or not) is
        refused: remove the container first, as Docker requires."""
        record = self.get(name)
        if record.name in in_use:
            raise FailedPreconditionError(
                f"volume {name} is in use by a container: remove the container first "
                "(dockyard rm CONTAINER), then the volume")
        data = self.data_dir(record.name)
        if _is_mount_point(data):  # a tmpfs volume's memory, a provider volume's hub
            self._kernel.umount2(str(data), MNT_DETACH)
        with self._db.write() as db:
            db.execute("DELETE FROM volumes WHERE name = ?", (record.name,))
        self._trash(record.name)

    def prune(self, *, in_use: Collection[str], all_volumes: bool = False) -> list[str]:
        """Remove unused volumes: anonymous ones, or every unused one with `all_volumes`
        (Docker's `volume prune [-a]`). The names removed."""
        removed = []
        for record in self.all():
            if record.name in in_use or not (all_volumes or record.anonymous):
                continue
            with contextlib.suppress(NotFoundError, FailedPreconditionError):
                self.remove(record.name, in_use=in_use)
                removed.append(record.name)
        return removed

    # ----------------------------------------------------------------------- helpers

    def _checked(self, record: VolumeRecord) -> VolumeRecord:
        check_name(record.name)
        if record.kind is Kind.HOST_PATH:
            record = record.with_(host_path=self.host_paths.check(record.host_path,
                                                                  "hostPath"))
            if not Path(record.host_path).is_dir():
                raise InvalidArgumentError(
                    f"hostPath {record.host_path} is not a directory on this node: make it "
                    "first (it is never created for you)")
        elif record.host_path or record.shared:
            raise InvalidArgumentError("a host path and `shared` belong to hostPath volumes")
        if record.kind is Kind.TMPFS:
            if record.size_bytes is None or record.size_bytes <= 0:
                raise InvalidArgumentError(
                    "a tmpfs volume needs a size limit, such as --tmpfs-size 64m")
        elif record.size_bytes is not None:
            raise InvalidArgumentError("a size limit belongs to tmpfs volumes")
        if record.kind is Kind.PROVIDER and not (
                record.provider and record.provider_path.startswith("/")
                and record.provider_path.rstrip("/") and ".." not in record.provider_path):
            raise InvalidArgumentError(
                "a provider volume names its storage container and the absolute path it "
                "exports, such as ceph:/export")
        elif record.kind is not Kind.PROVIDER and (record.provider or record.provider_path):
            raise InvalidArgumentError("a storage container belongs to provider volumes")
        return record

    def _same_as_existing(self, record: VolumeRecord) -> VolumeRecord:
        existing = self.get(record.name)
        if existing.with_(created_at=0.0) != record.with_(created_at=0.0):
            raise AlreadyExistsError(
                f"volume {record.name} exists already with other settings: pick another "
                "name, or remove it first (dockyard volume rm)")
        return existing

    def _make_data_dir(self, name: str) -> Path:
        data = self.data_dir(name)
        if not data.is_dir():
            data.mkdir(parents=True, exist_ok=True)
            data.chmod(0o755)
        return data

    def _trash(self, name: str) -> None:
        trash = self.root / f"{_TRASH}{name}-{secrets.token_hex(4)}"
        try:
            (self.root / name).rename(trash)
        except FileNotFoundError:
            return  # nothing on disk, or another process moved it first
        self._later(partial(shutil.rmtree, trash, ignore_errors=True))

    def _collect_orphans(self) -> None:
        """Directories without a record: left by a crash while a volume was removed.

        Listed before the records are read: a record is committed before its directory is
        made, so a directory seen here whose record is missing afterwards is no volume."""
        entries = [entry for entry in self.root.iterdir() if entry.is_dir()]
        known = {record.name for record in self.all()}
        for entry in entries:
            if entry.name in known:
                continue
            if entry.name.startswith(_TRASH):
                self._later(partial(shutil.rmtree, entry, ignore_errors=True))
            else:
                self._trash(entry.name)


def _is_mount_point(path: Path) -> bool:
    """Whether a mount sits at `path` (os.path.ismount misses a bind within one filesystem)."""
    return str(path) in _mount_points()


def _mount_points() -> list[str]:
    """The mount points of this process's namespace (mountinfo's field 5, unescaped)."""
    with open("/proc/self/mountinfo", "rb") as f:
        return [re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]),
                       line.split()[4]).decode(errors="surrogateescape") for line in f]
