"""Splicing a file's bytes from a socket: the same bytes and digest as reading them."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from blake3 import blake3

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.volumes.splice import SocketReceiver
from dockyard_shim.volumes.transfer import Sequential


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    right.settimeout(5)
    with left, right:
        yield left, right


def _send_later(sender: socket.socket, data: bytes, *, close: bool = False) -> threading.Thread:
    def send() -> None:
        sender.sendall(data)
        if close:
            sender.shutdown(socket.SHUT_WR)
    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _receive(receiving: socket.socket, path: Path, size: int, *, first: int = 0
             ) -> tuple[str, bytes, Sequential]:
    """Read `first` bytes through the buffered reader (as tar headers are), then splice
    `size` bytes into `path`; the digest, the bytes after the file, and the source."""
    stream = receiving.makefile("rb")
    source = Sequential(stream)
    source.read(first)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with SocketReceiver(receiving, stream) as receiver:  # type: ignore[arg-type]
            digest = receiver.receive(source, fd, size)
    finally:
        os.close(fd)
    return digest, source.read(4), source


def test_a_spliced_file_has_the_bytes_and_digest_sent(pair: tuple[socket.socket, socket.socket],
                                                      tmp_path: Path) -> None:
    body = os.urandom(3 * (1 << 20) + 12345)  # pieces, and a part of one
    # The header and the start of the file arrive together: the buffered reader holds some
    # of the file's bytes before the splice starts.
    thread = _send_later(pair[0], b"HEAD" + body + b"NEXT")
    digest, after, source = _receive(pair[1], tmp_path / "file", len(body), first=4)
    thread.join()
    assert (tmp_path / "file").read_bytes() == body
    assert digest == blake3(body).hexdigest()
    assert after == b"NEXT"  # the stream goes on right after the file
    assert source.tell() == 4 + len(body) + 4


def test_a_stream_that_ends_inside_the_file_is_cut_short(
        pair: tuple[socket.socket, socket.socket], tmp_path: Path) -> None:
    thread = _send_later(pair[0], os.urandom(1 << 20), close=True)
    with pytest.raises(InvalidArgumentError, match="cut short"):
        _receive(pair[1], tmp_path / "file", 2 << 20)
    thread.join()


def test_a_peer_that_stalls_times_out(pair: tuple[socket.socket, socket.socket],
                                      tmp_path: Path) -> None:
    pair[1].settimeout(0.2)
    thread = _send_later(pair[0], os.urandom(1 << 20))  # and then nothing, but no close
    with pytest.raises(TimeoutError):
        _receive(pair[1], tmp_path / "file", 2 << 20)
    thread.join()
