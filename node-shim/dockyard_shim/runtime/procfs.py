"""Facts about processes from /proc: is this pid still the process we started?"""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None when the pid is gone.

    Together with the pid it identifies one process for its whole life: a recycled pid
    has a different start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    if fields[0] in ("Z", "X"):  # a zombie has exited; only its status remains
        return None
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    """True when `pid` is the live process that started at `started`."""
    return pid > 0 and start_time(pid) == started
