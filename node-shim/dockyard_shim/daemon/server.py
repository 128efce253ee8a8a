"""`dockyard shim`: serve the node's API on a unix socket until told to stop.

Containers outlive the daemon: each has its own monitor process, so stopping or killing
the daemon stops no container, and a restarted daemon finds them all again from the
state store and /proc. The daemon watches every running container's monitor through a
pidfd (which works for processes it did not start, too) and records exits as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from pathlib import Path

from aiohttp import web

from dockyard_common import get_logger
from dockyard_shim.daemon.api import Handler, make_app
from dockyard_shim.daemon.node import Node
from dockyard_shim.errors import UnavailableError
from dockyard_shim.runtime.state import Status

log = get_logger(__name__)


class ExitWatcher:
    """Records a container's exit as soon as its monitor ends."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self._node = node
        self._loop = loop
        self._watched: dict[int, int] = {}  # monitor pid -> pidfd

    def sync(self) -> None:
        """Watch every running container's monitor not watched yet."""
        for record in self._node.runtime.store.all():
            if record.status in (Status.RUNNING, Status.PAUSED) and record.monitor_pid \
                    and record.monitor_pid not in self._watched:
                try:
                    fd = os.pidfd_open(record.monitor_pid)
                except ProcessLookupError:
                    self._node.runtime.observe(record)  # exited while nobody watched
                    continue
                self._watched[record.monitor_pid] = fd
                self._loop.add_reader(fd, self._exited, record.monitor_pid, record.id)

    def _exited(self, monitor_pid: int, container_id: str) -> None:
        fd = self._watched.pop(monitor_pid)
        self._loop.remove_reader(fd)
        os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(monitor_pid, os.WNOHANG)  # reap it when we are its parent
        with contextlib.suppress(Exception):
            record = self._node.runtime.observe(self._node.runtime.store.get(container_id))
            log.info("container exited", container=record.name, exit_code=record.exit_code,
                     oom_killed=record.oom_killed)

    def close(self) -> None:
        for fd in self._watched.values():
            self._loop.remove_reader(fd)
            os.close(fd)
        self._watched.clear()


def lock_root(root: Path) -> int:
    """Hold the node's daemon lock for the life of this process; refuse a second daemon.

    Two daemons on one state root would both reap and restart the same containers. The
    lock is an flock, so the kernel releases it when a daemon dies, even by SIGKILL.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UnavailableError(
            f"another dockyard daemon (pid {holder}) already serves {root}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


async def serve(node: Node, socket: Path, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT; containers keep running afterwards."""
    app = make_app(node.runtime)
    loop = asyncio.get_running_loop()
    watcher = ExitWatcher(node, loop)

    @web.middleware
    async def resync(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            watcher.sync()  # a start may have added a container to watch

    app.middlewares.append(resync)
    socket.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    socket.unlink(missing_ok=True)  # a stale socket from a daemon that was killed
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(socket))
    await site.start()
    socket.chmod(0o660)  # root and the socket's group only: the API runs containers as root
    watcher.sync()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("dockyard shim listening", socket=str(socket), root=str(node.root),
             cgroup_version=node.cgroups.version)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        watcher.close()
        await runner.cleanup()
        socket.unlink(missing_ok=True)
        log.info("dockyard shim stopped; containers keep running")
