"""A pulled file's bytes from the socket into the file without passing through Python.

Read into a buffer and written out, every byte of a pull is copied twice on the receiving
side: socket to buffer, buffer to the page cache. Spliced (socket to a pipe, pipe to the
file) it is copied once: the kernel moves the received pages into the pipe, then copies
them into the file's pages. The digest is taken from the file through a read-only
mapping, piece by piece, while the piece is still in the CPU's cache. A 1 GiB pull took
0.83 of the time on two CPUs (interleaved A/B against the buffered path).

Mapping the file is safe because it lies in the import's private staging directory: no
one else writes it, so it cannot shrink under the mapping.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import mmap
import os
import select
import socket

from blake3 import blake3

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.volumes.transfer import PIECE, Sequential

SPLICE_MIN = 256 << 10
"""Files at least this big are spliced; smaller ones cost more in system calls than the
copy that splicing saves."""


class SocketReceiver:
    """Receives the files of an archive arriving on `connection`, whose reads go through
    `stream` (its buffered reader, which may hold bytes read ahead)."""

    def __init__(self, connection: socket.socket, stream: io.BufferedReader) -> None:
        self._connection, self._stream = connection, stream
        self._timeout = connection.gettimeout()
        self._pipe_out, self._pipe_in = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # above the machine's pipe-max-size: the default
            fcntl.fcntl(self._pipe_in, fcntl.F_SETPIPE_SZ, PIECE)

    def close(self) -> None:
        os.close(self._pipe_out)
        os.close(self._pipe_in)

    def __enter__(self) -> SocketReceiver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def receive(self, source: Sequential, fd: int, size: int) -> str:
        """Write the archive's next `size` bytes (a file's data, at `source`'s position) to
        the empty file `fd`, opened for reading and writing; their BLAKE3 digest."""
        os.ftruncate(fd, size)
        digest = blake3()
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
            view = memoryview(mapped)
            try:
                ahead = self._stream.peek(1)[:size]  # what the reader already holds
                done = len(ahead)
                if done:
                    data = self._stream.read(done)
                    digest.update(data)
                    _pwrite_all(fd, data, 0)
                while done < size:
                    count = self._splice(fd, done, min(size - done, PIECE))
                    digest.update(view[done:done + count])
                    done += count
            finally:
                view.release()
        source.consumed(size)
        return digest.hexdigest()

    def _splice(self, fd: int, offset: int, count: int) -> int:
        """Move up to `count` bytes from the socket into the file at `offset`; how many."""
        while True:
            try:
                moved = os.splice(self._connection.fileno(), self._pipe_in, count)
                break
            except BlockingIOError:  # the socket is non-blocking: wait, as reads would
                poller = select.poll()
                poller.register(self._connection.fileno(), select.POLLIN)
                timeout = None if self._timeout is None else int(self._timeout * 1000)
                if not poller.poll(timeout):
                    raise TimeoutError(f"the peer sent nothing for {self._timeout} s") from None
        if not moved:
            raise InvalidArgumentError("the volume archive ends inside a file: it was cut "
                                       "short; pull again")
        written = 0
        while written < moved:
            written += os.splice(self._pipe_out, fd, moved - written,
                                 offset_dst=offset + written)
        return moved


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    written = 0
    while written < len(data):
        written += os.pwrite(fd, data[written:], offset + written)
