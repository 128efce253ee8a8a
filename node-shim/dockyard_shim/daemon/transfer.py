"""The shim's transfer listener: other shims pull volumes from here (`volumes.remote`).

Off unless configured: `DOCKYARD_TRANSFER_LISTEN=HOST:PORT` and a shared token in
`DOCKYARD_TRANSFER_TOKEN_FILE`. One route, /v1/volumes/{name}/archive, signed by the
puller: POST with the files it has already (`remote.parse_have`), or GET for all. The
export runs on a worker thread (it reads and hashes every file), so the loop never reads
the disk: to an HTTP/1.0 puller (dockyard's own) the thread writes the body straight to
the socket; to others it hands the loop 1 MiB pieces to send.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from dockyard_common import get_logger
from dockyard_shim.errors import InvalidArgumentError, ShimError
from dockyard_shim.volumes import VolumeStore, check_name
from dockyard_shim.volumes.remote import (
    ARCHIVE_PATH,
    check_authorization,
    parse_have,
    read_token,
)
from dockyard_shim.volumes.transfer import PIECE, export_volume

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = get_logger(__name__)
_SEND_TIMEOUT = 60.0  # seconds a peer may take to take the next piece
_HAVE_MAX = 256 << 20  # bytes of a request body: the files a puller has, ~100 bytes each


@dataclass(frozen=True)
class TransferConfig:
    host: str
    port: int
    token: bytes

    @classmethod
    def from_env(cls) -> TransferConfig | None:
        listen = os.environ.get("DOCKYARD_TRANSFER_LISTEN", "")
        if not listen:
            return None
        host, _, port = listen.rpartition(":")
        token_file = os.environ.get("DOCKYARD_TRANSFER_TOKEN_FILE", "")
        if not host or not port.isdigit() or not token_file:
            raise InvalidArgumentError(
                "DOCKYARD_TRANSFER_LISTEN is HOST:PORT, and needs the shared token in "
                "DOCKYARD_TRANSFER_TOKEN_FILE")
        return cls(host, int(port), read_token(Path(token_file)))


def transfer_app(volumes: VolumeStore, token: bytes) -> web.Application:
    async def archive(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.read()
        try:
            key = check_authorization(token, request.method,
                                      ARCHIVE_PATH.format(name=check_name(name)),
                                      request.headers.get("Authorization", ""), body)
        except (PermissionError, InvalidArgumentError) as e:
            log.warning("refused a volume transfer", volume=name, peer=request.remote)
            raise web.HTTPUnauthorized(text=str(e)) from None
        try:
            have = parse_have(body)
        except InvalidArgumentError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
        try:
            source = await asyncio.to_thread(volumes.export_source, name)
        except ShimError as e:
            raise web.HTTPNotFound(text=str(e)) from None
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        await response.prepare(request)
        transport = request.transport
        if request.version < (1, 1) and transport is not None:
            # HTTP/1.0 (dockyard's own pullers): no framing, the body runs to the close, so
            # the worker thread may write it to the socket itself, once the head is out.
            while transport.get_write_buffer_size():
                await asyncio.sleep(0.001)
            out: io.RawIOBase = _SocketWriter(transport.get_extra_info("socket").fileno())
        else:
            out = _ResponseWriter(response, asyncio.get_running_loop())
        sent = await asyncio.to_thread(_export, source, out, key, have)
        await response.write_eof()
        log.info("sent a volume", volume=name, peer=request.remote, complete=sent,
                 left_out=len(have))
        return response

    # A resuming puller lists the files it has: some 100 bytes each.
    app = web.Application(client_max_size=_HAVE_MAX)
    app.router.add_get(ARCHIVE_PATH.format(name="{name}"), archive)
    app.router.add_post(ARCHIVE_PATH.format(name="{name}"), archive)
    return app


class _ResponseWriter(io.RawIOBase):
    """A file whose writes go out on an aiohttp response, from a worker thread: each
    waits for the event loop to take it (so a slow peer slows the export down)."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._response = response
        self._loop = loop

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        piece = bytes(data)  # the caller may reuse its buffer once this returns
        asyncio.run_coroutine_threadsafe(self._response.write(piece), self._loop).result()
        return len(piece)


class _SocketWriter(io.RawIOBase):
    """A file whose writes go straight to a socket the event loop holds (a duplicate of
    its descriptor, with a timeout: the loop's socket stays non-blocking)."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=os.dup(fd))
        self._socket.settimeout(_SEND_TIMEOUT)

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        self._socket.sendall(data)
        return memoryview(data).nbytes

    def close(self) -> None:
        self._socket.close()
        super().close()


def _export(source: Path, raw: io.RawIOBase, key: bytes, have: dict[str, str]) -> bool:
    """Stream the export in 1 MiB pieces; False when it ended early."""
    try:
        with io.BufferedWriter(raw, PIECE) as out:
            export_volume(source, out, mac_key=key, have=have)
    except (OSError, ShimError) as e:  # the puller went away, or the disk failed
        log.warning("a volume transfer ended early", error=str(e))
        return False
    return True
