"""Connect a container to the bridge, disconnect it, and sweep what a crash left behind.

`attach` gives a container's network namespace an `eth0`: one end of a veth pair whose
other end (`dy<id>`) is a port of the bridge in the node namespace (the caller's). The
peer is created directly inside the container's namespace under its final name, so no
half-made interface is ever visible in the node namespace. The steps: allocate the
address, create the pair, configure the inside (address, link up, default route); a
failure anywhere deletes the pair (the peer goes with it) and releases the address.

Every change is made under an exclusive lock on the state directory, so an attach, a
detach and the orphan sweep never interleave, in one process or across several.

The host end carries the full container id in its alias (`ip -d link` shows it), which is
how the sweep tells whose a veth is; veths whose name does not start with `dy` are never
touched, whatever else is plugged into the bridge.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.network import _netlink
from dockyard_shim.network.config import (
    CONTAINER_IFNAME,
    HOST_VETH_PREFIX,
    NetworkConfig,
    host_veth_name,
    mac_for,
)
from dockyard_shim.network.ipam import Ipam

LOCK_NAME = "network.lock"


@dataclass(frozen=True)
class Attachment:
    """A container's place on the network."""

    ip: IPv4Address
    """eth0's address, with the subnet's prefix length."""
    gateway: IPv4Address
    """The default route's next hop: the bridge's address."""
    host_veth: str
    """The bridge port in the node namespace."""
    mac: str
    """eth0's MAC address."""


@dataclass(frozen=True)
class Orphans:
    """What `remove_orphans` removed."""

    veths: tuple[str, ...]
    """Host veths deleted from the bridge."""
    released: tuple[str, ...]
    """Container ids whose addresses were released."""


def attach(config: NetworkConfig, state_dir: Path, container_id: str,
           pid: int) -> Attachment:
    """Give the network namespace of process `pid` an eth0 on the bridge.

    The runtime calls this from spawn's `connect(pid)` hook: the container's namespace
    exists, its command has not started. The bridge must exist (`ensure_bridge`).
    AlreadyExistsError when the container is attached already; NotFoundError when the
    process is gone; InvalidArgumentError when it shares the node's namespace. On any
    failure nothing is left behind: no veth, no address.
    """
    name = host_veth_name(container_id)
    try:
        netns_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError) as e:
        raise NotFoundError(f"cannot attach container {container_id}: no process {pid}") \
            from e
    except OSError as e:
        raise UnavailableError(f"cannot attach container {container_id}: the network "
                               f"namespace of process {pid}: {e.strerror or e}") from e
    try:
        _refuse_node_namespace(netns_fd, pid)
        with _locked(state_dir), Ipam(state_dir, config) as ipam:
            with _netlink.failing(f"cannot attach container {container_id}"):
                bridge = _netlink.run(lambda nl: _check_attachable(nl, config, name))
            ip = ipam.allocate(container_id)
            attachment = Attachment(ip=ip, gateway=config.gateway, host_veth=name,
                                    mac=mac_for(ip))
            try:
                with _netlink.failing(f"cannot create veth {name} for {container_id}"):
                    _netlink.run(lambda nl: _create_pair(
                        nl, config, attachment, container_id=container_id, bridge=bridge,
                        netns_fd=netns_fd))
                with _netlink.failing(f"cannot configure {CONTAINER_IFNAME} of {container_id}"):
                    _netlink.run(lambda nl: _configure_inside(nl, config, attachment),
                                 netns_fd=netns_fd)
            except BaseException:
                try:
                    with _netlink.failing(f"cannot delete veth {name}"):
                        _netlink.run(lambda nl: _delete_veth(nl, name, container_id))
                finally:
                    ipam.release(container_id)
                raise
    finally:
        os.close(netns_fd)
    return attachment


def _refuse_node_namespace(netns_fd: int, pid: int) -> None:
    # A process in our own namespace (a `host` network container, a typo'd pid) would get
    # an eth0 and a default route in the node namespace: never do that.
    ours = os.stat("/proc/thread-self/ns/net")
    theirs = os.fstat(netns_fd)
    if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino):
        raise InvalidArgumentError(
            f"process {pid} shares the node's network namespace: only a container with a "
            "network namespace of its own can be attached to a bridge")


def _check_attachable(nl: _netlink.Netlink, config: NetworkConfig, name: str) -> int:
    """The bridge's index, after checking that the container is not attached yet."""
    bridge = nl.link(config.bridge)
    if bridge is None or bridge.kind != "bridge":
        raise FailedPreconditionError(
            f"bridge {config.bridge} does not exist: ensure_bridge must run first")
    existing = nl.link(name)
    if existing is not None:
        raise AlreadyExistsError(
            f"interface {name} exists already (owner: {existing.alias or 'unknown'}): the "
            "container is attached, or another id shares its first characters; detach it "
            "first")
    return bridge.index


def _create_pair(nl: _netlink.Netlink, config: NetworkConfig, attachment: Attachment, *,
                 container_id: str, bridge: int, netns_fd: int) -> None:
    try:
        nl.add_veth(attachment.host_veth, master=bridge, mtu=config.mtu,
                    peer_name=CONTAINER_IFNAME, peer_netns_fd=netns_fd,
                    peer_mac=attachment.mac)
    except FileExistsError as e:  # the host name was free (checked): eth0 exists in there
        raise FailedPreconditionError(
            f"the container {container_id} has an {CONTAINER_IFNAME} already") from e
    link = nl.link(attachment.host_veth)
    if link is None:
        raise UnavailableError(f"veth {attachment.host_veth} vanished after creation")
    nl.set_alias(link.index, container_id)


def _configure_inside(nl: _netlink.Netlink, config: NetworkConfig,
                      attachment: Attachment) -> None:
    """Runs inside the container's namespace: address, link up, default route."""
    eth0 = nl.link(CONTAINER_IFNAME)
    if eth0 is None:
        raise UnavailableError(f"{CONTAINER_IFNAME} is missing in the container")
    nl.add_address(eth0.index, IPv4Interface(f"{attachment.ip}/{config.subnet.prefixlen}"))
    nl.set_up(eth0.index)
    nl.add_default_route(attachment.gateway)


def detach(config: NetworkConfig, state_dir: Path, container_id: str) -> None:
    """Delete the container's host veth (its eth0 goes with it) and release its address.

    Idempotent: after the container exited, the kernel has deleted the pair already (a
    veth dies with its peer's namespace) and only the address is released.
    """
    name = host_veth_name(container_id)
    with _locked(state_dir):
        with _netlink.failing(f"cannot detach container {container_id}"):
            _netlink.run(lambda nl: _delete_veth(nl, name, container_id))
        with Ipam(state_dir, config) as ipam:
            ipam.release(container_id)


def _delete_veth(nl: _netlink.Netlink, name: str, container_id: str) -> None:
    link = nl.link(name)
    if link is None or link.kind != "veth" or link.alias not in (None, container_id):
        return  # absent, or not ours: an id sharing the first characters owns it
    try:
        nl.delete(link.index)
    except OSError as e:
        if e.errno != errno.ENODEV:  # gone meanwhile
            raise


def remove_orphans(config: NetworkConfig, state_dir: Path,
                   known: Collection[str]) -> Orphans:
    """Remove the veths and addresses of containers that are not in `known`.

    For the daemon at start, before it attaches anything: `known` are the ids of the
    containers that are running (and should keep their network). A crash between attach
    and the runtime's record, or a detach that never ran, leaves such leftovers.
    """
    keep = set(known)
    with _locked(state_dir), Ipam(state_dir, config) as ipam:
        with _netlink.failing(f"cannot remove orphaned veths from {config.bridge}"):
            veths = _netlink.run(lambda nl: _remove_orphan_veths(nl, config, keep))
        released = [cid for cid in sorted(ipam.allocations()) if cid not in keep]
        for container_id in released:
            ipam.release(container_id)
    return Orphans(veths=tuple(veths), released=tuple(released))


def _remove_orphan_veths(nl: _netlink.Netlink, config: NetworkConfig,
                         keep: set[str]) -> list[str]:
    bridge = nl.link(config.bridge)
    if bridge is None:
        return []
    names = {host_veth_name(container_id) for container_id in keep}
    removed = []
    for link in nl.links():
        if (link.master != bridge.index or link.kind != "veth"
                or not link.name.startswith(HOST_VETH_PREFIX)):
            continue
        # The alias names the owner; without one (a crash between create and alias), the
        # name is all we have.
        if link.alias in keep or (link.alias is None and link.name in names):
            continue
        try:
            nl.delete(link.index)
        except OSError as e:
            if e.errno != errno.ENODEV:  # gone meanwhile
                raise
        removed.append(link.name)
    return removed


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's network lock (flock: released if the process dies)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
