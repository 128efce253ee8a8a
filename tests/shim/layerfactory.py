"""Build image layers in memory for tests: well-formed ones, and the hostile ones we refuse.

A layer is a list of entries, written in order by `tarfile`:

    blob = layer(Dir("etc"), File("etc/hosts", b"127.0.0.1 localhost\\n"),
                 Symlink("bin", "usr/bin"), Hardlink("etc/hosts.allow", "etc/hosts"),
                 Whiteout("etc/motd"), Opaque("var/cache"), compress="gzip")

Entries: `File`, `Dir`, `Symlink`, `Hardlink`, `Whiteout` (the `.wh.` marker for a path),
`Opaque` (the `.wh..wh..opq` marker inside a directory), `Device` (char or block), `Fifo`,
and `Raw` (any `tarfile.TarInfo` with data, for whatever the others cannot say). Names are
written exactly as given: absolute names, `..` and other nonsense go through untouched,
which is the point. `xattrs` become PAX `SCHILY.xattr.*` records (values may be any bytes).

For streams `tarfile` refuses to write, `ustar_block` and `pax_block` build raw headers
(checksum included) and `END` is the end-of-archive marker; `gzip_of` compresses and
`zeros_gzip` compresses a huge run of zeros without ever holding it in memory.

`HostSnapshot` records a directory tree (types, modes, sizes, times, contents of small
files) so a test can assert that applying a layer changed nothing outside its root.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MTIME = 1_700_000_000
END = bytes(1024)
BLOCK = 512


@dataclass(frozen=True)
class File:
    name: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = MTIME
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Dir:
    name: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: float = MTIME
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Symlink:
    name: str
    target: str
    uid: int = 0
    gid: int = 0
    mtime: float = MTIME


@dataclass(frozen=True)
class Hardlink:
    name: str
    target: str


@dataclass(frozen=True)
class Whiteout:
    """The marker that deletes `path` from the layers below: `dir/.wh.base`."""

    path: str

    @property
    def name(self) -> str:
        head, _, base = self.path.rpartition("/")
        return f"{head}/.wh.{base}" if head else f".wh.{base}"


@dataclass(frozen=True)
class Opaque:
    """The marker that hides everything the layers below have in `directory`."""

    directory: str

    @property
    def name(self) -> str:
        return f"{self.directory.rstrip('/')}/.wh..wh..opq" if self.directory else ".wh..wh..opq"


@dataclass(frozen=True)
class Device:
    name: str
    kind: str = "char"  # or "block"
    major: int = 1
    minor: int = 3


@dataclass(frozen=True)
class Fifo:
    name: str
    mode: int = 0o644


@dataclass(frozen=True)
class Raw:
    info: tarfile.TarInfo
    data: bytes = b""


Entry = File | Dir | Symlink | Hardlink | Whiteout | Opaque | Device | Fifo | Raw


def _xattr_records(xattrs: Mapping[str, bytes]) -> dict[str, str]:
    # tarfile takes str values; surrogateescape makes it write the exact bytes (hdrcharset)
    return {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}


def tarinfo(entry: Entry) -> tuple[tarfile.TarInfo, bytes]:
    """The header and data `entry` is written as."""
    if isinstance(entry, Raw):
        return entry.info, entry.data
    info = tarfile.TarInfo(entry.name)
    info.mtime = MTIME
    data = b""
    if isinstance(entry, File):
        info.size, info.mode, data = len(entry.data), entry.mode, entry.data
    elif isinstance(entry, Dir):
        info.type, info.mode = tarfile.DIRTYPE, entry.mode
    elif isinstance(entry, Symlink):
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
    elif isinstance(entry, Hardlink):
        info.type, info.linkname, info.mode = tarfile.LNKTYPE, entry.target, 0o644
    elif isinstance(entry, Device):
        info.type = tarfile.CHRTYPE if entry.kind == "char" else tarfile.BLKTYPE
        info.devmajor, info.devminor, info.mode = entry.major, entry.minor, 0o666
    elif isinstance(entry, Fifo):
        info.type, info.mode = tarfile.FIFOTYPE, entry.mode
    if isinstance(entry, File | Dir | Symlink):
        info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
    if isinstance(entry, File | Dir) and entry.xattrs:
        info.pax_headers = _xattr_records(entry.xattrs)
    return info, data


def tar_of(*entries: Entry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """The plain tar stream of `entries`, end-of-archive marker and padding included."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for entry in entries:
            info, data = tarinfo(entry)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def gzip_of(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def layer(*entries: Entry, compress: str | None = None, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A layer blob: the tar of `entries`, gzip-compressed when `compress="gzip"`."""
    raw = tar_of(*entries, fmt=fmt)
    return gzip_of(raw) if compress == "gzip" else raw


def ustar_block(name: bytes | str, *, typeflag: bytes = b"0", size: int = 0, mode: int = 0o644,
                linkname: bytes | str = b"", magic: bytes = b"ustar\x0000",
                size_field: bytes | None = None) -> bytes:
    """One raw POSIX ustar header block with a correct checksum, for hand-made streams."""
    def enc(value: bytes | str) -> bytes:
        return value.encode() if isinstance(value, str) else value

    def octal(value: int, width: int) -> bytes:
        return f"{value:0{width - 1}o}".encode() + b"\0"

    block = bytearray(BLOCK)
    block[0:100] = enc(name)[:100].ljust(100, b"\0")
    block[100:108] = octal(mode, 8)
    block[108:116] = octal(0, 8)
    block[116:124] = octal(0, 8)
    block[124:136] = size_field if size_field is not None else octal(size, 12)
    block[136:148] = octal(MTIME, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157:257] = enc(linkname)[:100].ljust(100, b"\0")
    block[257:265] = magic
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def pax_record(keyword: bytes, value: bytes) -> bytes:
    body = b" " + keyword + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def pax_block(records: Mapping[bytes, bytes] | bytes, *, typeflag: bytes = b"x") -> bytes:
    """A PAX extended header ('x', or 'g' for global) carrying `records`, data included.

    Pass bytes instead of a mapping to write a malformed record area as is.
    """
    data = records if isinstance(records, bytes) else b"".join(
        pax_record(k, v) for k, v in records.items())
    return ustar_block(b"././@PaxHeader", typeflag=typeflag, size=len(data)) + padded(data)


def zeros_gzip(header: bytes, count: int, trailer: bytes = END) -> bytes:
    """gzip of `header`, then `count` zero bytes, then `trailer`: a bomb, built in chunks."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(header)]
    chunk = bytes(1 << 20)
    left = count
    while left:
        piece = chunk[:min(left, len(chunk))]
        out.append(packer.compress(piece))
        left -= len(piece)
    out.append(packer.compress(trailer))
    out.append(packer.flush())
    return b"".join(out)


@dataclass(frozen=True)
class HostSnapshot:
    """The state of every path under `top` except those under `skip`."""

    top: Path
    skip: Path
    state: Mapping[str, tuple[int, ...] | bytes]

    @classmethod
    def take(cls, top: Path, skip: Path) -> HostSnapshot:
        state: dict[str, tuple[int, ...] | bytes] = {}
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if here / d != skip]
            for name in [*dirnames, *filenames, "."]:
                path = here / name
                st = path.lstat()
                key = str(path.relative_to(top))
                state[key] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                              st.st_nlink)
                if path.is_file() and not path.is_symlink() and st.st_size < 1 << 16:
                    state[key + "#content"] = path.read_bytes()
        return cls(top, skip, state)

    def assert_unchanged(self) -> None:
        now = HostSnapshot.take(self.top, self.skip)
        added = sorted(set(now.state) - set(self.state))
        removed = sorted(set(self.state) - set(now.state))
        changed = sorted(k for k in set(now.state) & set(self.state)
                         if now.state[k] != self.state[k])
        assert (added, removed, changed) == ([], [], []), "the host outside the root changed"
