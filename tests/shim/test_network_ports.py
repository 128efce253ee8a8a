"""Published ports relay TCP streams and UDP datagrams between a host port and a container.

The relay's own behaviour is tested on 127.0.0.1 in the test process's namespace (no root);
the published-port journeys run a server inside a container namespace, with the forwarder
in a private node namespace (tests/shim/netns.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from dockyard_shim.errors import AlreadyExistsError, InvalidArgumentError
from dockyard_shim.network import NetworkConfig, PortForwarder, attach, ensure_bridge
from tests.shim import netns

LOCAL = "127.0.0.1"
TIMEOUT = 5.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The backend: read everything the client sends, then answer with what it got."""
    data = await reader.read()
    writer.write(b"got " + data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _ask(port: int, message: bytes) -> bytes:
    """Connect to the forwarder, send, half-close, and read the answer to EOF."""
    reader, writer = await asyncio.open_connection(LOCAL, port)
    writer.write(message)
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


def test_port_zero_picks_a_free_port_and_a_half_closed_request_still_gets_its_answer() -> None:
    async def main() -> None:
        backend = await asyncio.start_server(_answer_after_eof, LOCAL, 0)
        forwarder = PortForwarder(host_ip=LOCAL, host_port=0, container_ip=LOCAL,
                                  container_port=backend.sockets[0].getsockname()[1])
        async with backend, forwarder:
            assert forwarder.host_port > 0
            assert await _ask(forwarder.host_port, b"x" * 300_000) == b"got " + b"x" * 300_000
            assert await _ask(forwarder.host_port, b"again") == b"got again"

    asyncio.run(main())


def test_a_refused_container_port_closes_the_client_connection() -> None:
    async def main() -> None:
        async with PortForwarder(host_ip=LOCAL, container_ip=LOCAL,
                                 container_port=_free_port()) as forwarder:
            reader, writer = await asyncio.open_connection(LOCAL, forwarder.host_port)
            try:
                assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            finally:
                writer.close()
                await writer.wait_closed()

    asyncio.run(main())


def test_stop_closes_the_listener_and_the_connections_in_flight() -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the relay goes away
        writer.close()

    async def main() -> None:
        backend = await asyncio.start_server(hold, LOCAL, 0)
        async with backend:
            forwarder = PortForwarder(host_ip=LOCAL, container_ip=LOCAL,
                                      container_port=backend.sockets[0].getsockname()[1])
            port = await forwarder.start()
            reader, writer = await asyncio.open_connection(LOCAL, port)
            writer.write(b"hello")
            await writer.drain()
            await asyncio.sleep(0.05)  # the relay is connected to the backend now
            await forwarder.stop()
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            writer.close()
            await writer.wait_closed()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(LOCAL, port)
            await forwarder.stop()  # idempotent

    asyncio.run(main())


def test_a_host_port_in_use_is_refused_as_already_existing() -> None:
    async def main() -> None:
        async with PortForwarder(host_ip=LOCAL, container_ip=LOCAL,
                                 container_port=80) as first:
            second = PortForwarder(host_ip=LOCAL, host_port=first.host_port,
                                   container_ip=LOCAL, container_port=80)
            with pytest.raises(AlreadyExistsError, match="already in use"):
                await second.start()

    asyncio.run(main())


@pytest.mark.parametrize("options", [
    {"container_port": 0}, {"container_port": 65536}, {"host_port": -1},
    {"protocol": "sctp"}, {"host_ip": "localhost"}, {"container_ip": "::1"},
])
def test_bad_port_mappings_are_refused(options: dict[str, object]) -> None:
    arguments: dict[str, object] = {"container_ip": LOCAL, "container_port": 80, **options}
    with pytest.raises(InvalidArgumentError):
        PortForwarder(**arguments)  # type: ignore[arg-type]


class _UdpEcho(asyncio.DatagramProtocol):
    """Answers each datagram with `echo:` and it; remembers who sent it."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.append(addr)
        assert self.transport is not None
        self.transport.sendto(b"echo:" + data, addr)


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.answers.put_nowait(data)


async def _udp_client(port: int) -> tuple[asyncio.DatagramTransport, _UdpClient]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(_UdpClient, remote_addr=(LOCAL, port))


def test_udp_is_relayed_per_client_both_ways_and_idle_flows_are_forgotten() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        backend, echo = await loop.create_datagram_endpoint(_UdpEcho, local_addr=(LOCAL, 0))
        forwarder = PortForwarder(host_ip=LOCAL, container_ip=LOCAL, protocol="udp",
                                  container_port=backend.get_extra_info("sockname")[1],
                                  udp_idle_timeout=0.2)
        port = await forwarder.start()
        (a, at_a), (b, at_b) = await _udp_client(port), await _udp_client(port)
        try:
            a.sendto(b"one")
            b.sendto(b"two")
            a.sendto(b"three")
            assert await asyncio.wait_for(at_a.answers.get(), TIMEOUT) == b"echo:one"
            assert await asyncio.wait_for(at_a.answers.get(), TIMEOUT) == b"echo:three"
            assert await asyncio.wait_for(at_b.answers.get(), TIMEOUT) == b"echo:two"
            assert len(set(echo.sources)) == 2  # one relay socket per client
            await asyncio.sleep(0.5)  # idle: the flows are forgotten
            a.sendto(b"four")
            assert await asyncio.wait_for(at_a.answers.get(), TIMEOUT) == b"echo:four"
            assert echo.sources[-1] not in echo.sources[:-1]  # a new flow
        finally:
            a.close()
            b.close()
            await forwarder.stop()
            backend.close()
            await asyncio.sleep(0)

    asyncio.run(main())


# ---------------------------------------------------------------- into a container (root)

CONFIG = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.201.0.0/24"))


@pytest.fixture
def node() -> Iterator[netns.Node]:
    with netns.private_node() as node:
        ensure_bridge(CONFIG)
        yield node


@pytest.mark.root
def test_a_published_port_reaches_the_server_in_the_container(
        node: netns.Node, tmp_path: Path) -> None:
    container = node.container()
    attachment = attach(CONFIG, tmp_path, "c" * 64, container.pid)
    with netns.inside(container.pid):  # the container's server: 0.0.0.0:8080
        listener = socket.create_server(("0.0.0.0", 8080))
    peers: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        await _answer_after_eof(reader, writer)

    async def main() -> None:
        server = await asyncio.start_server(serve, sock=listener)
        async with server, PortForwarder(host_ip=LOCAL, container_ip=attachment.ip,
                                         container_port=8080) as forwarder:
            assert await _ask(forwarder.host_port, b"hello") == b"got hello"

    asyncio.run(main())
    assert peers == [str(CONFIG.gateway)]  # a userland proxy: the node's bridge address


@pytest.mark.root
def test_a_published_udp_port_reaches_the_container(node: netns.Node, tmp_path: Path) -> None:
    container = node.container()
    attachment = attach(CONFIG, tmp_path, "c" * 64, container.pid)
    with netns.inside(container.pid):
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("0.0.0.0", 5353))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        backend, _ = await loop.create_datagram_endpoint(_UdpEcho, sock=listener)
        forwarder = PortForwarder(host_ip=LOCAL, container_ip=attachment.ip,
                                  container_port=5353, protocol="udp")
        async with forwarder:
            client, answers = await _udp_client(forwarder.host_port)
            try:
                client.sendto(b"query")
                assert await asyncio.wait_for(answers.answers.get(), TIMEOUT) == b"echo:query"
            finally:
                client.close()
        backend.close()
        await asyncio.sleep(0)

    asyncio.run(main())
