"""A small helper process that makes containers' init processes for the daemon, cheaply.

Why: fork(2) copies the page tables of the process that calls it; the child then takes a
copy-on-write fault for each page it touches and runs Python's after-fork handlers, and
its exec tears the whole copied address space down again. Forked from the daemon (tens of
MB, several threads) that is ~3 ms of every container start; forked from this helper, a
fresh single-threaded interpreter that imported only the spawner, it is ~1 ms (measure
with `bench/run.py --only start`).

How: one request per start over a SOCK_SEQPACKET socket pair: the pickled `SandboxSpec`
and, as SCM_RIGHTS, init's ends of spawn's three pipes and the detached mounts the spec
hands over (a provider's export). The helper clones init with
CLONE_PARENT, so init is the daemon's child exactly as if the daemon had forked it: the
daemon reaps it, and the rest of spawn's protocol (place, ready, connect, go, exec) is
unchanged. The reply is `pid N`, or `error TEXT`.

The helper ends when its socket closes (the daemon closed it, or died). It ignores SIGINT,
so that a Ctrl-C at the daemon's terminal is the daemon's to handle (init's command gets
the default back, as every ignored signal: `process.default_signals`). If it dies, the
next start makes a new one.

    python -m dockyard_shim.runtime.forkserver FD     (FD: its end of the socket pair)
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import replace

from dockyard_shim.errors import UnavailableError
from dockyard_shim.kernel import Kernel, LinuxKernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.runtime.process import close_all
from dockyard_shim.runtime.spawn import InitPipes, SandboxSpec, run_init

_MESSAGE_MAX = 1 << 20  # a spec is a few KiB; its mounts and environment are bounded
_MAX_FDS = 253  # SCM_MAX_FD: the three pipes and the provider exports a spec carries


class ForkServer:
    """The daemon's side: a `Fork` for `spawn`, backed by the helper process.

    Safe to call from several threads (one request at a time). `close()` ends the helper.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Started now: its interpreter boots while the daemon does.
        self._helper, self._socket = _launch()

    def __call__(self, spec: SandboxSpec, pipes: InitPipes) -> int:
        request = pickle.dumps(spec)
        fds = [pipes.status_w, pipes.go_r, pipes.err_w, *_trees(spec)]
        with self._lock:
            for attempt in range(2):
                if self._helper.poll() is not None or attempt:
                    self._stop()
                    self._helper, self._socket = _launch()
                try:
                    socket.send_fds(self._socket, [request], fds)
                    reply = self._socket.recv(_MESSAGE_MAX).decode()
                except (BrokenPipeError, ConnectionResetError) as e:
                    # It died before it read the request (killed, but not yet reaped when
                    # polled): nothing was started, so a new one may take it.
                    reply = f"error {e}"
                    continue
                except OSError as e:
                    reply = f"error {e}"
                break
            if not reply:  # it died with the request; a new one serves the next
                reply = "error the fork server exited"
        word, _, rest = reply.partition(" ")
        if word != "pid":
            raise UnavailableError(f"cannot start the container's init: {rest}")
        return int(rest)

    @property
    def pid(self) -> int:
        """The helper's pid."""
        return self._helper.pid

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        self._socket.close()  # EOF: the helper exits
        try:
            self._helper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._helper.kill()
            self._helper.wait()


def _launch() -> tuple[subprocess.Popen[bytes], socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        helper = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())],
                                  pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    return helper, ours


# ------------------------------------------------------------------------ the helper


def serve(connection: socket.socket, kernel: Kernel) -> None:
    """Answer requests until the socket closes."""
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(connection, _MESSAGE_MAX, _MAX_FDS)
        except ConnectionResetError:
            return
        if not message:
            return
        for fd in fds:  # close-on-exec as when sent: the error pipe's EOF at exec tells
            os.set_inheritable(fd, False)  # (recv_fds drops its flags argument)
        try:
            spec = _with_trees(pickle.loads(message), fds[3:])  # noqa: S301 -- our parent's
            reply = f"pid {_clone_init(kernel, spec, InitPipes(*fds[:3]), connection)}"
        except Exception as e:
            reply = f"error {e}"
        finally:
            close_all(*fds)
        connection.send(reply.encode())


def _trees(spec: SandboxSpec) -> list[int]:
    """The descriptors the spec hands to init, in order (sent along as SCM_RIGHTS): its
    detached mounts, then its user namespace."""
    fds = [data.tree for data in spec.volumes if data.tree >= 0]
    return [*fds, spec.userns_fd] if spec.userns_fd >= 0 else fds


def _with_trees(spec: SandboxSpec, fds: list[int]) -> SandboxSpec:
    """The spec with its descriptors renumbered to the ones received here."""
    received = iter(fds)
    volumes = tuple(replace(data, tree=next(received)) if data.tree >= 0 else data
                    for data in spec.volumes)
    userns_fd = next(received) if spec.userns_fd >= 0 else -1
    return replace(spec, volumes=volumes, userns_fd=userns_fd)


def _clone_init(kernel: Kernel, spec: SandboxSpec, pipes: InitPipes,
                connection: socket.socket) -> int:
    # A raw clone runs no fork handlers: sound here, where there is no other thread.
    pid = kernel.clone(k.CLONE_PARENT | k.CLONE_NEWPID)
    if pid == 0:
        connection.close()
        run_init(kernel, spec, pipes)  # which gives the command default signals
    return pid


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with socket.socket(fileno=int(sys.argv[1])) as connection:
        serve(connection, LinuxKernel())


if __name__ == "__main__":
    main()
