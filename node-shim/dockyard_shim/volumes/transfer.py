"""A volume's data as one verifiable stream: the format, and export.

The stream is a PAX tar: the volume's tree under `data/` (regular files, directories,
symlinks, hard links, with modes, owners and times), then `manifest.json`, last, with the
BLAKE3 digest and size of every regular file. Export hashes each file as it streams it,
so the data is read once. Import (`importing`) writes into a volume that is not usable
yet, hashes as it writes, and checks the manifest at the end.

Resuming: a receiver may list the files it has already (`export_volume(have=...)`); the
sender hashes those and, for each that is unchanged, sends only its header, marked
`DOCKYARD.kept` with the digest. The manifest still lists every file.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from blake3 import blake3

DATA = "data"
MANIFEST = "manifest.json"
MAC = "manifest.hmac"
KEPT = "DOCKYARD.kept"
"""PAX header of a file the receiver has already: its BLAKE3 digest; no data follows."""
FORMAT = 2  # 1 had SHA-256 digests
PIECE = 1 << 20
"""The export's pieces (and the import's reads): big enough that per-piece costs vanish."""


@dataclass(frozen=True)
class TransferStats:
    files: int
    bytes: int
    digest: str
    """sha256 of the manifest: one value that names the whole content."""
    kept_files: int = 0
    kept_bytes: int = 0
    """What a resumed import did not receive again: an earlier attempt had written it."""


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


class Sequential(io.RawIOBase):
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

    def consumed(self, count: int) -> None:
        """`count` bytes of the underlying stream were read by other means (`splice`)."""
        self._position += count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset
        if whence == io.SEEK_END or target < self._position:
            raise io.UnsupportedOperation("a volume archive is read once, first to last")
        while self._position < target:
            if not self.read(min(target - self._position, PIECE)):
                break  # the end: the next header read finds it
        return self._position


def export_volume(source: Path, out: IO[bytes], *, mac_key: bytes = b"",
                  have: Mapping[str, str] | None = None) -> TransferStats:
    """Write the tree at `source` (a volume's data directory) to `out`. With `mac_key`,
    `manifest.hmac` follows the manifest: its HMAC-SHA256 under that key, which proves the
    content to a receiver who shares the key (`remote`). `have` names files the receiver
    has already (archive name -> BLAKE3 digest): those still unchanged are not sent."""
    files: dict[str, dict[str, Any]] = {}
    have = have or {}
    kept: set[str] = set()
    buffer = bytearray(PIECE)
    with tarfile.TarFile(fileobj=Sequential(out), mode="w", format=tarfile.PAX_FORMAT,
                         copybufsize=PIECE) as tar:
        tar.add(source, arcname=DATA, recursive=False)
        for directory, dirs, names in os.walk(source):
            dirs.sort()
            for name in sorted(dirs) + sorted(names):
                path = os.path.join(directory, name)
                arcname = f"{DATA}/{os.path.relpath(path, source)}"
                info = tar.gettarinfo(path, arcname)
                if info.isreg() and arcname in have and _digest(path, buffer) == have[arcname]:
                    files[arcname] = {"blake3": have[arcname], "size": info.size}
                    info.size, info.pax_headers = 0, {KEPT: have[arcname]}
                    tar.addfile(info)
                    kept.add(arcname)
                elif info.isreg():
                    with open(path, "rb", buffering=0) as f:
                        reader = _Hashing(f, buffer)
                        tar.addfile(info, reader)  # type: ignore[arg-type]
                    files[arcname] = {"blake3": reader.hash.hexdigest(), "size": reader.size}
                elif info.isdir() or info.issym() or info.islnk():
                    tar.addfile(info)
                # sockets, fifos and devices are not data: left out
        manifest = json.dumps({"format": FORMAT, "files": files}, sort_keys=True).encode()
        _add_bytes(tar, MANIFEST, manifest)
        if mac_key:
            _add_bytes(tar, MAC, manifest_mac(mac_key, manifest).encode())
    return stats(files, manifest, kept)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def manifest_mac(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def _digest(path: str, buffer: bytearray) -> str:
    """The BLAKE3 digest of the file at `path`."""
    with open(path, "rb", buffering=0) as f:
        reader = _Hashing(f, buffer)
        while reader.read(PIECE):
            pass
    return reader.hash.hexdigest()


def stats(files: dict[str, dict[str, Any]], manifest: bytes, kept: set[str]
           ) -> TransferStats:
    return TransferStats(len(files), sum(f["size"] for f in files.values()),
                         hashlib.sha256(manifest).hexdigest(), len(kept),
                         sum(files[name]["size"] for name in kept))


