"""The CLI's connection to the node daemon: start one when none is listening."""

from __future__ import annotations

import os
import sys
import time

from dockyard_shim.daemon.client import Client, DaemonError
from dockyard_shim.daemon.paths import socket_file, state_root

_START_TIMEOUT = 15.0


def connect(*, autostart: bool = True) -> Client:
    """A client for the node's daemon, starting the daemon first if none listens."""
    client = Client(socket_file())
    if client.listening():
        return client
    if not autostart:
        raise DaemonError(f"no dockyard daemon is listening on {client.path}")
    if os.geteuid() != 0:
        raise DaemonError("the dockyard daemon runs containers and must be started as root")
    import subprocess  # noqa: PLC0415 -- only to start a daemon

    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "shim.log"
    with log_path.open("ab") as log, open(os.devnull, "rb") as null:
        process = subprocess.Popen([sys.executable, "-m", "dockyard_cli", "shim"],
                                   stdin=null, stdout=log, stderr=log,
                                   start_new_session=True)
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if client.listening():
            print(f"dockyard: no daemon was listening on {client.path}; started one "
                  f"(pid {process.pid}, log {log_path})", file=sys.stderr)
            return client
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise DaemonError(f"the dockyard daemon did not start; see {log_path}")
