"""Private network namespaces for the network tests: one for the node, one per container.

The rule these helpers enforce: a test never creates a bridge, a veth or a private address
in the test process's own network namespace. `private_node()` moves the calling thread
(pytest's main thread) into a fresh network namespace for the duration of a test and back
again; threads started meanwhile start in it too, so the package under test, which treats
"the caller's namespace" as the node's, builds its bridge there. A "container" is a forked
child that unshares a network namespace of its own, brings `lo` up (as spawn's init does)
and sleeps until it is killed.

When the test is over, `private_node()` kills the containers, returns the thread to its
namespace, and checks that the test process's interfaces and ip_forward are as they were,
and that no thread, process or namespace fd keeps the private namespace alive (an
unclosed socket would too: pytest turns its ResourceWarning into an error).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dockyard_shim.kernel import CLONE_NEWNET, LinuxKernel
from dockyard_shim.runtime.loopback import loopback_up

_KERNEL = LinuxKernel()
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _own_namespace() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def _setns(fd: int) -> None:
    _KERNEL.setns(fd, CLONE_NEWNET)


@dataclass
class Container:
    """A child process alone in a network namespace of its own."""

    pid: int
    alive: bool = True

    def kill(self) -> None:
        """SIGKILL and reap it; its namespace (and the veth in it) goes away. Idempotent."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.alive = False


@dataclass
class Node:
    """The test's private node namespace and the containers started in it."""

    inode: int
    containers: list[Container] = field(default_factory=list)

    def container(self) -> Container:
        """Fork a child that unshares its network namespace; return once it has."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: only syscalls, and always os._exit
            try:
                os.close(ready_r)
                _KERNEL.unshare(CLONE_NEWNET)
                loopback_up()
                os.write(ready_w, b"r")
                while True:
                    signal.pause()
            finally:
                os._exit(1)
        os.close(ready_w)
        container = Container(pid)
        self.containers.append(container)
        try:
            if os.read(ready_r, 1) != b"r":
                raise RuntimeError("the container process failed to unshare its network")
        finally:
            os.close(ready_r)
        return container

    def close(self) -> None:
        for container in self.containers:
            container.kill()


@contextlib.contextmanager
def inside(pid: int) -> Iterator[None]:
    """Run the block with the calling thread in process `pid`'s network namespace.

    Sockets made in the block stay in that namespace after it ends, wherever they are used.
    """
    back = _own_namespace()
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(target)
        os.close(back)


@contextlib.contextmanager
def private_node() -> Iterator[Node]:
    """Move the calling thread into a fresh network namespace (lo up) for the block."""
    interfaces, forwarding = _interfaces(), _IP_FORWARD.read_text()
    back = _own_namespace()
    try:
        _KERNEL.unshare(CLONE_NEWNET)
        node = Node(inode=os.stat("/proc/thread-self/ns/net").st_ino)
        try:
            loopback_up()
            yield node
        finally:
            try:
                node.close()
            finally:
                _setns(back)
    finally:
        os.close(back)
    gc.collect()  # sockets held only by garbage would keep the namespace alive
    assert _interfaces() == interfaces, "the test changed the test process's interfaces"
    assert _IP_FORWARD.read_text() == forwarding, "the test changed the host's ip_forward"
    holders = _holders(node.inode)
    assert not holders, f"the private node namespace is still in use: {holders}"


def _interfaces() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def _holders(inode: int) -> list[str]:
    """What still refers to the network namespace `inode`: tasks and our own fds."""
    link = f"net:[{inode}]"
    found = []
    for path in [*Path("/proc").glob("[0-9]*/ns/net"), *Path("/proc/self/task").glob("*/ns/net")]:
        with contextlib.suppress(OSError):
            if os.readlink(path) == link:
                found.append(str(path))
    for path in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(path) == link:
                found.append(str(path))
    return found
