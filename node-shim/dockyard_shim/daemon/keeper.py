"""The keeper: the small parent of the node daemon that makes killing the daemon harmless.

    keeper (child subreaper, holds the node lock)
      └─ server (child subreaper: the HTTP API and the runtime)
           └─ containers' first processes

If the server dies, even by SIGKILL, its containers are reparented to the keeper, which
reaps them and records their exit status in their bundles (found through `pids/<pid>`),
and starts a new server, which finds every container again. If the keeper dies, the
server keeps serving. On SIGTERM the keeper stops the server and then stays only as long
as orphaned containers remain, so that their exit status is still recorded.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from dockyard_common import get_logger
from dockyard_shim.errors import UnavailableError
from dockyard_shim.kernel import LinuxKernel
from dockyard_shim.runtime.process import become_subreaper, record_exit

log = get_logger(__name__)

_QUICK_EXIT = 2.0  # a server that dies this soon after starting is failing, not crashing
_MAX_QUICK_EXITS = 5
_MAX_BACKOFF = 10.0


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


class Keeper:
    """Runs `serve` in a child process, restarts it, and adopts orphaned containers."""

    def __init__(self, root: Path, serve: Callable[[], int]) -> None:
        self._root = root
        self._serve = serve
        self._server: int | None = None
        self._started = 0.0
        self._stopping = False

    def run(self) -> int:
        become_subreaper(LinuxKernel())
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self._start()
        quick_exits, backoff = 0, 0.1
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0  # no server and no orphaned container left
            except InterruptedError:
                continue
            if pid != self._server:
                self._adopted_exit(pid, status)
                continue
            self._server = None
            if self._stopping:
                continue  # keep reaping orphans until none is left
            quick = time.monotonic() - self._started < _QUICK_EXIT
            quick_exits = quick_exits + 1 if quick else 0
            if quick_exits >= _MAX_QUICK_EXITS:
                log.error("the server keeps failing at start; giving up", status=status)
                return 1
            log.warning("the server exited; restarting it", status=status, delay=backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF) if quick else 0.1
            self._start()

    def _start(self) -> None:
        self._started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = self._serve()
            finally:
                os._exit(code)
        self._server = pid

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        if self._server is not None:
            os.kill(self._server, signal.SIGTERM)

    def _adopted_exit(self, pid: int, status: int) -> None:
        """A container of a dead server exited: record its status where the server looks."""
        index = self._root / "pids" / str(pid)
        try:
            bundle = Path(index.read_text())
        except OSError:
            return  # not a container (a stray descendant): nothing to record
        if bundle.is_dir():
            record_exit(bundle, status)
        log.info("recorded the exit of an adopted container", pid=pid, bundle=str(bundle))
