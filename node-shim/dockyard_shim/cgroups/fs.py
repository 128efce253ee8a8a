"""File access to cgroupfs, with kernel errors translated into the shim's categories.

`CgroupFs` is the one seam through which the drivers touch the filesystem: the real one
reads and writes the kernel's interface files; tests substitute a scratch tree that
imitates a cgroup2 mount (there is no v2 host to test on). `CgroupDir` wraps one cgroup
directory and turns an `OSError` into what it means for a cgroup: a missing directory is
`NotFoundError`, a missing interface file is `UnavailableError` naming its controller, a
value the kernel refuses is `InvalidArgumentError` naming the `Limits` field.

Also the polling helpers the drivers share (waiting for a state, killing until empty,
removing a directory that is still draining). No policy: what to write is the drivers'.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from dockyard_shim.cgroups import bpf
from dockyard_shim.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ShimError,
    UnavailableError,
)

_POLL_INTERVAL = 0.005
_PID_ATTEMPTS = 5

# Why the kernel refuses a limit, by errno, for the message a user reads.
_REFUSALS = {
    errno.EBUSY: "the cgroup cannot take it now",
    errno.EINVAL: "the value is outside what the kernel accepts",
    errno.ERANGE: "the value is outside what the kernel accepts",
}
# What a refusal means for a given limit, where the kernel's reason is known.
_FIELD_REFUSALS = {
    # v1 memory.limit_in_bytes: EBUSY once reclaim cannot bring usage under the limit.
    (errno.EBUSY, "memory_bytes"):
        "the cgroup uses more than that now and the kernel could not reclaim it",
    # sched/core.c: a CFS quota below 1 ms is refused (1 ms per 100 ms is cpu_millis=10).
    (errno.EINVAL, "cpu_millis"):
        "the kernel's smallest quota is 1 ms per 100 ms period, that is cpu_millis=10",
}


class CgroupFs:
    """Reads, writes, creates and removes cgroupfs entries: the real filesystem."""

    def read(self, path: Path) -> str:
        with open(path, encoding="ascii") as f:
            return f.read()

    def write(self, path: Path, text: str) -> None:
        # One write(2) per value: the kernel parses each write on its own, so a buffered
        # writer that split the text would make the kernel see two values. O_TRUNC, as
        # runc does, is ignored by cgroupfs and keeps a plain-file test tree honest.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode("ascii"))
        finally:
            os.close(fd)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def attach_device_program(self, path: Path, program: bytes) -> None:
        """Attach the eBPF device `program` to the cgroup2 directory `path` (a no-op on a
        directory that is not on cgroup2)."""
        bpf.attach_device_program(path, program)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def exists(self, path: Path) -> bool:
        return path.exists()

    def subdirs(self, path: Path) -> list[str]:
        try:
            return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())
        except FileNotFoundError:
            return []


class CgroupDir:
    """One cgroup directory in one hierarchy; `label` is the cgroup's name for messages."""

    def __init__(self, fs: CgroupFs, path: Path, label: str) -> None:
        self.fs = fs
        self.path = path
        self.label = label

    def __repr__(self) -> str:
        return f"CgroupDir({str(self.path)!r})"

    def exists(self) -> bool:
        return self.fs.is_dir(self.path)

    def has(self, file: str) -> bool:
        return self.fs.exists(self.path / file)

    def read(self, file: str) -> str:
        try:
            return self.fs.read(self.path / file).strip()
        except OSError as e:
            raise self.error(e, file) from e

    def read_optional(self, file: str) -> str | None:
        """The file's text, or None when the file (its controller) is missing here."""
        try:
            return self.fs.read(self.path / file).strip()
        except FileNotFoundError as e:
            if not self.exists():
                raise self._gone() from e
            return None
        except OSError as e:
            raise self.error(e, file) from e

    def read_int(self, file: str) -> int:
        return parse_int(self.read(file), self.path / file)

    def write(self, file: str, text: str, *, field: str = "", value: object = None) -> None:
        """Write `text` to `file`; `field` and `value` name the limit for a refusal."""
        try:
            self.fs.write(self.path / file, text)
        except OSError as e:
            if field and e.errno in _REFUSALS:
                why = _FIELD_REFUSALS.get((e.errno, field), _REFUSALS[e.errno])
                raise InvalidArgumentError(
                    f"the kernel refused {field}={value} for cgroup {self.label}: writing"
                    f" {text!r} to {file} failed with {errno.errorcode[e.errno]} ({why})"
                ) from e
            raise self.error(e, file) from e

    def _gone(self) -> NotFoundError:
        return NotFoundError(f"cgroup {self.label} does not exist (at {self.path})")

    def error(self, e: OSError, file: str) -> ShimError:
        """The shim error for `e`, raised by an operation on `file` in this directory."""
        if e.errno == errno.ENOENT:
            if not self.exists():
                return self._gone()
            controller = file.split(".", 1)[0]
            if controller == "cgroup":
                return UnavailableError(f"this kernel has no {file} (cgroup {self.label})")
            return UnavailableError(
                f"the {controller} cgroup controller is not available for cgroup"
                f" {self.label}: {self.path / file} is missing"
            )
        name = errno.errorcode.get(e.errno or 0, str(e.errno))
        return UnavailableError(f"cgroup {self.label}: {file}: {name} ({e.strerror})")


def write_pid(directory: CgroupDir, pid: int) -> None:
    """Move `pid` into `directory` by writing it to cgroup.procs."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InvalidArgumentError(f"pid must be a positive integer, got {pid!r}")
    for attempt in range(_PID_ATTEMPTS):
        try:
            directory.fs.write(directory.path / "cgroup.procs", str(pid))
            return
        except ProcessLookupError as e:
            raise NotFoundError(f"no process {pid} to add to cgroup {directory.label}") from e
        except OSError as e:
            # A task still in TASK_NEW (forked, not yet runnable) is refused with EINVAL
            # for a moment; runc retries the same way (WriteCgroupProc).
            if e.errno == errno.EINVAL and attempt < _PID_ATTEMPTS - 1:
                time.sleep(0.03)
                continue
            if e.errno == errno.EINVAL:
                raise InvalidArgumentError(
                    f"the kernel refused to move process {pid} into cgroup {directory.label}"
                ) from e
            raise directory.error(e, "cgroup.procs") from e


def make_dirs(fs: CgroupFs, base: Path, relative: str) -> Path:
    """mkdir each component of `relative` under `base` that is missing; return the path."""
    path = base
    for component in relative.split("/"):
        path = path / component
        try:
            fs.mkdir(path)
        except FileExistsError:
            pass
        except OSError as e:
            raise UnavailableError(f"cannot create cgroup directory {path}: {e}") from e
    return path


def parse_int(text: str, where: Path | str) -> int:
    try:
        return int(text)
    except ValueError as e:
        raise UnavailableError(f"unexpected content {text!r} in {where}") from e


def parse_keyed(text: str) -> dict[str, int]:
    """Parse a flat keyed file (`cpu.stat`, `memory.events`): `key value` per line."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            found[key] = int(value)
    return found


def parse_pids(text: str) -> set[int]:
    return {int(line) for line in text.split()}


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def kill_until_empty(
    label: str,
    list_pids: Callable[[], list[int]],
    freeze: Callable[[], None] | None,
    thaw: Callable[[], None] | None,
    timeout: float,
) -> None:
    """SIGKILL every listed process, again and again, until the list is empty.

    Without cgroup.kill there is no atomic way to kill a cgroup: a process can fork
    between reading the list and the kill. Freezing first closes that window; the kill is
    delivered when the cgroup thaws (a frozen task cannot die). A failed freeze is not
    fatal (a task in uninterruptible sleep can delay it): the loop still converges, as in
    runc's signalAllProcesses.
    """
    deadline = time.monotonic() + timeout
    while pids := list_pids():
        if time.monotonic() >= deadline:
            raise UnavailableError(
                f"cgroup {label} still has processes {pids} after {timeout:g}s of SIGKILL"
            )
        try:
            if freeze is not None:
                with contextlib.suppress(UnavailableError):
                    freeze()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if thaw is not None:
                thaw()
        wait_until(lambda: not list_pids(), min(0.2, max(0.0, deadline - time.monotonic())))


def remove_dir(
    fs: CgroupFs, path: Path, label: str, populated: Callable[[], bool], timeout: float
) -> None:
    """rmdir a cgroup directory; retry while the kernel holds it busy; a missing one is fine.

    Processes that were just killed keep their cgroup populated until they finish
    exiting, so EBUSY right after a kill is expected and short-lived.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            fs.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise UnavailableError(f"cannot remove cgroup {label} at {path}: {e}") from e
            if fs.subdirs(path):
                raise FailedPreconditionError(
                    f"cgroup {label} has child cgroups {fs.subdirs(path)}: remove them first"
                ) from e
            if time.monotonic() >= deadline:
                try:
                    busy = populated()
                except NotFoundError:
                    return
                why = "still has processes" if busy else "is still busy"
                raise FailedPreconditionError(
                    f"cgroup {label} {why} after {timeout:.1f}s: kill_all first"
                ) from e
            time.sleep(_POLL_INTERVAL)
