"""Talk to the node daemon over its unix socket: the CLI's and the node agent's client.

A minimal HTTP/1.1 client over AF_UNIX, enough for our own daemon (bodies with a
Content-Length or chunked, one kept-alive connection): `http.client` would add 40 ms of
imports (it pulls in the email parser) to every CLI command, and this module avoids click
too, for the fast path of `dockyard run`. Error responses become `DaemonError`, printed as
one line (`Error: …`) with exit code 1, or the container's own code where Docker would use
it, such as 127.
"""

from __future__ import annotations

import _socket
import json
import os
import sys

TYPE_CHECKING = False  # typing, collections.abc and pathlib cost `dockyard run` milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class DaemonError(Exception):
    """An error the daemon reported, with the exit code the CLI should end with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def show(self) -> None:
        print(f"Error: {self.message}", file=sys.stderr)


class _Reader:
    """Buffered reads from a socket: lines, exact sizes, or what has arrived. (The socket
    module's `makefile` would do, but importing `socket` rather than `_socket` costs each
    CLI command milliseconds.)"""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> bool:
        chunk = self._sock.recv(65536)
        self._buffer += chunk
        return bool(chunk)

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self._buffer[:limit] and len(self._buffer) < limit:
            if not self._fill():
                break
        end = self._buffer.find(b"\n", 0, limit)
        end = min(limit, len(self._buffer)) if end == -1 else end + 1
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and self._fill():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def read1(self, size: int) -> bytes:
        if not self._buffer:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class _ClosedError(ConnectionError):
    """The daemon closed the connection before answering."""


class _Response:
    """One response: status, headers, and a body read on demand. `complete` turns true
    once a body of known length has been read to its end, so the connection can serve the
    next request."""

    def __init__(self, sock: _socket.socket, reader: _Reader) -> None:
        self._sock = sock
        self._file = reader
        self.complete = False
        status_line = self._file.readline(65536)
        if not status_line:
            raise _ClosedError("the daemon closed the connection without answering")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise DaemonError(f"the daemon sent a malformed response: {status_line!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while (line := self._file.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def chunks(self) -> Iterator[bytes]:
        """The body, piece by piece as it arrives."""
        reusable = self.headers.get("connection", "").lower() != "close"
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.complete = reusable  # no body, whatever the headers say (RFC 9112 6.3)
            return
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._file.readline(1024).split(b";")[0], 16)
                if size == 0:
                    self._file.readline(1024)
                    self.complete = reusable
                    return
                yield self._file.read(size)
                self._file.readline(1024)  # the CRLF after each chunk
        length = self.headers.get("content-length")
        if length is not None:
            if int(length):
                yield self._file.read(int(length))
            self.complete = reusable
            return
        while chunk := self._file.read1(65536):
            yield chunk

    def read(self) -> bytes:
        return b"".join(self.chunks())


class Client:
    """Requests to the daemon over one kept-alive connection (a new one when the daemon
    has closed it: a request that found it closed is sent again, once)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._idle: tuple[_socket.socket, _Reader] | None = None

    def _open(self, method: str, url: str, body: Any, timeout: float | None) -> _Response:
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {url} HTTP/1.1\r\nHost: dockyard\r\n"
                f"Content-Length: {len(payload)}\r\n")
        if payload:
            head += "Content-Type: application/json\r\n"
        request = head.encode() + b"\r\n" + payload
        if self._idle is not None:
            sock, reader = self._idle
            self._idle = None
            try:
                sock.settimeout(timeout)
                sock.sendall(request)
                return _Response(sock, reader)
            except (_ClosedError, BrokenPipeError, ConnectionResetError):
                sock.close()  # the daemon closed it while idle: the request never arrived
            except BaseException:
                sock.close()
                raise
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.path)
            sock.sendall(request)
            return _Response(sock, _Reader(sock))
        except _ClosedError as e:
            sock.close()
            raise DaemonError(str(e)) from None
        except BaseException:
            sock.close()
            raise

    def _done(self, response: _Response) -> None:
        """Keep the connection for the next request if the response ended cleanly."""
        if response.complete and self._idle is None:
            self._idle = (response._sock, response._file)
        else:
            response._sock.close()

    def call(self, method: str, url: str, body: Any = None,
             timeout: float | None = 120.0) -> Any:
        """Send a request; the decoded JSON answer, or DaemonError."""
        response = self._open(method, url, body, timeout)
        try:
            data = response.read()
        finally:
            self._done(response)
        if response.status >= 400:
            raise _error(data)
        return json.loads(data) if data else None

    def stream(self, url: str) -> Iterator[bytes]:
        """The raw body of a streaming response, chunk by chunk."""
        response = self._open("GET", url, None, None)
        try:
            if response.status >= 400:
                raise _error(response.read())
            yield from response.chunks()
        finally:
            self._done(response)

    def close(self) -> None:
        """Close the kept-alive connection, if any."""
        if self._idle is not None:
            self._idle[0].close()
            self._idle = None

    def __del__(self) -> None:
        self.close()

    def listening(self) -> bool:
        """Whether a daemon accepts connections: a connect, without a request's round trip."""
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            return False
        finally:
            sock.close()
        return True

    def ping(self) -> bool:
        try:
            response = self._open("GET", "/_ping", None, 2.0)
        except OSError:
            return False
        try:
            response.read()
        except OSError:
            return False
        finally:
            self._done(response)
        return response.status == 200


def _error(data: bytes) -> DaemonError:
    try:
        detail = json.loads(data)
    except json.JSONDecodeError:
        detail = {"message": data.decode(errors="replace")}
    return DaemonError(detail.get("message", "unknown error"), int(detail.get("exitCode", 1)))
