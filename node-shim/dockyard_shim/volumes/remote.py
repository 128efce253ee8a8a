"""Volumes between nodes: one shim serves a volume's archive, another pulls it.

The two shims share a token (a file on each node, `DOCKYARD_TRANSFER_TOKEN_FILE`); it
never travels. The puller picks a random nonce and sends

    Authorization: Dockyard-HMAC <nonce>:<HMAC-SHA256(token, "GET <path> <nonce>")>

which the server checks in constant time. The archive it sends back ends with
`manifest.hmac` under the key HMAC(token, nonce), so the puller keeps the data only if the
manifest, and through its digests every file, is what that server sent for this very
request: a wrong peer, a replayed answer or data changed on the way all fail the import,
and the volume stays unusable (`transfer.import_volume`). Pulling again starts over.

The channel authenticates; it does not encrypt: keep transfers on the nodes' private
network.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import urllib.parse
from pathlib import Path
from typing import IO

from dockyard_shim.errors import InvalidArgumentError, NotFoundError, UnavailableError
from dockyard_shim.volumes.model import check_name
from dockyard_shim.volumes.store import VolumeStore
from dockyard_shim.volumes.transfer import TransferStats, import_volume

SCHEME = "Dockyard-HMAC"
ARCHIVE_PATH = "/v1/volumes/{name}/archive"
_HEAD_MAX = 8192


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


def authorization(token: bytes, path: str, nonce: str) -> str:
    proof = hmac.new(token, f"GET {path} {nonce}".encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME} {nonce}:{proof}"


def check_authorization(token: bytes, path: str, header: str) -> bytes:
    """The session key of a valid request for `path`; PermissionError otherwise."""
    scheme, _, credentials = header.partition(" ")
    nonce = credentials.partition(":")[0]
    if scheme != SCHEME or len(nonce) < 16 or not hmac.compare_digest(
            authorization(token, path, nonce), header):
        raise PermissionError("the transfer request is not signed with this node's token")
    return session_key(token, nonce)


def pull_volume(store: VolumeStore, name: str, source: str, token: bytes, *,
                remote_name: str = "", timeout: float = 60.0) -> TransferStats:
    """Make the local volume `name` from the volume `remote_name` (default: the same) that
    the shim at `source` (`http://HOST:PORT`) serves, verified as the module says."""
    remote = check_name(remote_name or name)
    url = urllib.parse.urlsplit(source)
    if url.scheme != "http" or not url.hostname:
        raise InvalidArgumentError(f"{source!r}: write the peer shim as http://HOST:PORT")
    path = ARCHIVE_PATH.format(name=urllib.parse.quote(remote))
    nonce = secrets.token_hex(16)
    try:
        connection = socket.create_connection((url.hostname, url.port or 80), timeout=timeout)
    except OSError as e:
        raise UnavailableError(f"cannot reach the shim at {source}: {e}") from e
    # HTTP/1.0 on purpose: the body then comes plain until the server closes, without
    # HTTP/1.1's chunk framing to decode (a fifth of the time on 1 GiB). Its end is known
    # from the archive itself: the manifest comes last.
    with connection, connection.makefile("rb") as stream:
        try:
            connection.sendall(f"GET {path} HTTP/1.0\r\nHost: {url.netloc}\r\n"
                               f"Authorization: {authorization(token, path, nonce)}\r\n\r\n"
                               .encode())
            status = _read_head(stream)
        except OSError as e:
            raise UnavailableError(f"cannot reach the shim at {source}: {e}") from e
        if status != 200:
            detail = stream.read(4096).decode(errors="replace").strip()
            error = NotFoundError if status == 404 else UnavailableError
            raise error(f"the shim at {source} refused volume {remote}: {status} {detail}")
        try:
            return import_volume(store, name, stream, mac_key=session_key(token, nonce))
        except OSError as e:  # the line broke: the volume stays marked, unusable
            raise UnavailableError(f"the transfer of volume {remote} from {source} broke "
                                   f"off: {e}; pull again") from e


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
