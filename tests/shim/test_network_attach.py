"""Containers get an eth0 on the bridge, reach each other and the node, and leave nothing
behind: not when detached, not when attach fails halfway, not after a crash.

Every test runs in a private node namespace; containers are child processes with network
namespaces of their own (tests/shim/netns.py). Sockets made `inside` a container's
namespace stay there, so one thread plays the node and every container.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from pyroute2 import IPRoute  # type: ignore[import-untyped]

from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.network import (
    Attachment,
    Ipam,
    NetworkConfig,
    Orphans,
    attach,
    detach,
    ensure_bridge,
    remove_orphans,
)
from dockyard_shim.network import attachment as attachment_module
from tests.shim import netns

pytestmark = pytest.mark.root

CONFIG = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.201.0.0/24"), mtu=1450)
TIMEOUT = 5.0


def _cid(n: int) -> str:
    """A container id shaped like the runtime's: 64 hex digits."""
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
def node() -> Iterator[netns.Node]:
    with netns.private_node() as node:
        ensure_bridge(CONFIG)
        yield node


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "network"


def _veths() -> dict[str, str | None]:
    """The node namespace's veths and their aliases."""
    with IPRoute() as ipr:
        return {link.get("ifname"): link.get("ifalias") for link in ipr.link("dump")
                if link.get(("linkinfo", "kind")) == "veth"}


def _allocations(state: Path) -> dict[str, IPv4Address]:
    with Ipam(state, CONFIG) as ipam:
        return ipam.allocations()


def _echo(server: socket.socket, client: socket.socket, address: tuple[str, int]) -> str:
    """Connect `client` to `server` at `address`, echo one message; the client's address."""
    server.settimeout(TIMEOUT)
    client.settimeout(TIMEOUT)
    client.connect(address)
    conn, peer = server.accept()
    with conn:
        client.sendall(b"ping")
        conn.sendall(conn.recv(4))
        assert client.recv(4) == b"ping"
    return str(peer[0])


def test_attach_gives_the_container_eth0_with_address_mac_mtu_and_default_route(
        node: netns.Node, state: Path) -> None:
    container, cid = node.container(), _cid(1)
    attachment = attach(CONFIG, state, cid, container.pid)
    assert attachment == Attachment(ip=IPv4Address("10.201.0.2"),
                                    gateway=IPv4Address("10.201.0.1"),
                                    host_veth="dy" + cid[:13], mac="02:42:0a:c9:00:02")
    with IPRoute() as ipr:
        (host,) = ipr.link("get", ifname=attachment.host_veth)
        (bridge,) = ipr.link_lookup(ifname=CONFIG.bridge)
        assert (host.get("master"), host.get("mtu"), host["flags"] & 1) == (bridge, 1450, 1)
        assert host.get("ifalias") == cid
    with netns.inside(container.pid), IPRoute() as ipr:
        (eth0,) = ipr.link("get", ifname="eth0")
        assert (eth0.get("address"), eth0.get("mtu"), eth0["flags"] & 1) == (
            "02:42:0a:c9:00:02", 1450, 1)
        assert [(a.get("address"), a["prefixlen"])
                for a in ipr.addr("dump", family=socket.AF_INET, index=eth0["index"])] == [
            ("10.201.0.2", 24)]
        default = [r for r in ipr.route("dump", family=socket.AF_INET) if r["dst_len"] == 0]
        assert [(r.get("gateway"), r.get("oif")) for r in default] == [
            ("10.201.0.1", eth0["index"])]
    assert _allocations(state) == {cid: IPv4Address("10.201.0.2")}


def test_two_containers_on_one_bridge_reach_each_other_by_ip(
        node: netns.Node, state: Path) -> None:
    a, b = node.container(), node.container()
    at_a = attach(CONFIG, state, _cid(1), a.pid)
    at_b = attach(CONFIG, state, _cid(2), b.pid)
    assert at_a.ip != at_b.ip
    with netns.inside(a.pid):
        server = socket.create_server((str(at_a.ip), 7000))
    with netns.inside(b.pid):
        client = socket.socket()
    with server, client:
        assert _echo(server, client, (str(at_a.ip), 7000)) == str(at_b.ip)


def test_a_container_reaches_the_gateway_and_its_loopback_still_works(
        node: netns.Node, state: Path) -> None:
    container = node.container()
    attachment = attach(CONFIG, state, _cid(1), container.pid)
    with socket.create_server((str(CONFIG.gateway), 0)) as on_node:
        with netns.inside(container.pid):
            client = socket.socket()
        with client:
            peer = _echo(on_node, client, (str(CONFIG.gateway), on_node.getsockname()[1]))
        assert peer == str(attachment.ip)
    with netns.inside(container.pid):
        loopback_server = socket.create_server(("127.0.0.1", 0))
        loopback_client = socket.socket()
    with loopback_server, loopback_client:
        port = loopback_server.getsockname()[1]
        assert _echo(loopback_server, loopback_client, ("127.0.0.1", port)) == "127.0.0.1"


def test_the_gateway_keeps_its_mac_while_containers_come_and_go(
        node: netns.Node, state: Path) -> None:
    def bridge_mac() -> str:
        with IPRoute() as ipr:
            return str(ipr.link("get", ifname=CONFIG.bridge)[0].get("address"))

    assert bridge_mac() == "02:42:0a:c9:00:01"
    for n in (1, 2):
        attach(CONFIG, state, _cid(n), node.container().pid)
        assert bridge_mac() == "02:42:0a:c9:00:01"
    detach(CONFIG, state, _cid(1))
    assert bridge_mac() == "02:42:0a:c9:00:01"


def test_detach_removes_the_veth_and_releases_the_address_and_is_idempotent(
        node: netns.Node, state: Path) -> None:
    container = node.container()
    attachment = attach(CONFIG, state, _cid(1), container.pid)
    assert attachment.host_veth in _veths()
    detach(CONFIG, state, _cid(1))
    assert _veths() == {}
    assert _allocations(state) == {}
    with netns.inside(container.pid), IPRoute() as ipr:
        assert not ipr.link_lookup(ifname="eth0")  # the peer went with the host end
    detach(CONFIG, state, _cid(1))
    # The address can go to the next container, the same one included.
    assert attach(CONFIG, state, _cid(1), container.pid).ip == IPv4Address("10.201.0.3")


def test_a_failure_in_the_middle_of_attach_leaves_no_veth_and_no_allocation(
        node: netns.Node, state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    container = node.container()
    configure = attachment_module._configure_inside

    def fail_after_the_address(nl: object, config: NetworkConfig,
                               attachment: Attachment) -> None:
        configure(nl, config, attachment)  # type: ignore[arg-type]
        raise OSError(errno.ENOBUFS, "injected failure")

    monkeypatch.setattr(attachment_module, "_configure_inside", fail_after_the_address)
    with pytest.raises(UnavailableError, match=r"cannot configure eth0 .*: injected failure"):
        attach(CONFIG, state, _cid(1), container.pid)
    assert _veths() == {}
    assert _allocations(state) == {}
    with netns.inside(container.pid), IPRoute() as ipr:
        assert not ipr.link_lookup(ifname="eth0")


def test_a_container_with_an_eth0_already_is_refused_and_nothing_is_left(
        node: netns.Node, state: Path) -> None:
    container = node.container()
    with netns.inside(container.pid), IPRoute() as ipr:
        ipr.link("add", ifname="eth0", kind="veth", peer="other0")
    with pytest.raises(FailedPreconditionError, match="has an eth0 already"):
        attach(CONFIG, state, _cid(1), container.pid)
    assert _veths() == {}
    assert _allocations(state) == {}


def test_attaching_a_container_twice_is_refused_and_keeps_the_first_attachment(
        node: netns.Node, state: Path) -> None:
    container = node.container()
    first = attach(CONFIG, state, _cid(1), container.pid)
    with pytest.raises(AlreadyExistsError, match=f"{first.host_veth} exists already"):
        attach(CONFIG, state, _cid(1), container.pid)
    assert _veths() == {first.host_veth: _cid(1)}
    assert _allocations(state) == {_cid(1): first.ip}


def test_attach_refuses_a_gone_process_and_the_node_namespace_itself(
        node: netns.Node, state: Path) -> None:
    gone = node.container()
    gone.kill()
    with pytest.raises(NotFoundError, match=f"no process {gone.pid}"):
        attach(CONFIG, state, _cid(1), gone.pid)
    with pytest.raises(InvalidArgumentError, match="shares the node's network namespace"):
        attach(CONFIG, state, _cid(1), os.getpid())  # our main thread is in the node's
    assert _veths() == {}
    assert _allocations(state) == {}


def test_attach_without_the_bridge_is_a_failed_precondition(state: Path) -> None:
    with netns.private_node() as node:
        container = node.container()
        with pytest.raises(FailedPreconditionError, match="ensure_bridge must run first"):
            attach(CONFIG, state, _cid(1), container.pid)
    assert _allocations(state) == {}


def test_a_container_that_exits_takes_its_veth_along_and_detach_releases_its_address(
        node: netns.Node, state: Path) -> None:
    container = node.container()
    attach(CONFIG, state, _cid(1), container.pid)
    container.kill()
    deadline = time.monotonic() + TIMEOUT
    while _veths() and time.monotonic() < deadline:  # namespaces are freed asynchronously
        time.sleep(0.01)
    assert _veths() == {}
    assert _allocations(state) == {_cid(1): IPv4Address("10.201.0.2")}
    detach(CONFIG, state, _cid(1))
    assert _allocations(state) == {}


def test_orphans_of_unknown_containers_are_removed_and_the_rest_kept(
        node: netns.Node, state: Path) -> None:
    kept, orphan = node.container(), node.container()
    at_kept = attach(CONFIG, state, _cid(1), kept.pid)
    at_orphan = attach(CONFIG, state, _cid(2), orphan.pid)
    with Ipam(state, CONFIG) as ipam:
        ipam.allocate(_cid(3))  # a crash between allocation and veth
    with IPRoute() as ipr:  # someone else's port on the bridge: never ours to remove
        (bridge,) = ipr.link_lookup(ifname=CONFIG.bridge)
        ipr.link("add", ifname="uplink0", kind="veth", peer="uplink1", master=bridge)
    orphans = remove_orphans(CONFIG, state, known={_cid(1)})
    assert orphans == Orphans(veths=(at_orphan.host_veth,),
                              released=tuple(sorted([_cid(2), _cid(3)])))
    assert set(_veths()) == {at_kept.host_veth, "uplink0", "uplink1"}
    assert _allocations(state) == {_cid(1): at_kept.ip}
    assert remove_orphans(CONFIG, state, known={_cid(1)}) == Orphans(veths=(), released=())


def test_attach_and_detach_work_when_called_from_a_running_event_loop(
        node: netns.Node, state: Path) -> None:
    # pyroute2's synchronous API fails in a thread that runs an event loop; ours must not.
    container = node.container()

    async def daemon() -> Attachment:
        attachment = attach(CONFIG, state, _cid(1), container.pid)
        detach(CONFIG, state, _cid(1))
        return attachment

    assert asyncio.run(daemon()).ip == IPv4Address("10.201.0.2")
    assert _veths() == {}
