"""A volume's data as one verifiable stream: export, and import into a new volume.

The stream is a PAX tar: the volume's tree under `data/` (regular files, directories,
symlinks, hard links, with modes, owners and times), then `manifest.json`, last, with the
BLAKE3 digest and size of every regular file. Export hashes each file as it streams it, so the
data is read once. Import writes into a volume that is not usable yet (labelled
`dockyard.dev/state: importing`, refused by `VolumeStore.source`), hashes as it writes,
and checks the manifest at the end: a missing, extra, changed or truncated file, or a
stream cut short before its manifest, fails the import and leaves the volume marked, so
it is never used half filled. Remove it and import again.

Extraction goes into a directory no one else writes to, member by member through a
filter: no absolute name, no `..`, nothing written through a link out of the directory,
no hard link to anything outside it, no devices or fifos; modes and owners (numeric) are
kept as the volume had them.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import shutil
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from blake3 import blake3

from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError
from dockyard_shim.volumes.model import Kind, VolumeRecord
from dockyard_shim.volumes.store import IMPORTING, STATE_LABEL, VolumeStore

_DATA = "data"
_MANIFEST = "manifest.json"
_MAC = "manifest.hmac"
_FORMAT = 2  # 1 had SHA-256 digests
PIECE = 1 << 20
"""The export's pieces (and the import's reads): big enough that per-piece costs vanish."""


@dataclass(frozen=True)
class TransferStats:
    files: int
    bytes: int
    digest: str
    """sha256 of the manifest: one value that names the whole content."""


class _Hashing:
    """Reads through to `raw`, hashing what passes (BLAKE3): what tarfile copies from.

    Each read fills the same buffer and hands out a view of it (the writer is done with
    the previous one by then): a fresh 1 MiB object per read would cost an mmap and 256
    page faults each."""

    def __init__(self, raw: io.FileIO, buffer: bytearray) -> None:
        self._raw = raw
        self._buffer = memoryview(buffer)
        self.hash = blake3()
        self.size = 0

    def read(self, size: int) -> memoryview:
        view = self._buffer[:min(size, len(self._buffer))]
        count = self._raw.readinto(view) or 0
        self.hash.update(view[:count])
        self.size += count
        return view[:count]


class _Sequential(io.RawIOBase):
    """A stream TarFile can use without its stream mode, whose buffer copies every byte
    again: it knows its position, and seeks only forward (by reading and dropping), which
    is all a first-to-last walk through an archive needs."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._position = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._raw.write(data)
        self._position += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._position += len(data)
        return data

    def readinto(self, target: memoryview) -> int:  # type: ignore[override]
        count = self._raw.readinto(target)  # type: ignore[attr-defined]
        self._position += count or 0
        return count or 0

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence == io.SEEK_END or target < self._position:
            raise io.UnsupportedOperation("a volume archive is read once, first to last")
        while self._position < target:
            if not self.read(min(target - self._position, PIECE)):
                break  # the end: the next header read finds it
        return self._position


def export_volume(source: Path, out: IO[bytes], *, mac_key: bytes = b"") -> TransferStats:
    """Write the tree at `source` (a volume's data directory) to `out`. With `mac_key`,
    `manifest.hmac` follows the manifest: its HMAC-SHA256 under that key, which proves the
    content to a receiver who shares the key (`remote`)."""
    files: dict[str, dict[str, Any]] = {}
    buffer = bytearray(PIECE)
    with tarfile.TarFile(fileobj=_Sequential(out), mode="w", format=tarfile.PAX_FORMAT,
                         copybufsize=PIECE) as tar:
        tar.add(source, arcname=_DATA, recursive=False)
        for directory, dirs, names in os.walk(source):
            dirs.sort()
            for name in sorted(dirs) + sorted(names):
                path = os.path.join(directory, name)
                arcname = f"{_DATA}/{os.path.relpath(path, source)}"
                info = tar.gettarinfo(path, arcname)
                if info.isreg():
                    with open(path, "rb", buffering=0) as f:
                        reader = _Hashing(f, buffer)
                        tar.addfile(info, reader)  # type: ignore[arg-type]
                    files[arcname] = {"blake3": reader.hash.hexdigest(), "size": reader.size}
                elif info.isdir() or info.issym() or info.islnk():
                    tar.addfile(info)
                # sockets, fifos and devices are not data: left out
        manifest = json.dumps({"format": _FORMAT, "files": files}, sort_keys=True).encode()
        _add_bytes(tar, _MANIFEST, manifest)
        if mac_key:
            _add_bytes(tar, _MAC, _mac(mac_key, manifest).encode())
    return _stats(files, manifest)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _mac(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def import_volume(store: VolumeStore, name: str, stream: IO[bytes], *,
                  mac_key: bytes = b"") -> TransferStats:
    """Make the local volume `name` from an exported stream; usable only once verified.
    With `mac_key`, the manifest must also carry the sender's HMAC under that key."""
    record = store.create(VolumeRecord(name=name, labels={STATE_LABEL: IMPORTING}))
    if record.labels.get(STATE_LABEL) != IMPORTING or record.kind is not Kind.LOCAL:
        raise FailedPreconditionError(f"volume {name} exists already: import into a new one")
    staging = store.root / name / "import"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    seen: dict[str, dict[str, Any]] = {}
    try:
        manifest, raw_manifest, mac = _extract(stream, staging, seen)
    except tarfile.TarError as e:
        raise InvalidArgumentError(f"the volume archive is damaged or cut short: {e}") from e
    _verify(manifest, seen)
    if mac_key and not hmac.compare_digest(mac, _mac(mac_key, raw_manifest)):
        raise InvalidArgumentError(
            "the volume archive is not the sender's: its manifest's HMAC does not match the "
            "shared key (a wrong token, or the data was changed on the way)")
    data = store.root / name / "_data"
    if data.exists() and not any(data.iterdir()):
        data.rmdir()  # the empty one made with the record
    (staging / _DATA).rename(data)
    staging.rmdir()
    store.put(record.with_(labels={k: v for k, v in record.labels.items()
                                   if k != STATE_LABEL}))
    return _stats(seen, raw_manifest)


def _extract(stream: IO[bytes], staging: Path, seen: dict[str, dict[str, Any]]
             ) -> tuple[dict[str, Any] | None, bytes, str]:
    """Extract the archive's data under `staging`, hashing each file into `seen`; its
    manifest (None if it never came), the manifest's bytes and its HMAC (or "")."""
    manifest: dict[str, Any] | None = None
    raw_manifest, mac = b"", ""
    timed: list[tarfile.TarInfo] = []  # directories and links, whose times are set last
    source = _Sequential(stream)
    # One writer thread and two buffers for the whole archive: one buffer fills while the
    # other goes to disk (`_write_file`).
    disk = _Disk(ThreadPoolExecutor(1), (memoryview(bytearray(PIECE)),
                                         memoryview(bytearray(PIECE))))
    with disk.writer, tarfile.TarFile(fileobj=source, mode="r", copybufsize=PIECE) as tar:
        for member in tar:
            if member.name == _MANIFEST and manifest is None:
                raw_manifest = _member_data(tar, member).read()
                manifest = json.loads(raw_manifest)
                continue
            if member.name == _MAC and manifest is not None and not mac:
                mac = _member_data(tar, member).read().decode(errors="replace")
                continue
            if manifest is not None:
                raise InvalidArgumentError("malformed volume archive: data after its manifest")
            if member.name != _DATA and not member.name.startswith(f"{_DATA}/"):
                raise InvalidArgumentError(
                    f"malformed volume archive: {member.name!r} is outside data/")
            if member.isreg():
                _checked(member, str(staging))
                seen[member.name] = _write_file(staging / member.name, member, source, disk)
                _finish(staging, member)
            else:
                tar.extract(member, staging, filter=_checked, numeric_owner=True)
                if member.isdir() or member.issym():
                    timed.append(member)
    # Last, deepest first: what was written in a directory after it was made moved its
    # time, and tarfile leaves a link's own time alone.
    for member in sorted(timed, key=lambda m: m.name.count("/"), reverse=True):
        os.utime(staging / member.name, (member.mtime, member.mtime), follow_symlinks=False)
    return manifest, raw_manifest, mac


def _stats(files: dict[str, dict[str, Any]], manifest: bytes) -> TransferStats:
    return TransferStats(len(files), sum(f["size"] for f in files.values()),
                         hashlib.sha256(manifest).hexdigest())


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
                           or not link.startswith(f"{_DATA}/")):
        raise InvalidArgumentError(
            f"volume archive member {member.name!r} is a hard link out of the volume")
    try:
        tarfile.tar_filter(member, destination)  # raises for names that would land outside
    except tarfile.FilterError as e:
        raise InvalidArgumentError(f"volume archive member {member.name!r}: {e}") from None
    return member  # modes and owners as the volume had them


@dataclass(frozen=True)
class _Disk:
    """How an import writes files: a thread, and the two buffers it alternates."""

    writer: ThreadPoolExecutor
    buffers: tuple[memoryview, memoryview]


def _write_file(path: Path, member: tarfile.TarInfo, source: _Sequential,
                disk: _Disk) -> dict[str, Any]:
    """Write a regular file's data from where it lies in the stream, hashing it on the way
    (one copy: straight from the stream to the file); its digest and size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source.seek(member.offset_data)
    digest, left = blake3(), member.size
    buffers, writer = disk.buffers, disk.writer
    with open(path, "xb", buffering=0) as out:
        writing: Future[None] | None = None  # the last piece goes to disk meanwhile
        turn = 0
        try:
            while left:
                buffer = buffers[turn]
                count = source.readinto(buffer[:min(left, len(buffer))])
                if not count:
                    raise InvalidArgumentError("the volume archive ends inside a file: it "
                                               "was cut short; export again")
                digest.update(buffer[:count])
                if writing is not None:
                    writing.result()
                writing = writer.submit(_write_all, out, buffer[:count])
                left -= count
                turn ^= 1
        finally:  # the file closes only once its last piece is written (or failed)
            if writing is not None:
                wait([writing])
        if writing is not None:
            writing.result()
    return {"blake3": digest.hexdigest(), "size": member.size}


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
    if manifest.get("format") != _FORMAT:
        raise InvalidArgumentError(f"volume archive format {manifest.get('format')!r} is not "
                                   f"{_FORMAT}: export it with this dockyard")
    expected: dict[str, dict[str, Any]] = manifest.get("files") or {}
    wrong = sorted(name for name in set(expected) | set(seen)
                   if expected.get(name) != seen.get(name))
    if wrong:
        raise InvalidArgumentError(
            f"the volume archive does not match its manifest ({', '.join(wrong[:5])}): it "
            "was damaged or changed; export it again")
