"""Talk to the node daemon over its unix socket; start one when none is listening.

Plain `http.client` over AF_UNIX: the CLI starts fast and needs no event loop. Error
responses become `DaemonError`, which click prints as one line (`Error: …`) and turns into
exit code 1 (or the container's own code where Docker would use it, such as 127).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from dockyard_shim.daemon.paths import socket_path, state_root

_START_TIMEOUT = 15.0


class DaemonError(click.ClickException):
    """An error the daemon reported, with the exit code the CLI should end with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # per instance: the container's code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One request per connection: simple, and the daemon is a local socket away."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _open(self, method: str, url: str, body: Any, timeout: float | None
              ) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        conn = _UnixConnection(self.path, timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            conn.request(method, url, body=payload, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def call(self, method: str, url: str, body: Any = None,
             timeout: float | None = 120.0) -> Any:
        """Send a request; the decoded JSON answer, or DaemonError."""
        conn, response = self._open(method, url, body, timeout)
        with contextlib.closing(conn):
            data = response.read()
        if response.status >= 400:
            raise _error(data)
        return json.loads(data) if data else None

    def stream(self, url: str) -> Iterator[bytes]:
        """The raw body of a streaming response, chunk by chunk."""
        conn, response = self._open("GET", url, None, None)
        with contextlib.closing(conn):
            if response.status >= 400:
                raise _error(response.read())
            while chunk := response.read1(65536):
                yield chunk

    def ping(self) -> bool:
        try:
            conn, response = self._open("GET", "/_ping", None, 2.0)
        except OSError:
            return False
        with contextlib.closing(conn):
            response.read()
        return response.status == 200


def _error(data: bytes) -> DaemonError:
    try:
        detail = json.loads(data)
    except json.JSONDecodeError:
        detail = {"message": data.decode(errors="replace")}
    return DaemonError(detail.get("message", "unknown error"), int(detail.get("exitCode", 1)))


def connect(*, autostart: bool = True) -> Client:
    """A client for the node's daemon, starting the daemon first if none listens."""
    client = Client(socket_path())
    if client.ping():
        return client
    if not autostart:
        raise DaemonError(f"no dockyard daemon is listening on {client.path}")
    if os.geteuid() != 0:
        raise DaemonError("the dockyard daemon runs containers and must be started as root")
    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "shim.log"
    with log_path.open("ab") as log, open(os.devnull, "rb") as null:
        process = subprocess.Popen([sys.executable, "-m", "dockyard_cli", "shim"],
                                   stdin=null, stdout=log, stderr=log,
                                   start_new_session=True)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if client.ping():
            click.echo(f"dockyard: no daemon was listening on {client.path}; started one "
                       f"(pid {process.pid}, log {log_path})", err=True)
            return client
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise DaemonError(f"the dockyard daemon did not start; see {log_path}")
