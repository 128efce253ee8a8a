"""From a layer blob to the bytes of its tar stream, hashed and counted as they pass.

A layer is stored as it came from the registry: a plain tar or a gzip-compressed one, told
apart by their first bytes, not by the media type somebody claimed. zstd (the third OCI layer
format) needs a decoder the Python 3.11 standard library lacks, so it is refused with a
message that says so; bzip2 and xz, which only pre-OCI Docker tools ever wrote, likewise.

`TarBytes` is what the tar parser reads. It hashes every uncompressed byte (the sha256 of the
whole stream, padding included, is the layer's OCI diff_id), turns decoder failures into
InvalidArgumentError, and, when the caller asks for it, refuses a stream that expands more
than a given ratio. The gzip decoder works in bounded chunks, so memory stays flat however
large the stream is. Hashing runs on a thread of its own (`_Sha256Behind`): hashlib and
zlib both let go of the GIL while they work, so a second core hashes what the first has
just inflated, and unpacking takes the time of the slower of the two, not of both.

Reads only from the stream it is given; never touches the filesystem.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import queue
import re
import threading
import zlib
from typing import BinaryIO

from dockyard_shim.archive.limits import Limits, MiB
from dockyard_shim.errors import InvalidArgumentError

_GZIP_MAGIC = b"\x1f\x8b"
_NOT_OCI = "layers are not supported (OCI layers are tar, tar+gzip or tar+zstd)"
_REFUSED_MAGIC = [  # formats we recognise but cannot or will not read, by their first bytes
    (re.compile(rb"\x28\xb5\x2f\xfd"), "zstd layers are not supported yet"),  # RFC 8878
    # "BZh" alone could begin a tar member's name: bzip2 is BZh, the block size, then the
    # magic of the first block (or of the end of an empty stream)
    (re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"), f"bzip2-compressed {_NOT_OCI}"),
    (re.compile(rb"\xfd7zXZ\x00"), f"xz-compressed {_NOT_OCI}"),
]
_RATIO_GRACE = 1 * MiB  # a tiny layer (an empty tar is 10 KiB of zeros in 40 bytes) is no bomb


class _Counted:
    """The raw blob, with the bytes already peeked at put back in front, counted."""

    def __init__(self, stream: BinaryIO, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if self._prefix:  # a short read is allowed: callers loop
            n = len(self._prefix) if size < 0 else min(size, len(self._prefix))
            data, self._prefix = self._prefix[:n], self._prefix[n:]
        else:
            data = self._stream.read(size)
        self.count += len(data)
        return data

    def seek(self, offset: int, /) -> int:
        raise io.UnsupportedOperation("a layer stream is read once, forward")


def _peek(stream: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


class _Sha256Behind:
    """sha256 of the chunks given to `update`, computed on a worker thread, in order.

    At most `_BACKLOG` chunks wait, so memory stays bounded when hashing is the slower side.
    `hexdigest` waits for the backlog and ends the worker (later chunks are hashed at
    once); `close` ends the worker of a stream given up early.
    """

    _BACKLOG = 8

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(self._BACKLOG)
        self._worker: threading.Thread | None = threading.Thread(
            target=self._run, name="dockyard-sha256", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._sha.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._worker is None:
            self._sha.update(chunk)
        else:
            self._queue.put(chunk)

    def close(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def hexdigest(self) -> str:
        self.close()
        return self._sha.hexdigest()


class TarBytes:
    """The uncompressed tar stream of a layer blob: exact reads, a running sha256.

    `read(n)` returns exactly `n` bytes unless the stream ends first. Corrupt or truncated
    compressed data raises InvalidArgumentError; an I/O error of the underlying stream is
    left as the OSError it is.
    """

    def __init__(self, stream: BinaryIO, limits: Limits) -> None:
        head = _peek(stream, 10)
        if not head:
            raise InvalidArgumentError("the layer blob is empty: a layer is at least a tar "
                                       "end-of-archive marker")
        for magic, message in _REFUSED_MAGIC:
            if magic.match(head):
                raise InvalidArgumentError(message)
        self._raw = _Counted(stream, head)
        self._gzip: gzip.GzipFile | None = None
        self.compression = "none"
        if head.startswith(_GZIP_MAGIC):
            self._gzip = gzip.GzipFile(fileobj=self._raw, mode="rb")
            self.compression = "gzip"
        self._ratio = limits.max_compressed_ratio
        self._sha = _Sha256Behind()
        self.position = 0

    @property
    def diff_id(self) -> str:
        """sha256 of the bytes read so far; the diff_id once the stream is read to its end."""
        return "sha256:" + self._sha.hexdigest()

    def close(self) -> None:
        """End the hashing worker (a stream given up before its end needs this)."""
        self._sha.close()

    def read(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            chunk = self._read_some(wanted)
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        data = b"".join(parts)
        self._sha.update(data)
        self.position += len(data)
        self._check_ratio()
        return data

    def _read_some(self, size: int) -> bytes:
        if self._gzip is None:
            return self._raw.read(size)
        try:
            return self._gzip.read(size)
        except EOFError as e:
            raise InvalidArgumentError("the gzip stream is truncated: it ends before its "
                                       "end-of-stream marker") from e
        except (gzip.BadGzipFile, zlib.error) as e:
            raise InvalidArgumentError(f"the gzip stream is corrupt or followed by data that "
                                       f"is not gzip: {e}") from e

    def _check_ratio(self) -> None:
        if self._ratio is None or self.position <= _RATIO_GRACE:
            return
        if self.position > self._ratio * max(self._raw.count, 1):
            raise InvalidArgumentError(
                f"the layer expands more than max_compressed_ratio ({self._ratio}:1): "
                f"{self._raw.count} compressed bytes gave {self.position} so far")
