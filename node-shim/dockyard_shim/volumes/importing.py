"""Import: a volume made from an exported stream (`transfer`), usable only once verified.

Import writes into a volume that is not usable yet (labelled
`dockyard.dev/state: importing`, refused by `VolumeStore.source`), hashes as it writes,
and checks the manifest at the end: a missing, extra, changed or truncated file, or a
stream cut short before its manifest, fails the import and leaves the volume marked, so
it is never used half filled.

Extraction goes into a directory no one else writes to, member by member through a
filter: no absolute name, no `..`, nothing written through a link out of the directory,
no hard link to anything outside it, no devices or fifos; modes and owners (numeric) are
kept as the volume had them.

Resuming: an import journals each file it has written whole (`import.journal`, its
digest and size). When a pull breaks off, the next one tells the sender what is already
here (`Import.have`), and the sender leaves out what is unchanged; the manifest still
covers every file, so the finished volume is verified as a whole exactly as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hmac
import io
import json
import os
import shutil
import socket
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from blake3 import blake3

from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError
from dockyard_shim.volumes.model import Kind, VolumeRecord
from dockyard_shim.volumes.splice import SPLICE_MIN, SocketReceiver
from dockyard_shim.volumes.store import IMPORTING, STATE_LABEL, VolumeStore
from dockyard_shim.volumes.transfer import (
    DATA,
    FORMAT,
    KEPT,
    MAC,
    MANIFEST,
    PIECE,
    Sequential,
    TransferStats,
    manifest_mac,
    stats,
)

_STAGING = "import"
_JOURNAL = "import.journal"


def import_volume(store: VolumeStore, name: str, stream: IO[bytes], *,
                  mac_key: bytes = b"") -> TransferStats:
    """Make the local volume `name` from an exported stream; usable only once verified.
    With `mac_key`, the manifest must also carry the sender's HMAC under that key."""
    with prepare_import(store, name) as job:
        return job.receive(stream, mac_key=mac_key)


def prepare_import(store: VolumeStore, name: str, *, resume: bool = False) -> Import:
    """The volume `name`, new or still importing, ready to receive one archive; the caller
    holds it (a context manager) until done. With `resume`, what an earlier attempt wrote
    whole is kept (`Import.have`); otherwise, or when there is none, the import starts
    from nothing."""
    record = store.create(VolumeRecord(name=name, labels={STATE_LABEL: IMPORTING}))
    _check_importing(record)
    base = store.root / name
    journal = os.open(base / _JOURNAL, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                      0o600)
    job = Import(store, record, base / _STAGING, journal)
    try:
        try:
            fcntl.flock(journal, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPreconditionError(
                f"volume {name} is being imported by another pull: wait for it") from None
        _check_importing(store.get(name))  # not finished by whoever held it just before
        if resume:
            job.have.update(_journaled(job.staging, base / _JOURNAL))
        if not job.have:
            shutil.rmtree(job.staging, ignore_errors=True)
            os.ftruncate(journal, 0)
            job.staging.mkdir()
    except BaseException:
        job.close()
        raise
    return job


def _check_importing(record: VolumeRecord) -> None:
    if record.labels.get(STATE_LABEL) != IMPORTING or record.kind is not Kind.LOCAL:
        raise FailedPreconditionError(
            f"volume {record.name} exists already: import into a new one")


@dataclass
class Import:
    """A volume being filled from one archive (`prepare_import`). Its journal, locked
    while this is open, lists each file written whole, so that a later attempt can
    resume."""

    store: VolumeStore
    record: VolumeRecord
    staging: Path
    journal: int
    have: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Files an earlier attempt wrote whole: archive name -> {"blake3", "size"}."""
    kept: set[str] = dataclasses.field(default_factory=set)
    """Those of `have` the sender left out (unchanged there): not received again."""

    def __enter__(self) -> Import:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self.journal >= 0:
            os.close(self.journal)  # and with it the lock
            self.journal = -1

    def receive(self, stream: IO[bytes], *, mac_key: bytes = b"",
                connection: socket.socket | None = None) -> TransferStats:
        """Extract and verify the archive in `stream`, then make the volume usable. When
        `stream` is `connection`'s buffered reader, big files are spliced (`splice`)."""
        seen: dict[str, dict[str, Any]] = {}
        try:
            with contextlib.ExitStack() as stack:
                receiver = None if connection is None else stack.enter_context(
                    SocketReceiver(connection, stream))  # type: ignore[arg-type]
                manifest, raw_manifest, mac = _extract(stream, self, seen, receiver)
        except tarfile.TarError as e:
            raise InvalidArgumentError(f"the volume archive is damaged or cut short: {e}") from e
        _verify(manifest, seen)
        if mac_key and not hmac.compare_digest(mac, manifest_mac(mac_key, raw_manifest)):
            raise InvalidArgumentError(
                "the volume archive is not the sender's: its manifest's HMAC does not match "
                "the shared key (a wrong token, or the data was changed on the way)")
        data = self.store.root / self.record.name / "_data"
        if data.exists() and not any(data.iterdir()):
            data.rmdir()  # the empty one made with the record
        (self.staging / DATA).rename(data)
        self.staging.rmdir()
        (self.staging.parent / _JOURNAL).unlink()
        self.store.put(self.record.with_(labels={
            k: v for k, v in self.record.labels.items() if k != STATE_LABEL}))
        return stats(seen, raw_manifest, self.kept)


def _journaled(staging: Path, journal: Path) -> dict[str, dict[str, Any]]:
    """The journal's files that are still in `staging` at their journaled size."""
    found: dict[str, dict[str, Any]] = {}
    try:
        lines = journal.read_text().splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
            name, size = entry["name"], entry["size"]
            info = (staging / name).lstat()
            if stat.S_ISREG(info.st_mode) and info.st_size == size:
                found[name] = {"blake3": entry["blake3"], "size": size}
        except (ValueError, KeyError, TypeError, OSError):
            continue  # a line cut short by a crash, or a file gone since
    return found


def _extract(stream: IO[bytes], job: Import, seen: dict[str, dict[str, Any]],
             receiver: SocketReceiver | None) -> tuple[dict[str, Any] | None, bytes, str]:
    """Extract the archive's data under the job's staging directory, hashing each file into
    `seen` and journaling it; the manifest (None if it never came), the manifest's bytes
    and its HMAC (or "")."""
    manifest: dict[str, Any] | None = None
    raw_manifest, mac = b"", ""
    staging = job.staging
    timed: list[tarfile.TarInfo] = []  # directories and links, whose times are set last
    source = Sequential(stream)
    # One buffer for the whole archive: a fresh 1 MiB object per piece would cost an mmap
    # and 256 page faults each.
    buffer = memoryview(bytearray(PIECE))
    with tarfile.TarFile(fileobj=source, mode="r", copybufsize=PIECE) as tar:
        for member in tar:
            if member.name == MANIFEST and manifest is None:
                raw_manifest = _member_data(tar, member).read()
                manifest = json.loads(raw_manifest)
                continue
            if member.name == MAC and manifest is not None and not mac:
                mac = _member_data(tar, member).read().decode(errors="replace")
                continue
            if manifest is not None:
                raise InvalidArgumentError("malformed volume archive: data after its manifest")
            if member.name != DATA and not member.name.startswith(f"{DATA}/"):
                raise InvalidArgumentError(
                    f"malformed volume archive: {member.name!r} is outside data/")
            _checked(member, str(staging))
            if job.have:  # an earlier attempt may have left something at this name
                _make_way(staging / member.name, member)
            if member.isreg() and KEPT in member.pax_headers:
                seen[member.name] = _kept(job, member)
                job.kept.add(member.name)
                _finish(staging, member)
            elif member.isreg():
                path = staging / member.name
                seen[member.name] = (
                    _splice_file(path, member, source, receiver)
                    if receiver is not None and member.size >= SPLICE_MIN
                    else _write_file(path, member, source, buffer))
                _finish(staging, member)
                os.write(job.journal, json.dumps({"name": member.name, **seen[member.name]})
                         .encode() + b"\n")
            else:
                tar.extract(member, staging, filter=_checked, numeric_owner=True)
                if member.isdir() or member.issym():
                    timed.append(member)
    # Last, deepest first: what was written in a directory after it was made moved its
    # time, and tarfile leaves a link's own time alone.
    for member in sorted(timed, key=lambda m: m.name.count("/"), reverse=True):
        os.utime(staging / member.name, (member.mtime, member.mtime), follow_symlinks=False)
    return manifest, raw_manifest, mac


def _kept(job: Import, member: tarfile.TarInfo) -> dict[str, Any]:
    """The entry of a file the sender did not send because this node has it."""
    entry = job.have.get(member.name)
    if entry is None or entry["blake3"] != member.pax_headers[KEPT]:
        raise InvalidArgumentError(
            f"malformed volume archive: {member.name!r} was left out as already here, "
            "but this node does not have it")
    return entry


def _make_way(path: Path, member: tarfile.TarInfo) -> None:
    """Clear what an earlier attempt left at `path`, unless it is a directory that stays
    one, or the file the sender left out because it is here."""
    if KEPT in member.pax_headers:
        return
    try:
        if path.is_dir() and not path.is_symlink():
            if not member.isdir():
                shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _member_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    data = tar.extractfile(member)
    if data is None:
        raise InvalidArgumentError(f"volume archive member {member.name!r} has no data")
    return data


def _checked(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo:
    """`member` as it is, if it may be extracted under `destination`."""
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise InvalidArgumentError(
            f"volume archive member {member.name!r} is a device or fifo: not volume data")
    link = member.linkname
    if member.islnk() and (link.startswith("/") or ".." in link.split("/")
                           or not link.startswith(f"{DATA}/")):
        raise InvalidArgumentError(
            f"volume archive member {member.name!r} is a hard link out of the volume")
    try:
        tarfile.tar_filter(member, destination)  # raises for names that would land outside
    except tarfile.FilterError as e:
        raise InvalidArgumentError(f"volume archive member {member.name!r}: {e}") from None
    return member  # modes and owners as the volume had them


def _write_file(path: Path, member: tarfile.TarInfo, source: Sequential,
                buffer: memoryview) -> dict[str, Any]:
    """Write a regular file's data from where it lies in the stream, hashing it on the way
    (one copy: from the stream into `buffer`, then to the file); its digest and size.

    On one thread: a writer thread that wrote one piece while the next arrived made a
    1 GiB pull a third slower on two CPUs, where the sending shim needs the other one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source.seek(member.offset_data)
    digest, left = blake3(), member.size
    with open(path, "xb", buffering=0) as out:
        while left:
            count = source.readinto(buffer[:min(left, len(buffer))])
            if not count:
                raise InvalidArgumentError("the volume archive ends inside a file: it was "
                                           "cut short; export again")
            digest.update(buffer[:count])
            _write_all(out, buffer[:count])
            left -= count
    return {"blake3": digest.hexdigest(), "size": member.size}


def _splice_file(path: Path, member: tarfile.TarInfo, source: Sequential,
                 receiver: SocketReceiver) -> dict[str, Any]:
    """`_write_file` for a file that arrives on a socket: spliced into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source.seek(member.offset_data)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        digest = receiver.receive(source, fd, member.size)
    finally:
        os.close(fd)
    return {"blake3": digest, "size": member.size}


def _write_all(out: io.FileIO, data: memoryview) -> None:
    written = 0
    while written < len(data):  # an unbuffered write may take less than it is given
        written += out.write(data[written:]) or 0


def _finish(staging: Path, member: tarfile.TarInfo) -> None:
    """Owner, mode and times of an extracted regular file, as tarfile would set them."""
    path = staging / member.name
    os.chown(path, member.uid, member.gid)
    os.chmod(path, member.mode)
    os.utime(path, (member.mtime, member.mtime))


def _verify(manifest: dict[str, Any] | None, seen: dict[str, dict[str, Any]]) -> None:
    if manifest is None:
        raise InvalidArgumentError(
            "the volume archive ends before its manifest: it was cut short; export again")
    if manifest.get("format") != FORMAT:
        raise InvalidArgumentError(f"volume archive format {manifest.get('format')!r} is not "
                                   f"{FORMAT}: export it with this dockyard")
    expected: dict[str, dict[str, Any]] = manifest.get("files") or {}
    wrong = sorted(name for name in set(expected) | set(seen)
                   if expected.get(name) != seen.get(name))
    if wrong:
        raise InvalidArgumentError(
            f"the volume archive does not match its manifest ({', '.join(wrong[:5])}): it "
            "was damaged or changed; export it again")
