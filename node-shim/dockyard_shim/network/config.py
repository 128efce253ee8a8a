"""What a bridge network is: its bridge name, subnet and MTU, and the names derived from them.

Pure values and validation, no I/O. Everything else in the package takes a `NetworkConfig`,
so the product default (`dockyard0`, 10.88.0.0/16) lives here once and tests pass their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from dockyard_shim.errors import InvalidArgumentError

IFNAMSIZ = 16
"""The kernel's limit for an interface name, terminating NUL included (include/uapi/linux/if.h)."""

DEFAULT_BRIDGE = "dockyard0"
DEFAULT_SUBNET = IPv4Network("10.88.0.0/16")
"""The product default on nodes (podman's CNI default range). Docker's 172.17.0.0/16 is left
alone so that both can run on one machine; nodes whose LAN uses 10.88/16 must configure
another subnet, and `ensure_bridge` refuses one that overlaps a route of the node."""
DEFAULT_MTU = 1500

HOST_VETH_PREFIX = "dy"
CONTAINER_IFNAME = "eth0"

# The kernel accepts almost any byte in a name (dev_valid_name); we allow a safe subset so
# that a name is also a valid file name and shell word.
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class NetworkConfig:
    """One bridge network on a node: the bridge, the subnet its containers live in, the MTU.

    The gateway is the subnet's first host address; it sits on the bridge, and containers
    route through it. Build the value once (from the node's configuration) and pass it to
    every call: the same config must be used for the lifetime of the network's state.
    """

    bridge: str = DEFAULT_BRIDGE
    subnet: IPv4Network = DEFAULT_SUBNET
    mtu: int = DEFAULT_MTU

    def __post_init__(self) -> None:
        if len(self.bridge) >= IFNAMSIZ or not _IFNAME.match(self.bridge):
            raise InvalidArgumentError(
                f"bridge name {self.bridge!r}: use 1-{IFNAMSIZ - 1} letters, digits, '_', "
                "'.' or '-'")
        if not isinstance(self.subnet, IPv4Network):
            raise InvalidArgumentError(f"subnet {self.subnet!r}: pass an IPv4Network")
        if self.subnet.prefixlen > 29:
            # /30 and /31 leave room for the gateway and at most one container.
            raise InvalidArgumentError(
                f"subnet {self.subnet}: too small, use a prefix of /29 or shorter")
        if not 68 <= self.mtu <= 65535:  # IPv4's minimum MTU (RFC 791); a veth's maximum
            raise InvalidArgumentError(f"MTU {self.mtu}: use a value from 68 to 65535")

    @property
    def gateway(self) -> IPv4Address:
        """The bridge's own address: the first host address of the subnet."""
        return self.subnet.network_address + 1

    @property
    def bridge_mac(self) -> str:
        """Set explicitly: a bridge without its own MAC takes its lowest port's, so the
        gateway's MAC would change as containers come and go, and their ARP caches would
        point at a port that left."""
        return mac_for(self.gateway)

    @property
    def gateway_interface(self) -> IPv4Interface:
        """The gateway with the subnet's prefix, as it is set on the bridge."""
        return IPv4Interface(f"{self.gateway}/{self.subnet.prefixlen}")


def check_container_id(container_id: str) -> None:
    """Refuse ids that cannot name an interface or a row (InvalidArgumentError)."""
    if not _CONTAINER_ID.match(container_id):
        raise InvalidArgumentError(
            f"container id {container_id!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit")


def host_veth_name(container_id: str) -> str:
    """The host end of a container's veth: `dy` and the id's first 13 characters (15 in all).

    Docker ids (64 hex digits, as ours) make a clash between two containers unlikely; attach
    refuses one anyway, and the full id is kept in the interface's alias (`ifalias`).
    """
    check_container_id(container_id)
    return (HOST_VETH_PREFIX + container_id)[: IFNAMSIZ - 1]


def mac_for(ip: IPv4Address) -> str:
    """A locally administered MAC derived from the address, as Docker does (02:42:a.b.c.d).

    Deterministic, so a container keeps its MAC across restarts; unique within the subnet
    because addresses are. The bridge gets the gateway's.
    """
    return "02:42:" + ":".join(f"{byte:02x}" for byte in ip.packed)
