"""Each container gets an address of its own from the network's subnet, and the book survives
restarts. Pure SQLite: no root, no namespaces."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError
from dockyard_shim.network import DEFAULT_SUBNET, Ipam, NetworkConfig, host_veth_name

SMALL = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.123.0.0/29"))
"""Hosts .1 to .6: the gateway .1 and five container addresses."""


def _cid(n: int) -> str:
    return f"{n:064x}"


def test_the_product_default_is_dockyard0_on_10_88_with_the_gateway_first() -> None:
    config = NetworkConfig()
    assert (config.bridge, config.subnet, config.mtu) == ("dockyard0", DEFAULT_SUBNET, 1500)
    assert config.gateway == IPv4Address("10.88.0.1")
    assert str(config.gateway_interface) == "10.88.0.1/16"


@pytest.mark.parametrize("options", [
    {"bridge": "a-bridge-name-too-long"}, {"bridge": "br/0"}, {"bridge": ""},
    {"subnet": IPv4Network("10.1.2.0/30")}, {"subnet": "10.1.0.0/16"},
    {"mtu": 67}, {"mtu": 65536},
])
def test_a_config_the_kernel_would_refuse_is_refused_up_front(options: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        NetworkConfig(**options)  # type: ignore[arg-type]


def test_host_veth_names_fit_the_kernel_limit_and_refuse_odd_ids() -> None:
    assert host_veth_name(_cid(0xABC)) == "dy" + "0" * 13
    assert host_veth_name("web") == "dyweb"
    assert len(host_veth_name("f" * 64)) == 15
    for bad in ("", "../x", "a b", "-leading", "x" * 129):
        with pytest.raises(InvalidArgumentError):
            host_veth_name(bad)


def test_each_container_gets_its_own_address_and_never_the_gateway(tmp_path: Path) -> None:
    with Ipam(tmp_path, SMALL) as ipam:
        addresses = [ipam.allocate(_cid(n)) for n in range(5)]
    assert addresses == [IPv4Address(f"10.123.0.{n}") for n in range(2, 7)]


def test_allocating_again_for_the_same_container_returns_its_address(tmp_path: Path) -> None:
    with Ipam(tmp_path, SMALL) as ipam:
        first = ipam.allocate(_cid(1))
        ipam.allocate(_cid(2))
        assert ipam.allocate(_cid(1)) == first
        assert ipam.get(_cid(1)) == first
        assert ipam.allocations() == {_cid(1): first, _cid(2): first + 1}


def test_an_exhausted_subnet_is_unavailable_until_an_address_is_released(
        tmp_path: Path) -> None:
    with Ipam(tmp_path, SMALL) as ipam:
        for n in range(5):
            ipam.allocate(_cid(n))
        with pytest.raises(UnavailableError, match=r"all 5 addresses of 10\.123\.0\.0/29"):
            ipam.allocate(_cid(99))
        assert ipam.release(_cid(2)) == IPv4Address("10.123.0.4")
        assert ipam.allocate(_cid(99)) == IPv4Address("10.123.0.4")


def test_a_released_address_is_reused_only_after_the_free_ones(tmp_path: Path) -> None:
    with Ipam(tmp_path, SMALL) as ipam:
        a = ipam.allocate(_cid(1))
        assert ipam.release(_cid(1)) == a
        assert ipam.release(_cid(1)) is None  # idempotent
        later = [ipam.allocate(_cid(n)) for n in range(2, 7)]
    assert later[:4] == [a + 1, a + 2, a + 3, a + 4]
    assert later[4] == a  # wrapped around: the released address comes back last


def test_a_new_process_sees_the_allocations_of_the_previous_one(tmp_path: Path) -> None:
    with Ipam(tmp_path, SMALL) as ipam:
        ipam.allocate(_cid(1))
        ipam.allocate(_cid(2))
    script = textwrap.dedent(f"""
        from ipaddress import IPv4Network
        from pathlib import Path
        from dockyard_shim.network import Ipam, NetworkConfig
        config = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.123.0.0/29"))
        with Ipam(Path({str(tmp_path)!r}), config) as ipam:
            print(ipam.allocate({_cid(3)!r}), ipam.allocate({_cid(1)!r}))
    """)
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["10.123.0.4", "10.123.0.2"]
    with Ipam(tmp_path, SMALL) as ipam:
        assert sorted(ipam.allocations()) == [_cid(1), _cid(2), _cid(3)]


def test_concurrent_allocators_never_hand_out_one_address_twice(tmp_path: Path) -> None:
    config = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.123.0.0/26"))

    def allocate(worker: int) -> list[IPv4Address]:
        with Ipam(tmp_path, config) as ipam:  # a connection each, as separate processes
            return [ipam.allocate(_cid(worker * 100 + n)) for n in range(15)]

    with ThreadPoolExecutor(4) as pool:
        results = [address for batch in pool.map(allocate, range(4)) for address in batch]
    assert len(set(results)) == 60


def test_networks_sharing_a_state_directory_keep_separate_books(tmp_path: Path) -> None:
    other = NetworkConfig(bridge="dytest1", subnet=IPv4Network("10.124.0.0/29"))
    with Ipam(tmp_path, SMALL) as first, Ipam(tmp_path, other) as second:
        assert first.allocate(_cid(1)) == IPv4Address("10.123.0.2")
        assert second.allocate(_cid(1)) == IPv4Address("10.124.0.2")
        first.release(_cid(1))
        assert second.get(_cid(1)) == IPv4Address("10.124.0.2")


def test_the_subnet_of_a_network_in_use_cannot_change(tmp_path: Path) -> None:
    moved = NetworkConfig(bridge="dytest0", subnet=IPv4Network("10.99.0.0/24"))
    with Ipam(tmp_path, SMALL) as ipam:
        ipam.allocate(_cid(1))
    with pytest.raises(FailedPreconditionError,
                       match=r"1 address\(es\) allocated in 10\.123\.0\.0/29"):
        Ipam(tmp_path, moved)
    with Ipam(tmp_path, SMALL) as ipam:
        ipam.release(_cid(1))
    with Ipam(tmp_path, moved) as ipam:  # an empty network may move
        assert ipam.allocate(_cid(1)) == IPv4Address("10.99.0.2")
