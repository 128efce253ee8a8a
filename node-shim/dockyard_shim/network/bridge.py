"""The network's bridge in the node namespace: create it (idempotently) or remove it.

The node namespace is simply the namespace of the calling thread: the host's for the
daemon, a private one in tests. The bridge carries the gateway address, so the node itself
is reachable from containers at the gateway and reaches them through the bridge's
connected route.

What this module does not do: NAT. Containers reach each other and the node; reaching
beyond the node needs IP forwarding (`enable_forwarding=True`) and a masquerade rule,
which belongs to whoever owns the node's firewall.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

from dockyard_shim.errors import FailedPreconditionError
from dockyard_shim.network import _netlink
from dockyard_shim.network.config import NetworkConfig

# Per network namespace: the file is resolved in the namespace of the thread that opens it.
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def ensure_bridge(config: NetworkConfig, *, enable_forwarding: bool = False) -> None:
    """Make sure the bridge exists, carries the gateway address and is up.

    Idempotent. A bridge of that name with another IPv4 address, or an interface of that
    name that is no bridge, is a FailedPreconditionError that names what was found; so is
    a subnet that overlaps a route of the node (a LAN or another bridge), which would make
    part of the network unreachable.

    `enable_forwarding` sets net.ipv4.ip_forward=1 in the node namespace (containers'
    traffic to other networks is then routed). It is off by default because it changes a
    host-wide setting that the node's administrator may rely on; it is never turned off
    here, as other software may need it.
    """
    with _netlink.failing(f"cannot set up bridge {config.bridge}"):
        _netlink.run(lambda nl: _ensure(nl, config))
    if enable_forwarding:
        with _netlink.failing("cannot enable IP forwarding"):
            _IP_FORWARD.write_text("1\n")


def _ensure(nl: _netlink.Netlink, config: NetworkConfig) -> None:
    link = nl.link(config.bridge)
    if link is None:
        _check_no_overlap(nl, config)
        # Another process may win the race to create it; what it made is checked below.
        with contextlib.suppress(FileExistsError):
            nl.add_bridge(config.bridge, mtu=config.mtu, mac=config.bridge_mac)
        link = nl.link(config.bridge)
        if link is None:
            raise FailedPreconditionError(
                f"bridge {config.bridge} disappeared while it was being set up")
    if link.kind != "bridge":
        raise FailedPreconditionError(
            f"interface {config.bridge} exists and is a {link.kind or 'device'}, not a "
            "bridge: remove it or configure another bridge name")
    want = config.gateway_interface
    found = nl.addresses(link.index)
    if want not in found:
        if found:
            raise FailedPreconditionError(
                f"bridge {config.bridge} exists with address "
                f"{', '.join(str(a) for a in found)}, not {want}: remove the bridge "
                f"(ip link del {config.bridge}) or configure the subnet it uses")
        try:
            nl.add_address(link.index, want)
        except OSError as e:
            if e.errno != errno.EEXIST:  # a racing process added it
                raise
    if not link.up:
        nl.set_up(link.index)


def _check_no_overlap(nl: _netlink.Netlink, config: NetworkConfig) -> None:
    for route in nl.routes():
        if route.dst.prefixlen == 0:
            continue  # the default route overlaps everything, by design
        if route.dst.overlaps(config.subnet):
            where = next((link.name for link in nl.links() if link.index == route.oif),
                         "another interface")
            raise FailedPreconditionError(
                f"subnet {config.subnet} of bridge {config.bridge} overlaps the route to "
                f"{route.dst} via {where}: configure a subnet that the node does not use")


def remove_bridge(config: NetworkConfig) -> None:
    """Delete the bridge (its ports are detached, not deleted). Idempotent.

    For `dockyard down` and tests; the daemon leaves the bridge in place across restarts.
    """
    with _netlink.failing(f"cannot remove bridge {config.bridge}"):
        _netlink.run(lambda nl: _remove(nl, config))


def _remove(nl: _netlink.Netlink, config: NetworkConfig) -> None:
    link = nl.link(config.bridge)
    if link is None:
        return
    if link.kind != "bridge":
        raise FailedPreconditionError(
            f"interface {config.bridge} is a {link.kind or 'device'}, not a bridge: "
            "not removing it")
    try:
        nl.delete(link.index)
    except OSError as e:
        if e.errno != errno.ENODEV:  # gone meanwhile
            raise
