"""The network's bridge: created once with the gateway address, refused when something else
holds the name or the subnet. Every test runs in a private node namespace (tests/shim/netns.py)."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from socket import AF_INET

import pytest
from pyroute2 import IPRoute  # type: ignore[import-untyped]

from dockyard_shim.errors import FailedPreconditionError
from dockyard_shim.network import NetworkConfig, ensure_bridge, remove_bridge
from tests.shim import netns

pytestmark = pytest.mark.root

CONFIG = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.201.0.0/24"), mtu=1400)


@pytest.fixture
def node() -> Iterator[netns.Node]:
    with netns.private_node() as node:
        yield node


def _bridge() -> tuple[str, int, bool, list[str]]:
    with IPRoute() as ipr:
        (link,) = ipr.link("get", ifname=CONFIG.bridge)
        addresses = [f"{a.get('address')}/{a['prefixlen']}"
                     for a in ipr.addr("dump", family=AF_INET, index=link["index"])]
        return (link.get(("linkinfo", "kind")), link.get("mtu"), bool(link["flags"] & 1),
                addresses)


def test_ensure_bridge_makes_an_up_bridge_with_the_gateway_and_is_idempotent(
        node: netns.Node) -> None:
    ensure_bridge(CONFIG)
    assert _bridge() == ("bridge", 1400, True, ["10.201.0.1/24"])
    ensure_bridge(CONFIG)
    assert _bridge() == ("bridge", 1400, True, ["10.201.0.1/24"])


def test_a_bridge_found_down_and_without_address_is_completed(node: netns.Node) -> None:
    with IPRoute() as ipr:
        ipr.link("add", ifname=CONFIG.bridge, kind="bridge")
    ensure_bridge(CONFIG)
    kind, _, up, addresses = _bridge()
    assert (kind, up, addresses) == ("bridge", True, ["10.201.0.1/24"])


def test_an_existing_bridge_with_another_address_is_refused_naming_both(
        node: netns.Node) -> None:
    with IPRoute() as ipr:
        ipr.link("add", ifname=CONFIG.bridge, kind="bridge")
        (index,) = ipr.link_lookup(ifname=CONFIG.bridge)
        ipr.addr("add", index=index, address="10.202.0.1", prefixlen=16)
    with pytest.raises(FailedPreconditionError,
                       match=r"dytest0 exists with address 10\.202\.0\.1/16, not 10\.201\.0\.1/24"):
        ensure_bridge(CONFIG)


def test_an_interface_of_that_name_that_is_no_bridge_is_refused(node: netns.Node) -> None:
    with IPRoute() as ipr:
        ipr.link("add", ifname=CONFIG.bridge, kind="veth", peer="dytestpeer")
    with pytest.raises(FailedPreconditionError, match="is a veth, not a bridge"):
        ensure_bridge(CONFIG)
    with pytest.raises(FailedPreconditionError, match="not removing it"):
        remove_bridge(CONFIG)


def test_a_subnet_that_overlaps_a_route_of_the_node_is_refused(node: netns.Node) -> None:
    with IPRoute() as ipr:  # the node's "LAN" on another bridge, overlapping ours
        ipr.link("add", ifname="dylan0", kind="bridge", state="up")
        (index,) = ipr.link_lookup(ifname="dylan0")
        ipr.addr("add", index=index, address="10.201.0.129", prefixlen=25)
    with pytest.raises(FailedPreconditionError, match=r"overlaps the route to 10\.201\.0\.128/25 "
                                                      r"via dylan0"):
        ensure_bridge(CONFIG)
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=CONFIG.bridge)


def test_forwarding_is_enabled_only_when_asked_and_only_in_the_node_namespace(
        node: netns.Node) -> None:
    # A new namespace inherits the host's value; set ours to 0 first. private_node() checks,
    # on the way out, that the test process's own value is unchanged: the writes went to
    # the node namespace's copy.
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    forward.write_text("0\n")
    ensure_bridge(CONFIG)
    assert forward.read_text() == "0\n"
    ensure_bridge(CONFIG, enable_forwarding=True)
    assert forward.read_text() == "1\n"


def test_remove_bridge_deletes_it_and_is_idempotent(node: netns.Node) -> None:
    ensure_bridge(CONFIG)
    remove_bridge(CONFIG)
    remove_bridge(CONFIG)
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=CONFIG.bridge)


def test_the_private_node_namespace_hides_the_bridge_from_the_test_process() -> None:
    with netns.private_node():
        ensure_bridge(CONFIG)
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=CONFIG.bridge)
