"""`RecordingKernel`: a `Kernel` that records calls instead of making them (unit tests)."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingKernel:
    """Records every call as `(name, args)`; `fail` maps a call name to an errno to raise."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    caps: tuple[int, int, int] = (0, 0, 0)

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise OSError(self.fail[name], f"{name} failed (recorded)")

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int) -> None:
        self._record("setns", fd, nstype)

    def clone(self, flags: int) -> int:
        self._record("clone", flags)
        raise OSError(errno.ENOSYS, "a RecordingKernel makes no processes")

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        self._record("openat2", dirfd, path, flags, resolve, mode)
        raise OSError(errno.ENOSYS, "a RecordingKernel opens no files")

    def fstatfs(self, fd: int) -> int:
        self._record("fstatfs", fd)
        raise OSError(errno.ENOSYS, "a RecordingKernel has no filesystems")

    def open_tree(self, dirfd: int, path: str, flags: int) -> int:
        self._record("open_tree", dirfd, path, flags)
        raise OSError(errno.ENOSYS, "a RecordingKernel opens no mounts")

    def move_mount(self, from_fd: int, from_path: str, to_fd: int, to_path: str,
                   flags: int) -> None:
        self._record("move_mount", from_fd, from_path, to_fd, to_path, flags)

    def mount_setattr(self, fd: int, path: str, flags: int, attr_set: int,
                      propagation: int = 0, *, userns_fd: int = -1) -> None:
        self._record("mount_setattr", fd, path, flags, attr_set, propagation, userns_fd)

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        self._record("prctl", option, arg2, arg3)
        return 0

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._record("capset", effective, permitted, inheritable)
        self.caps = (effective, permitted, inheritable)

    def capget(self) -> tuple[int, int, int]:
        self._record("capget")
        return self.caps

    def names(self) -> list[str]:
        """The names of the recorded calls, in order."""
        return [name for name, _ in self.calls]
