"""Following a process's exit in the daemon's event loop (logs -f ends on exit)."""

from __future__ import annotations

import asyncio
import subprocess
import time

from dockyard_shim.daemon.api import _exit_event


def test_the_exit_event_fires_once_and_leaves_the_loop_idle() -> None:
    """An exited process's pidfd stays readable: a reader left on it would spin the loop
    (and starve the threads that serve calls) for as long as the stream stays open."""
    child = subprocess.Popen(["true"])

    async def follow() -> float:
        with _exit_event(child.pid) as exited:
            await asyncio.wait_for(exited.wait(), 10)
            busy_before = time.process_time()
            await asyncio.sleep(0.2)  # the stream stays open a little after the exit
            return time.process_time() - busy_before

    try:
        cpu_while_open = asyncio.run(follow())
    finally:
        child.wait()
    assert cpu_while_open < 0.05  # a spinning loop burns all of the 0.2 s


def test_a_process_that_is_gone_already_counts_as_exited() -> None:
    child = subprocess.Popen(["true"])
    child.wait()

    async def follow() -> bool:
        with _exit_event(child.pid) as exited:
            return exited.is_set()

    assert asyncio.run(follow())
