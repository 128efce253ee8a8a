"""A strict, streaming reader of tar headers: ustar, GNU long names and PAX, nothing more.

We parse headers ourselves instead of with `tarfile` because a layer is hostile input and
`tarfile` is built for convenience: it keeps every member in a list (memory grows with the
entry count), treats a corrupt header after the first as a quiet end of the archive (a
truncated layer would apply "successfully"), ignores data after the end marker (a second
archive appended to the first would be invisible to us but not to other tools), reads a PAX
header of any declared size into memory, and parses PAX records with regular expressions that
take quadratic time on crafted input (CVE-2024-6232). Here every header is checked before it
is believed: checksum, format magic, octal or base-256 numbers, PAX records by their exact
lengths, and limits on everything that costs memory.

What it understands: regular files ('0', '\\0', '7'), hard links, symlinks, character and
block devices, directories, fifos, GNU long names and link names ('L', 'K'), PAX extended
headers ('x', and Solaris 'X'). Global headers ('g') are checked and then ignored, as Go's
archive/tar (so Docker and containerd) ignores them: a layer must mean the same tree to us
as to them, and `git archive` only puts a comment there. Refused: sparse files (GNU 'S' and
PAX GNU.sparse.*: the OCI layer spec says layers should not use them, and their maps cost
memory proportional to the input), multi-volume and every other type, data blocks on
entries that carry none, a stream without its end-of-archive marker, and anything but zeros
after that marker (at most `_MAX_PADDING` of them).

Reads its input strictly sequentially; no filesystem access.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from dockyard_shim.archive.limits import Limits, MiB
from dockyard_shim.errors import InvalidArgumentError

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_MAX_PADDING = 1 * MiB  # tar pads to its record size (10 KiB by default); 1 MiB is generous
_XATTR_PREFIX = "SCHILY.xattr."
_INT = re.compile(rb"[0-9]{1,20}")
_TIME = re.compile(rb"(-?)([0-9]{1,20})(?:\.([0-9]{1,30}))?")


class Source(Protocol):
    """What the reader reads from: exact reads, short only at the end of the stream."""

    def read(self, size: int) -> bytes: ...


class Kind(enum.Enum):
    FILE = "regular file"
    HARDLINK = "hardlink"
    SYMLINK = "symlink"
    CHAR = "character device"
    BLOCK = "block device"
    DIR = "directory"
    FIFO = "fifo"


_KINDS = {b"0": Kind.FILE, b"\0": Kind.FILE, b"7": Kind.FILE, b"1": Kind.HARDLINK,
          b"2": Kind.SYMLINK, b"3": Kind.CHAR, b"4": Kind.BLOCK, b"5": Kind.DIR,
          b"6": Kind.FIFO}
_EXTENSIONS = (b"x", b"X", b"g", b"L", b"K")


@dataclass(frozen=True)
class Header:
    """One archive entry as the archive states it. Names are not validated here."""

    name: str  # bytes decoded as UTF-8 with surrogateescape: os functions give the bytes back
    kind: Kind
    size: int
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    mtime_ns: int
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)  # SCHILY.xattr.*, unfiltered


def _refuse(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"malformed layer: {message}")


def _number(raw: bytes, what: str, *, signed: bool = False) -> int:
    if raw[0] & 0x80:  # GNU base-256, for what octal cannot hold (uid > 2^21, size > 8 GiB)
        if raw[0] & 0x40:
            if not signed:
                raise _refuse(f"the {what} field is negative")
            # Two's complement over the whole field, as GNU tar writes a time before 1970
            # and Go's archive/tar (so Docker) reads it.
            return int.from_bytes(raw, "big", signed=True)
        return int.from_bytes(bytes([raw[0] & 0x3F]) + raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if text.strip(b"01234567"):
        raise _refuse(f"the {what} field {text!r} is not an octal number")
    return int(text, 8)


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156], "checksum")
    except InvalidArgumentError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    rest = block[:148] + block[156:]  # some old tars summed signed chars
    high = len(rest.translate(None, bytes(range(0x80))))
    return stored == unsigned - 256 * high


def _parse_pax(data: bytes) -> dict[str, bytes]:
    """PAX records, "<length> <keyword>=<value>\\n", parsed by length in linear time."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 21)
        if space <= pos or not _INT.fullmatch(data, pos, space):
            raise _refuse("a PAX record does not start with its length")
        end = pos + int(data[pos:space])
        if end <= space + 2 or end > len(data) or data[end - 1] != 0x0A:
            raise _refuse("a PAX record's length does not match its content")
        keyword, equals, value = data[space + 1:end - 1].partition(b"=")
        if not equals or not keyword:
            raise _refuse("a PAX record has no keyword")
        try:
            records[keyword.decode("utf-8")] = value
        except UnicodeDecodeError:
            raise _refuse(f"the PAX keyword {keyword!r} is not UTF-8") from None
        pos = end
    return records


def _pax_int(records: Mapping[str, bytes], key: str, default: int) -> int:
    if key not in records:
        return default
    if not _INT.fullmatch(records[key]):
        raise _refuse(f"the PAX {key} {records[key][:40]!r} is not a decimal number")
    return int(records[key])


def _pax_time_ns(value: bytes) -> int:
    match = _TIME.fullmatch(value)
    if match is None:
        raise _refuse(f"the PAX mtime {value[:40]!r} is not a decimal time")
    sign, seconds, fraction = match.groups()
    ns = int(seconds) * 10**9 + int((fraction or b"0")[:9].ljust(9, b"0"))
    return -ns if sign else ns


@dataclass
class _Pending:
    """Extended headers read so far for the coming entry, and the bytes they may still use."""

    budget: int
    records: dict[str, bytes] = field(default_factory=dict)
    long_name: bytes = b""
    long_link: bytes = b""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class TarReader:
    """Yields the entries of a tar stream one by one, with their data read on demand.

    Enforces `max_entries`, `max_bytes` (declared sizes of regular files, checked when the
    header is read, before any data) and `max_header_bytes`. When `next()` returns None the
    whole stream has been read and checked, so a hash taken by the source is complete.
    """

    def __init__(self, source: Source, limits: Limits) -> None:
        self._src = source
        self._limits = limits
        self._remaining = 0  # data of the current entry not read yet
        self._padding = 0  # zeros after it, up to the next block boundary
        self.entries = 0
        self.data_bytes = 0
        self.offset = 0  # of the next byte we read, in the uncompressed stream

    def _read(self, size: int) -> bytes:
        data = self._src.read(size)
        self.offset += len(data)
        if len(data) < size:
            raise _refuse(f"the tar stream is truncated at byte {self.offset}")
        return data

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of the current entry's data; b"" when it is all read."""
        size = min(size, self._remaining)
        if size <= 0:
            return b""
        data = self._read(size)
        self._remaining -= size
        return data

    def _skip(self) -> None:
        left = self._remaining + self._padding
        while left:
            left -= len(self._read(min(left, MiB)))
        self._remaining = self._padding = 0

    def _block(self) -> bytes | None:
        data = self._src.read(BLOCK)
        self.offset += len(data)
        if not data:
            return None
        if len(data) < BLOCK:
            raise _refuse(f"the tar stream is truncated at byte {self.offset}")
        return data

    def next(self) -> Header | None:
        """The next entry, its data ready to `read`; None after a checked end of archive."""
        self._skip()
        pending = _Pending(self._limits.max_header_bytes)
        while True:
            at = self.offset
            block = self._block()
            if block is None:
                raise _refuse("the tar stream ends without its end-of-archive marker "
                              "(truncated?)")
            if block == _ZERO_BLOCK:
                if pending.records or pending.long_name or pending.long_link:
                    raise _refuse("an extended header is not followed by an entry")
                self._finish()
                return None
            if not _checksum_ok(block):
                raise _refuse(f"the header at byte {at} has a bad checksum (not a tar "
                              f"stream, or corrupt)")
            if block[156:157] not in _EXTENSIONS:
                break
            self._extension(block, pending, at)
        header = self._header(block, pending.records, pending.long_name, pending.long_link)
        self.entries += 1
        if self.entries > self._limits.max_entries:
            raise InvalidArgumentError(
                f"the layer has more than max_entries ({self._limits.max_entries}) entries")
        if header.kind is Kind.FILE:
            self.data_bytes += header.size
            if self.data_bytes > self._limits.max_bytes:
                raise InvalidArgumentError(
                    f"the layer's file data exceeds max_bytes ({self._limits.max_bytes} "
                    f"bytes) at {header.name!r}, which declares {header.size} bytes")
        self._remaining = header.size
        self._padding = -header.size % BLOCK
        return header

    def _extension(self, block: bytes, pending: _Pending, at: int) -> None:
        """Read one PAX or GNU long-name header into `pending`, within the header budget."""
        size = _number(block[124:136], "size")
        pending.budget -= BLOCK + size
        if pending.budget < 0:
            raise InvalidArgumentError(
                f"malformed layer: the extended headers at byte {at} exceed "
                f"max_header_bytes ({self._limits.max_header_bytes})")
        data = self._read(-(-size // BLOCK) * BLOCK)[:size]
        kind = block[156:157]
        if kind in (b"x", b"X"):
            pending.records.update(_parse_pax(data))
        elif kind == b"g":
            _parse_pax(data)  # well-formed or refused, but without effect (see the module doc)
        elif kind == b"L":
            pending.long_name = data.split(b"\0", 1)[0]
        else:
            pending.long_link = data.split(b"\0", 1)[0]

    def _header(self, block: bytes, records: Mapping[str, bytes], long_name: bytes,
                long_link: bytes) -> Header:
        records = {key: value for key, value in records.items() if value}  # empty = unset
        magic = block[257:263]
        if magic not in (b"ustar\0", b"ustar ", bytes(6)):
            raise _refuse(f"unknown tar header format {magic!r}")
        name = block[0:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        if magic == b"ustar\0" and prefix:  # POSIX only; GNU keeps atime and ctime there
            name = prefix + b"/" + name
        name = records.get("path", long_name or name)
        link = block[157:257].split(b"\0", 1)[0]
        link = records.get("linkpath", long_link or link)
        flag = block[156:157]
        if flag == b"S" or any(key.startswith("GNU.sparse.") for key in records):
            raise InvalidArgumentError(
                f"sparse files are not supported in layers ({_text(name)!r}): the OCI layer "
                f"spec says layers should not use them")
        kind = _KINDS.get(flag)
        if kind is None:
            raise _refuse(f"entry {_text(name)!r} has unsupported type {flag!r}")
        if flag == b"\0" and name.endswith(b"/"):  # pre-POSIX tars marked directories so
            kind = Kind.DIR
        size = _pax_int(records, "size", _number(block[124:136], "size"))
        if size and kind is not Kind.FILE:
            raise _refuse(f"{kind.value} {_text(name)!r} declares {size} bytes of data; "
                          f"that type carries none")
        mtime = (_pax_time_ns(records["mtime"]) if "mtime" in records
                 else _number(block[136:148], "mtime", signed=True) * 10**9)
        return Header(
            name=_text(name),
            kind=kind,
            size=size,
            mode=_number(block[100:108], "mode") & 0o7777,
            uid=_pax_int(records, "uid", _number(block[108:116], "uid")),
            gid=_pax_int(records, "gid", _number(block[116:124], "gid")),
            mtime_ns=mtime,
            linkname=_text(link),
            devmajor=_number(block[329:337], "devmajor") if magic != bytes(6) else 0,
            devminor=_number(block[337:345], "devminor") if magic != bytes(6) else 0,
            xattrs={key[len(_XATTR_PREFIX):]: value for key, value in records.items()
                    if key.startswith(_XATTR_PREFIX)},
        )

    def _finish(self) -> None:
        """Read what follows the first zero block: zeros only, and not too many of them.

        Anything else is refused rather than ignored: it is hashed into the diff_id, and a
        second archive appended after the end marker would be applied by tools that read
        past it (GNU tar -i) and not by us, so the same layer would mean two different things.
        """
        padding = 0
        while chunk := self._src.read(64 * 1024):
            self.offset += len(chunk)
            padding += len(chunk)
            if chunk.count(0) != len(chunk):
                raise _refuse("non-zero data follows the end-of-archive marker")
            if padding > _MAX_PADDING:
                raise _refuse(f"more than {_MAX_PADDING} bytes of padding follow the "
                              f"end-of-archive marker")
