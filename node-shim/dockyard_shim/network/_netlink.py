"""Netlink (rtnetlink) through pyroute2: typed, in a chosen network namespace, from any thread.

Two facts shape this module:
- Network namespaces belong to threads: setns(CLONE_NEWNET) moves only the calling thread,
  a new thread starts in its creator's namespace, and a socket stays in the namespace it
  was created in, whoever uses it later.
- pyroute2 0.9's synchronous `IPRoute` drives an asyncio loop of its own, and so fails
  ("This event loop is already running") in a thread that runs a loop: the daemon's.

So every netlink conversation runs in a short-lived thread of its own (`run`). That thread
starts in the caller's namespace (the node's, by definition: whatever namespace the caller
is in), or enters the namespace it is given first, then opens an `IPRoute` there. The
caller's thread is never moved, which makes the functions above safe to call from the
daemon's event loop (they block for a few milliseconds; the daemon may prefer
`asyncio.to_thread`).

Only mechanism here, no policy: thin typed wrappers, pyroute2's `NetlinkError` translated
to `OSError` with the kernel's errno (as the kernel seam does), and `failing`, which turns
an OSError into the shim's error categories at the package's boundary.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from socket import AF_INET
from typing import Any, TypeVar

from dockyard_shim.errors import AlreadyExistsError, ShimError, UnavailableError
from dockyard_shim.kernel import CLONE_NEWNET, Kernel, LinuxKernel

T = TypeVar("T")

_IFF_UP = 0x1
_RT_TABLE_MAIN = 254


@cache
def _kernel() -> Kernel:
    return LinuxKernel()


@cache
def _pyroute2() -> tuple[Any, Any]:
    """pyroute2's `IPRoute` and `NetlinkError`, imported on first use: the import takes a
    quarter of a second, which every CLI command that imports the runtime would pay."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]  # noqa: PLC0415
    from pyroute2.netlink.exceptions import (  # type: ignore[import-untyped]  # noqa: PLC0415
        NetlinkError,
    )
    return IPRoute, NetlinkError


@dataclass(frozen=True)
class Link:
    """An interface as rtnetlink reports it."""

    index: int
    name: str
    kind: str | None
    """`bridge`, `veth`…; None for devices without link info (lo, most hardware)."""
    master: int | None
    """The index of the bridge this interface is a port of."""
    alias: str | None
    mtu: int
    up: bool
    mac: str | None


@dataclass(frozen=True)
class Route:
    dst: IPv4Network
    oif: int | None


@contextmanager
def _errors() -> Iterator[None]:
    _, netlink_error = _pyroute2()
    try:
        yield
    except netlink_error as e:
        code = int(e.code)
        raise OSError(code, os.strerror(code)) from e


def _link(msg: Any) -> Link:
    return Link(index=int(msg["index"]), name=str(msg.get("ifname")),
                kind=msg.get(("linkinfo", "kind")), master=msg.get("master"),
                alias=msg.get("ifalias"), mtu=int(msg.get("mtu") or 0),
                up=bool(int(msg["flags"]) & _IFF_UP), mac=msg.get("address"))


class Netlink:
    """The rtnetlink operations the network package needs, in one namespace."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def links(self) -> list[Link]:
        with _errors():
            return [_link(msg) for msg in self._ipr.link("dump")]

    def link(self, name: str) -> Link | None:
        """The interface called `name`, or None."""
        try:
            with _errors():
                return _link(self._ipr.link("get", ifname=name)[0])
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise

    def add_bridge(self, name: str, *, mtu: int, mac: str) -> None:
        with _errors():
            self._ipr.link("add", ifname=name, kind="bridge", mtu=mtu, address=mac)

    def add_veth(self, name: str, *, master: int, mtu: int, peer_name: str,
                 peer_netns_fd: int, peer_mac: str) -> None:
        """Create a veth pair: `name` here, a port of `master`, up; its peer in another
        namespace under its final name (one request: no moment when the peer sits in this
        namespace under a temporary name)."""
        with _errors():
            self._ipr.link("add", ifname=name, kind="veth", master=master, mtu=mtu,
                           state="up",
                           peer={"ifname": peer_name, "net_ns_fd": peer_netns_fd,
                                 "mtu": mtu, "address": peer_mac})

    def set_up(self, index: int) -> None:
        with _errors():
            self._ipr.link("set", index=index, state="up")

    def set_alias(self, index: int, alias: str) -> None:
        # The kernel ignores IFLA_IFALIAS when it creates a link: set it afterwards.
        with _errors():
            self._ipr.link("set", index=index, ifalias=alias)

    def delete(self, index: int) -> None:
        with _errors():
            self._ipr.link("del", index=index)

    def addresses(self, index: int) -> list[IPv4Interface]:
        with _errors():
            return [IPv4Interface(f"{msg.get('address')}/{msg['prefixlen']}")
                    for msg in self._ipr.addr("dump", family=AF_INET, index=index)]

    def add_address(self, index: int, address: IPv4Interface) -> None:
        with _errors():
            self._ipr.addr("add", index=index, address=str(address.ip),
                           prefixlen=address.network.prefixlen)

    def add_default_route(self, gateway: IPv4Address) -> None:
        with _errors():
            self._ipr.route("add", dst="default", gateway=str(gateway))

    def routes(self) -> list[Route]:
        """The IPv4 routes of the main table."""
        with _errors():
            found = []
            for msg in self._ipr.route("dump", family=AF_INET, table=_RT_TABLE_MAIN):
                dst = IPv4Network((msg.get("dst") or 0, msg["dst_len"]), strict=False)
                found.append(Route(dst, msg.get("oif")))
            return found


def run(fn: Callable[[Netlink], T], *, netns_fd: int | None = None) -> T:
    """`fn(netlink)` in a thread of its own, in the caller's namespace or in `netns_fd`'s.

    Blocks until `fn` returns; its result is returned and its exception raised here.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            if netns_fd is not None:
                _kernel().setns(netns_fd, CLONE_NEWNET)  # this thread only
            with _errors():
                ipr = _pyroute2()[0]()
            try:
                outcome.append(fn(Netlink(ipr)))
            finally:
                ipr.close()
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=body, name="dockyard-netlink")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


@contextmanager
def failing(what: str) -> Iterator[None]:
    """Turn the kernel's refusal (OSError) into the shim's categories, saying what failed."""
    try:
        yield
    except ShimError:
        raise
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.EEXIST:
            raise AlreadyExistsError(f"{what}: {reason}") from e
        raise UnavailableError(f"{what}: {reason}") from e
