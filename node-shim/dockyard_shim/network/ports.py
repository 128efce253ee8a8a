"""Published ports: a userland proxy, like docker-proxy, that runs in the daemon's event loop.

A `PortForwarder` listens on host_ip:host_port in the namespace of the thread that starts
it (the node's) and relays to container_ip:container_port, which the node reaches through
the bridge. TCP connections are relayed byte for byte in both directions, half-closes
included (a client's shutdown(SHUT_WR) reaches the server as EOF, and the reply still comes
back); when the container refuses, the client's connection is closed, as docker-proxy
does. UDP is relayed per client address: each client gets a socket of its own towards the
container, so replies find their way back, and a flow idle for `udp_idle_timeout` seconds
is forgotten (docker-proxy's 90 s).

What it does not do: keep the client's source address (the container sees the node's
address on the bridge; that needs DNAT in the kernel, which is a firewall's business), and
listen on IPv6.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Literal

from dockyard_shim.errors import AlreadyExistsError, InvalidArgumentError, UnavailableError

PortProtocol = Literal["tcp", "udp"]

_CHUNK = 64 * 1024
_CONNECT_TIMEOUT = 10.0
_UDP_PENDING_MAX = 64
"""Datagrams kept for a new UDP flow while its socket to the container opens."""


class PortForwarder:
    """Relay host_ip:host_port to container_ip:container_port (TCP or UDP).

    `await start()` binds and returns the host port (the one the kernel picked when
    `host_port` is 0); `await stop()` closes the listener and every relayed connection.
    Also an async context manager. Start and stop it in the same event loop.
    """

    def __init__(self, *, container_ip: IPv4Address | str, container_port: int,
                 host_ip: IPv4Address | str = "0.0.0.0",  # noqa: S104 -- Docker's default
                 host_port: int = 0,
                 protocol: PortProtocol = "tcp", udp_idle_timeout: float = 90.0) -> None:
        if protocol not in ("tcp", "udp"):
            raise InvalidArgumentError(f"protocol {protocol!r}: use tcp or udp")
        if not 0 <= host_port <= 65535:
            raise InvalidArgumentError(f"host port {host_port}: use 0 (any) to 65535")
        if not 1 <= container_port <= 65535:
            raise InvalidArgumentError(f"container port {container_port}: use 1 to 65535")
        try:
            self._host_ip = str(IPv4Address(str(host_ip)))
            self._container_ip = str(IPv4Address(str(container_ip)))
        except ValueError as e:
            raise InvalidArgumentError(f"port forwarding: {e}") from e
        self._host_port = host_port
        self._container_port = container_port
        self.protocol: PortProtocol = protocol
        self._udp_idle_timeout = udp_idle_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._udp: _UdpRelay | None = None

    @property
    def host_port(self) -> int:
        """The port listened on: the bound one once started, else the one asked for."""
        return self._host_port

    def __repr__(self) -> str:
        return (f"PortForwarder({self._host_ip}:{self._host_port} -> "
                f"{self._container_ip}:{self._container_port}/{self.protocol})")

    async def start(self) -> int:
        """Listen; return the host port. AlreadyExistsError when the port is taken."""
        if self._server is not None or self._udp is not None:
            raise AlreadyExistsError(f"{self!r} is started already")
        try:
            if self.protocol == "tcp":
                self._server = await asyncio.start_server(self._serve, self._host_ip,
                                                          self._host_port)
                self._host_port = self._server.sockets[0].getsockname()[1]
            else:
                self._udp = _UdpRelay((self._container_ip, self._container_port),
                                      self._udp_idle_timeout)
                self._host_port = await self._udp.start(self._host_ip, self._host_port)
        except OSError as e:
            where = f"{self._host_ip}:{self._host_port}/{self.protocol}"
            if e.errno == errno.EADDRINUSE:
                raise AlreadyExistsError(f"host port {where} is already in use") from e
            if e.errno == errno.EADDRNOTAVAIL:
                raise InvalidArgumentError(
                    f"cannot listen on {where}: {self._host_ip} is not an address of this "
                    "node") from e
            raise UnavailableError(f"cannot listen on {where}: {e.strerror or e}") from e
        return self._host_port

    async def stop(self) -> None:
        """Stop listening and close every relayed connection or flow. Idempotent."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if self._udp is not None:
            await self._udp.stop()
            self._udp = None

    async def __aenter__(self) -> PortForwarder:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # always: a handler runs as a task
            self._connections.add(task)
        try:
            try:
                backend_r, backend_w = await asyncio.wait_for(
                    asyncio.open_connection(self._container_ip, self._container_port),
                    _CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                return  # refused or unreachable: the client sees its connection closed
            try:
                await _relay(client_r, client_w, backend_r, backend_w)
            finally:
                await _close(backend_w)
        finally:
            try:
                await _close(client_w)
            finally:
                if task is not None:
                    self._connections.discard(task)


async def _relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                 backend_r: asyncio.StreamReader, backend_w: asyncio.StreamWriter) -> None:
    """Copy both ways until both sides sent EOF, or either fails."""
    pipes = [asyncio.ensure_future(_pipe(client_r, backend_w)),
             asyncio.ensure_future(_pipe(backend_r, client_w))]
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(_CHUNK):
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()  # pass the half-close on: the other side may still answer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):  # a reset while closing: closed all the same
        await writer.wait_closed()


# ------------------------------------------------------------------------------- UDP


Address = tuple[str, int]


@dataclass
class _Flow:
    """One client's datagrams to the container and back."""

    client: Address
    pending: list[bytes] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    last_seen: float = field(default_factory=time.monotonic)


class _UdpRelay:
    def __init__(self, backend: Address, idle_timeout: float) -> None:
        self._backend = backend
        self._idle_timeout = idle_timeout
        self._front: asyncio.DatagramTransport | None = None
        self._flows: dict[Address, _Flow] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._front, _ = await loop.create_datagram_endpoint(
            lambda: _Front(self), local_addr=(host, port))
        self._spawn(self._expire())
        bound: Address = self._front.get_extra_info("sockname")
        return bound[1]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for flow in self._flows.values():
            if flow.transport is not None:
                flow.transport.close()
        self._flows.clear()
        if self._front is not None:
            self._front.close()
        await asyncio.sleep(0)  # let the transports finish closing

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def from_client(self, data: bytes, client: Address) -> None:
        flow = self._flows.get(client)
        if flow is None:
            flow = self._flows[client] = _Flow(client, pending=[data])
            self._spawn(self._open(flow))
            return
        flow.last_seen = time.monotonic()
        if flow.transport is not None:
            flow.transport.sendto(data)
        elif len(flow.pending) < _UDP_PENDING_MAX:
            flow.pending.append(data)

    def from_backend(self, data: bytes, flow: _Flow) -> None:
        flow.last_seen = time.monotonic()
        if self._front is not None:
            self._front.sendto(data, flow.client)

    def forget(self, flow: _Flow) -> None:
        """Drop a flow whose socket closed: the client's next datagram opens a new one."""
        if self._flows.get(flow.client) is flow:
            del self._flows[flow.client]

    async def _open(self, flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Back(self, flow), remote_addr=self._backend)
        except OSError:
            self._flows.pop(flow.client, None)  # the next datagram tries again
            return
        if self._flows.get(flow.client) is not flow:  # expired or stopped meanwhile
            transport.close()
            return
        flow.transport = transport
        for data in flow.pending:
            transport.sendto(data)
        flow.pending.clear()

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(min(self._idle_timeout / 2, 5.0))
            deadline = time.monotonic() - self._idle_timeout
            for client, flow in list(self._flows.items()):
                if flow.last_seen < deadline:
                    del self._flows[client]
                    if flow.transport is not None:
                        flow.transport.close()


class _Front(asyncio.DatagramProtocol):
    def __init__(self, relay: _UdpRelay) -> None:
        self._relay = relay

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._relay.from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error about one client: nothing to do for the others


class _Back(asyncio.DatagramProtocol):
    def __init__(self, relay: _UdpRelay, flow: _Flow) -> None:
        self._relay = relay
        self._flow = flow

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._relay.from_backend(data, self._flow)

    def error_received(self, exc: Exception) -> None:
        pass  # the container refused (ICMP port unreachable): UDP gives no way to tell

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.forget(self._flow)
