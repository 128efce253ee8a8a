"""The `Kernel` interface: what the runtime asks of Linux beyond the `os` module."""

from __future__ import annotations

from typing import Protocol


class Kernel(Protocol):
    """Thin syscall wrappers. Each raises OSError(errno) when the kernel refuses."""

    def unshare(self, flags: int) -> None:
        """Move the caller into new namespaces (`CLONE_NEW*` flags)."""

    def setns(self, fd: int, nstype: int) -> None:
        """Join the namespace open at `fd`."""

    def clone(self, flags: int) -> int:
        """A new process, as fork(2) makes it, with clone `flags` (`CLONE_NEW*`,
        `CLONE_PARENT`); SIGCHLD when it ends. Its pid, and 0 in the child.

        No libc or Python fork handlers run in the child: call it only from a
        single-threaded process, and leave the child through exec or os._exit."""

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        """openat2(2): a descriptor of `path` under `dirfd`, resolved as `resolve` says
        (RESOLVE_IN_ROOT: as if `dirfd` were the root)."""

    def fstatfs(self, fd: int) -> int:
        """fstatfs(2): the type (`f_type`, a `*_SUPER_MAGIC`) of the filesystem holding
        the open file `fd`, which may be an O_PATH descriptor."""

    def open_tree(self, dirfd: int, path: str, flags: int) -> int:
        """open_tree(2): with OPEN_TREE_CLONE, a detached copy of a mount tree."""

    def move_mount(self, from_fd: int, from_path: str, to_fd: int, to_path: str,
                   flags: int) -> None:
        """move_mount(2): attach a detached tree where a descriptor points."""

    def mount_setattr(self, fd: int, path: str, flags: int, attr_set: int,
                      propagation: int = 0, *, userns_fd: int = -1) -> None:
        """mount_setattr(2): set MOUNT_ATTR_* flags (and propagation) on a mount tree;
        MOUNT_ATTR_IDMAP takes the user namespace whose id maps apply from `userns_fd`."""

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        """mount(2)."""

    def umount2(self, target: str, flags: int) -> None:
        """umount2(2)."""

    def pivot_root(self, new_root: str, put_old: str) -> None:
        """pivot_root(2)."""

    def sethostname(self, name: str) -> None:
        """sethostname(2), in the caller's UTS namespace."""

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        """prctl(2) with integer arguments."""

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        """Set the calling thread's capability sets (64-bit masks)."""

    def capget(self) -> tuple[int, int, int]:
        """The calling thread's (effective, permitted, inheritable) capability masks."""
