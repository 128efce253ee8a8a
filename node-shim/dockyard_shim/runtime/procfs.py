"""Facts about processes from /proc: is this pid still the process we started?"""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) from /proc/PID/stat, None when the pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return fields[0], int(fields[19])


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot) of a live process, else None.

    Together with the pid it identifies one process for its whole life: a recycled pid
    has a different start time. A zombie has exited and counts as gone.
    """
    stat = _stat(pid)
    return None if stat is None or stat[0] in ("Z", "X") else stat[1]


def identity(pid: int) -> int:
    """The start time of `pid`, whether it runs or has exited and awaits reaping.

    Read it while the process is known to exist (before it may exec): a fast command can
    exit before `spawn` returns, and a zombie still has its start time.
    """
    stat = _stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return stat[1]


def is_zombie_of(pid: int, started: int) -> bool:
    """True when `pid` is the process that started at `started`, exited, and awaits reaping.

    Checked before reaping a pid, so that a recycled pid's status is never taken for the
    container's.
    """
    stat = _stat(pid)
    return stat is not None and stat[0] == "Z" and stat[1] == started


def alive(pid: int, started: int) -> bool:
    """True when `pid` is the live process that started at `started`."""
    return pid > 0 and start_time(pid) == started
