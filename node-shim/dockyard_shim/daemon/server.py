"""The node daemon's server: the API on a unix socket, until told to stop.

Containers outlive the server: stopping or killing it stops no container (the keeper
adopts them meanwhile), and a restarted server finds them all again from the state store
and /proc. It watches every running container through a pidfd (which works for processes
it did not start, too) and records exits as they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from dockyard_common import get_logger
from dockyard_shim.daemon.api import Handler, make_app
from dockyard_shim.daemon.node import Node
from dockyard_shim.daemon.ports import PublishedPorts
from dockyard_shim.daemon.transfer import TransferConfig, transfer_app
from dockyard_shim.errors import ShimError
from dockyard_shim.runtime.restart import restart_delay
from dockyard_shim.runtime.state import ContainerRecord, Status

log = get_logger(__name__)


class ExitWatcher:
    """Records a container's exit as soon as its first process ends."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop,
                 changed: Callable[[], None]) -> None:
        self._node = node
        self._loop = loop
        self._changed = changed  # called in the loop's thread after an exit or a restart
        self._watched: dict[int, int] = {}  # container pid -> pidfd
        self._tasks: set[asyncio.Task[None]] = set()

    def sync(self, records: list[ContainerRecord] | None = None) -> None:
        """Watch every running container (of `records`, default all) not watched yet."""
        for record in self._node.runtime.store.all() if records is None else records:
            if record.status in (Status.RUNNING, Status.PAUSED) and record.pid \
                    and record.pid not in self._watched:
                try:
                    fd = os.pidfd_open(record.pid)
                except ProcessLookupError:
                    self._node.runtime.observe(record)  # exited while nobody watched
                    continue
                self._watched[record.pid] = fd
                self._loop.add_reader(fd, self._exited, record.pid, record.id)

    def _exited(self, pid: int, container_id: str) -> None:
        fd = self._watched.pop(pid)
        self._loop.remove_reader(fd)
        os.close(fd)
        self._loop.run_in_executor(None, self._record, container_id)

    def _record(self, container_id: str) -> None:
        runtime = self._node.runtime
        self._loop.call_soon_threadsafe(self._changed)
        with contextlib.suppress(ShimError):  # removed meanwhile: nothing to record
            record = runtime.observe(runtime.store.get(container_id))
            log.info("container exited", container=record.name, exit_code=record.exit_code,
                     oom_killed=record.oom_killed)
            if record.config.get("auto_remove"):
                runtime.delete(record.id)  # run -d --rm
                return
            self.consider_restart(record)

    def consider_restart(self, record: ContainerRecord) -> None:
        """Schedule a restart if the container's policy wants one (thread-safe)."""
        delay = restart_delay(record)
        if delay is not None:
            log.info("restarting by policy", container=record.name, delay=delay,
                     policy=record.config.get("restart"))
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, self._restart,
                                            record.id, delay)

    def _restart(self, container_id: str, delay: float) -> None:
        async def restart() -> None:
            try:
                await asyncio.to_thread(self._node.runtime.start, container_id,
                                        backoff=delay)
            except ShimError as e:
                log.warning("restart by policy failed", container=container_id, error=str(e))
                record = await asyncio.to_thread(self._node.runtime.store.get, container_id)
                self.consider_restart(record)
            self.sync()
            self._changed()

        self._tasks.add(task := self._loop.create_task(restart()))
        task.add_done_callback(self._tasks.discard)

    def restart_stopped(self) -> None:
        """At start-up: apply restart policies to containers that stopped meanwhile."""
        for record in self._node.runtime.list(all_=True):
            if record.status is Status.STOPPED:
                self.consider_restart(record)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for fd in self._watched.values():
            self._loop.remove_reader(fd)
            os.close(fd)
        self._watched.clear()


async def _serve_transfers(node: Node) -> web.AppRunner | None:
    """The transfer listener, when this node is configured to serve volumes to peers."""
    config = TransferConfig.from_env()
    if config is None:
        return None
    runner = web.AppRunner(transfer_app(node.runtime.volumes, config.token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    log.info("serving volume transfers", listen=f"{config.host}:{config.port}")
    return runner


async def serve(node: Node, socket: Path, *, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM or SIGINT; containers keep running afterwards."""
    app = make_app(node.runtime, node.images)
    loop = asyncio.get_running_loop()
    ports = PublishedPorts(node.runtime)
    tasks: set[asyncio.Task[None]] = set()

    def ports_changed() -> None:
        tasks.add(task := loop.create_task(ports.sync()))
        task.add_done_callback(tasks.discard)

    watcher = ExitWatcher(node, loop, ports_changed)

    @web.middleware
    async def resync(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            if request.method != "GET":  # only a change can add a container to watch
                records = node.runtime.store.all()
                watcher.sync(records)
                await ports.sync(records)

    app.middlewares.append(resync)
    socket.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    socket.unlink(missing_ok=True)  # a stale socket from a daemon that was killed
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(socket))
    await site.start()
    socket.chmod(0o660)  # root and the socket's group only: the API runs containers as root
    transfers = await _serve_transfers(node)
    records = node.runtime.store.all()
    watcher.sync(records)
    await ports.sync(records)  # a new daemon publishes the ports of running containers again
    await asyncio.to_thread(watcher.restart_stopped)
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
        await ports.close()
        await runner.cleanup()
        if transfers is not None:
            await transfers.cleanup()
        socket.unlink(missing_ok=True)
        log.info("dockyard shim stopped; containers keep running")
