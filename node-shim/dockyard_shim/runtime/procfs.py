"""/proc: facts about processes (is this pid still the process we started?), and the
one way the runtime writes into a procfs.

Writes go through `write_verified` into a directory opened by `open_procfs`, never by a
path: a procfs file reached through a link or a bind mount can be another file than the
one named, and writing a container's settings into the wrong procfs file changes the node
(CVE-2019-16884: /proc a link; CVE-2025-52881: writes redirected by mounts a container
made in a shared mount namespace). Reading is by path: a wrong read misleads, it does not
change anything.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from dockyard_shim.errors import FailedPreconditionError
from dockyard_shim.kernel import Kernel
from dockyard_shim.kernel import consts as k


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


# ------------------------------------------------------------------------------ writing

_IN_ROOT = k.RESOLVE_IN_ROOT | k.RESOLVE_NO_SYMLINKS
_BENEATH = k.RESOLVE_BENEATH | k.RESOLVE_NO_SYMLINKS | k.RESOLVE_NO_XDEV


def open_procfs(kernel: Kernel, root: str, path: str, *, device: int | None = None) -> int:
    """An O_PATH descriptor of the procfs directory `path` inside the directory `root`,
    resolved as if `root` were `/` with no symbolic link followed (openat2
    RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS), and checked to be on a procfs (fstatfs) and,
    when `device` is given, on that procfs instance (`st_dev`: each mount of procfs in a
    pid namespace of its own is a filesystem of its own). FailedPreconditionError when
    it is not; the caller closes the descriptor.

    For a container's own /proc, `root` is its root filesystem and `device` the one of
    the procfs just mounted there; for the node's, `root` is "/" (`proc/PID`).
    """
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = kernel.openat2(root_fd, path.lstrip("/") or ".",
                            os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, _IN_ROOT)
    finally:
        os.close(root_fd)
    try:
        _require_procfs(kernel, fd, path)
        found = os.fstat(fd).st_dev
        if device is not None and found != device:
            raise FailedPreconditionError(
                f"{path} is another procfs (device {found:#x}) than the one mounted there "
                f"(device {device:#x}): refusing to write into it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_verified(kernel: Kernel, dir_fd: int, relative: str, data: bytes) -> None:
    """Write `data` to the procfs file `relative` beneath the procfs directory `dir_fd`
    (from `open_procfs`), in one write(2), or raise.

    The file is opened beneath `dir_fd` with neither a symbolic link (nor /proc's magic
    links) nor a mount crossed (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
    RESOLVE_NO_XDEV): a file bound over the named one, even another procfs file such as
    /proc/sys/kernel/core_pattern, is refused (EXDEV) instead of written. Both the
    directory and the opened file are checked to be on a procfs (fstatfs). Errors: OSError
    from the kernel (ENOENT for a sysctl this kernel or namespace lacks, EXDEV, ELOOP,
    EINVAL for a value it rejects), FailedPreconditionError for a file not on a procfs.

    Every write the runtime makes into a procfs goes through here: a container's sysctls,
    and the uid_map and gid_map of its user namespace (`userns.create_namespace`).
    """
    _require_procfs(kernel, dir_fd, "the directory")
    fd = kernel.openat2(dir_fd, relative, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY, _BENEATH)
    try:
        _require_procfs(kernel, fd, relative)
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):  # procfs takes a setting in one write; a part would be wrong
        raise OSError(errno.EIO, f"{relative}: wrote {written} of {len(data)} bytes")


def _require_procfs(kernel: Kernel, fd: int, what: str) -> None:
    kind = kernel.fstatfs(fd)
    if kind != k.PROC_SUPER_MAGIC:
        raise FailedPreconditionError(
            f"{what} is not on a procfs (filesystem type {kind:#x}): refusing to write "
            "into it (see CVE-2025-52881)")
