"""Waiting for and reaping the processes the runtime started (containers, execs).

The runtime's process is a child subreaper: containers and exec'd processes are its
children. These helpers wait without polling (a pidfd), reap only the very process that
was started (pid and start time, so a recycled pid is never mistaken for it) and record
its exit status next to its output.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

from dockyard_shim.runtime import procfs
from dockyard_shim.runtime.process import record_exit


def await_pid(pid: int, started: int, timeout: float | None) -> bool:
    """Wait until the process `pid` (started at `started`) has exited; pidfd, no polling."""
    if not procfs.alive(pid, started):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not procfs.alive(pid, started):
            return True  # the pid was recycled between the check and the open
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))
    finally:
        os.close(fd)


def reap_into(pid: int, started: int, directory: Path) -> None:
    """Reap `pid` if it is our exited child and record its status in `directory`."""
    if not procfs.is_zombie_of(pid, started):
        return  # reaped already: by us, or by the keeper while we were gone
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return  # someone else's child: its reaper records the exit
    record_exit(directory, status)
