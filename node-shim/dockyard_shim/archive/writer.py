"""Writing an overlay upper dir as an OCI layer tar: what `docker commit` stores.

The reverse of `apply`: an overlay whiteout (a 0/0 character device) becomes an empty
`.wh.NAME` file and an opaque directory (trusted.overlay.opaque="y") gets a
`.wh..wh..opq` entry right after it, as the OCI image-spec writes them. Symbolic links are
stored as links, never followed; files with several names in the upper dir are stored
once and linked (hard links); modes, owners, mtimes and extended attributes (in PAX
`SCHILY.xattr.*` records) are kept, except overlayfs's own `trusted.overlay.*`.

Entries come in a stable order (a directory, then its entries by name), so the same tree
gives the same bytes and the same digest. The tar is written uncompressed: its digest is
the layer's diff id.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from dockyard_shim.archive.apply import OPAQUE_MARKER, WHITEOUT_PREFIX
from dockyard_shim.snapshots.changes import OPAQUE_XATTR

_OVERLAY_XATTRS = "trusted.overlay."


class _Hashing:
    """A write-only file that also hashes and counts what goes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out, self.sha256, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._out.write(data)


def write_layer(upper: Path, out: IO[bytes]) -> tuple[str, int]:
    """Write `upper` as a layer tar to `out`; the tar's digest (`sha256:…`) and size."""
    sink = _Hashing(out)
    links: dict[tuple[int, int], str] = {}  # (dev, inode) -> first name, for hard links
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding="utf-8", errors="surrogateescape") as tar:
        for name, path, info in _walk(upper):
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:  # a whiteout
                tar.addfile(_whiteout(name, info))
                continue
            entry = _entry(name, path, info, links)
            if entry.isreg():
                with open(path, "rb") as data:
                    tar.addfile(entry, data)
            else:
                tar.addfile(entry)
            if entry.isdir() and _xattr(path, OPAQUE_XATTR) == b"y":
                tar.addfile(_whiteout(f"{name}/{OPAQUE_MARKER}", info, opaque=True))
    return f"sha256:{sink.sha256.hexdigest()}", sink.size


def _walk(top: Path) -> Iterator[tuple[str, str, os.stat_result]]:
    """(tar name, host path, lstat) for everything under `top`, each directory before
    what it holds, names in byte order."""
    stack = [(os.fsencode(top), b"")]
    while stack:
        directory, prefix = stack.pop()
        names = sorted(os.listdir(directory))
        children = []
        for raw in names:
            path = os.path.join(directory, raw)
            name = prefix + raw
            info = os.lstat(path)
            yield (os.fsdecode(name), os.fsdecode(path), info)
            if stat.S_ISDIR(info.st_mode):
                children.append((path, name + b"/"))
        stack.extend(reversed(children))


def _entry(name: str, path: str, info: os.stat_result,
           links: dict[tuple[int, int], str]) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.mode = stat.S_IMODE(info.st_mode)
    entry.uid, entry.gid = info.st_uid, info.st_gid
    entry.mtime = int(info.st_mtime)
    mode = info.st_mode
    if stat.S_ISREG(mode) and info.st_nlink > 1:
        first = links.setdefault((info.st_dev, info.st_ino), name)
        if first != name:
            entry.type, entry.linkname = tarfile.LNKTYPE, first
            return entry
    if stat.S_ISREG(mode):
        entry.type, entry.size = tarfile.REGTYPE, info.st_size
    elif stat.S_ISDIR(mode):
        entry.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        entry.type, entry.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISFIFO(mode):
        entry.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        entry.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        entry.devmajor, entry.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
    else:
        raise ValueError(f"{path}: a socket cannot be stored in a layer")
    entry.pax_headers = {f"SCHILY.xattr.{key}": value.decode("utf-8", "surrogateescape")
                         for key, value in _xattrs(path).items()}
    return entry


def _whiteout(name: str, info: os.stat_result, *, opaque: bool = False) -> tarfile.TarInfo:
    if not opaque:
        folder, _, base = name.rpartition("/")
        name = f"{folder}/{WHITEOUT_PREFIX}{base}" if folder else f"{WHITEOUT_PREFIX}{base}"
    entry = tarfile.TarInfo(name)
    entry.type, entry.mode, entry.mtime = tarfile.REGTYPE, 0o600, int(info.st_mtime)
    return entry


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for key in names:
        if key.startswith(_OVERLAY_XATTRS):
            continue
        value = _xattr(path, key)
        if value is not None:
            found[key] = value
    return found


def _xattr(path: str, key: str) -> bytes | None:
    try:
        return os.getxattr(path, key, follow_symlinks=False)
    except OSError:
        return None
