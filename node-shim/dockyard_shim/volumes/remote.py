"""Volumes between nodes: one shim serves a volume's archive, another pulls it.

The two shims share a token (a file on each node, `DOCKYARD_TRANSFER_TOKEN_FILE`); it
never travels. The puller picks a random nonce and sends

    POST /v1/volumes/<name>/archive
    Authorization: Dockyard-HMAC <nonce>:<HMAC-SHA256(token, "POST <path> <nonce> <sha256(body)>")>

    {"have": {<archive name>: <BLAKE3 digest>, ...}}

which the server checks in constant time. `have` lists the files an earlier, broken pull
already wrote (empty the first time): the server leaves those out when they are unchanged
(`transfer`), so a pull that broke off resumes where it stopped. The archive it sends back
ends with `manifest.hmac` under the key HMAC(token, nonce), so the puller keeps the data
only if the manifest, and through its digests every file, is what that server sent for
this very request: a wrong peer, a replayed answer or data changed on the way all fail the
import, and the volume stays unusable (`importing.import_volume`).

A GET with no body asks for the whole archive (signed over an empty body).

The channel authenticates; it does not encrypt: keep transfers on the nodes' private
network.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import urllib.parse
from pathlib import Path
from typing import IO

from dockyard_shim.errors import (
    InvalidArgumentError,
    NotFoundError,
    ShimError,
    UnavailableError,
)
from dockyard_shim.volumes.importing import prepare_import
from dockyard_shim.volumes.model import check_name
from dockyard_shim.volumes.store import VolumeStore
from dockyard_shim.volumes.transfer import TransferStats

SCHEME = "Dockyard-HMAC"
ARCHIVE_PATH = "/v1/volumes/{name}/archive"
_HEAD_MAX = 8192
_RECEIVE_BUFFER = 4 << 20


def read_token(path: Path) -> bytes:
    """The shared token in `path`; refused when empty or readable by others."""
    if path.stat().st_mode & 0o077:
        raise InvalidArgumentError(f"transfer token {path} is readable by other users: "
                                   "chmod 600 it")
    token = path.read_bytes().strip()
    if len(token) < 16:
        raise InvalidArgumentError(f"transfer token {path} is shorter than 16 bytes: make "
                                   "one with `head -c 32 /dev/urandom | base64`")
    return token


def session_key(token: bytes, nonce: str) -> bytes:
    """The key of one transfer's manifest HMAC."""
    return hmac.new(token, nonce.encode(), hashlib.sha256).digest()


def authorization(token: bytes, method: str, path: str, nonce: str, body: bytes = b"") -> str:
    signed = f"{method} {path} {nonce} {hashlib.sha256(body).hexdigest()}"
    proof = hmac.new(token, signed.encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME} {nonce}:{proof}"


def check_authorization(token: bytes, method: str, path: str, header: str,
                        body: bytes = b"") -> bytes:
    """The session key of a valid request; PermissionError otherwise."""
    scheme, _, credentials = header.partition(" ")
    nonce = credentials.partition(":")[0]
    if scheme != SCHEME or len(nonce) < 16 or not hmac.compare_digest(
            authorization(token, method, path, nonce, body), header):
        raise PermissionError("the transfer request is not signed with this node's token")
    return session_key(token, nonce)


def parse_have(body: bytes) -> dict[str, str]:
    """The `have` of a request body: archive name -> digest."""
    if not body:
        return {}
    try:
        have = json.loads(body)["have"]
        if isinstance(have, dict) and all(isinstance(k, str) and isinstance(v, str)
                                          for k, v in have.items()):
            return have
    except (ValueError, KeyError, TypeError):
        pass
    raise InvalidArgumentError('the request body is {"have": {NAME: BLAKE3 digest, ...}}')


def pull_volume(store: VolumeStore, name: str, source: str, token: bytes, *,
                remote_name: str = "", timeout: float = 60.0) -> TransferStats:
    """Make the local volume `name` from the volume `remote_name` (default: the same) that
    the shim at `source` (`http://HOST:PORT`) serves, verified as the module says."""
    remote = check_name(remote_name or name)
    url = urllib.parse.urlsplit(source)
    if url.scheme != "http" or not url.hostname:
        raise InvalidArgumentError(f"{source!r}: write the peer shim as http://HOST:PORT")
    try:
        store.get(name)
        new = False
    except NotFoundError:
        new = True
    path = ARCHIVE_PATH.format(name=urllib.parse.quote(remote))
    nonce = secrets.token_hex(16)
    with prepare_import(store, name, resume=True) as job:
        body = json.dumps({"have": {k: v["blake3"] for k, v in job.have.items()}}).encode()
        try:
            connection, stream = _request(
                url, path, body, volume=remote, timeout=timeout,
                authorization=authorization(token, "POST", path, nonce, body))
        except ShimError:
            if new:  # nothing came: leave no volume behind
                job.close()
                store.remove(name, in_use=())
            raise
        with connection, stream:
            try:
                return job.receive(stream, mac_key=session_key(token, nonce),
                                   connection=connection)
            except OSError as e:  # the line broke: the volume stays marked, unusable
                raise UnavailableError(f"the transfer of volume {remote} from {source} "
                                       f"broke off: {e}; pull again to resume") from e


def _request(url: urllib.parse.SplitResult, path: str, body: bytes, *, volume: str,
             timeout: float, authorization: str) -> tuple[socket.socket, IO[bytes]]:
    """POST `body` to `path` at `url` for `volume`: the connection, and its stream at the
    start of the archive that answers."""
    source = url.geturl()
    try:
        connection = socket.create_connection((url.hostname, url.port or 80), timeout=timeout)
    except OSError as e:
        raise UnavailableError(f"cannot reach the shim at {source}: {e}") from e
    # A fixed receive buffer instead of the kernel's autotuning, which grows it to tens of
    # MiB: with less data in flight, what the sender copies in is still in the CPU's cache
    # when the receiver copies it out. A 1 GiB pull took 0.75 of the time on two CPUs.
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
    # HTTP/1.0 on purpose: the body then comes plain until the server closes, without
    # HTTP/1.1's chunk framing to decode (a fifth of the time on 1 GiB). Its end is known
    # from the archive itself: the manifest comes last.
    stream = connection.makefile("rb")
    try:
        try:
            connection.sendall(
                f"POST {path} HTTP/1.0\r\nHost: {url.netloc}\r\n"
                f"Authorization: {authorization}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = _read_head(stream)
        except OSError as e:
            raise UnavailableError(f"cannot reach the shim at {source}: {e}") from e
        if status != 200:
            detail = stream.read(4096).decode(errors="replace").strip()
            error = NotFoundError if status == 404 else UnavailableError
            raise error(f"the shim at {source} refused volume {volume}: {status} {detail}")
    except BaseException:
        stream.close()
        connection.close()
        raise
    return connection, stream


def _read_head(stream: IO[bytes]) -> int:
    """The status of an HTTP response whose head (status line, headers) is read here."""
    status_line = stream.readline(_HEAD_MAX)
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise UnavailableError(f"the peer did not answer in HTTP: {status_line[:80]!r}")
    for _ in range(100):
        if stream.readline(_HEAD_MAX) in (b"\r\n", b"\n", b""):
            return int(parts[1])
    raise UnavailableError("the peer's answer has too many headers")
