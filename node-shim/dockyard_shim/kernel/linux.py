"""`Kernel` on real Linux, through libc and raw syscalls via ctypes."""

from __future__ import annotations

import ctypes
import os
import platform
import signal

from dockyard_shim.errors import UnavailableError
from dockyard_shim.kernel.consts import (
    CLONE_PARENT,
    LINUX_CAPABILITY_VERSION_3,
    SYSCALLS,
    SYSCALLS_SINCE_5_1,
)


class _CloneArgs(ctypes.Structure):
    """struct clone_args, version 0 (the fields up to `tls`)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls")]


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _StatFs(ctypes.Structure):
    """struct statfs as glibc lays it out on 64-bit machines (the same as statfs64)."""

    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long),
                *((name, ctypes.c_ulong) for name in (
                    "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree")),
                ("f_fsid", ctypes.c_int * 2), ("f_namelen", ctypes.c_long),
                ("f_frsize", ctypes.c_long), ("f_flags", ctypes.c_long),
                ("f_spare", ctypes.c_long * 4)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(result: int) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


class LinuxKernel:
    """Calls the real kernel. Needs root (CAP_SYS_ADMIN) for most operations."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        machine = platform.machine()
        if machine not in SYSCALLS:
            raise UnavailableError(f"unsupported machine {machine!r}: no syscall table")
        self._nr = {**SYSCALLS[machine], **SYSCALLS_SINCE_5_1}
        self._libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.c_ulong, ctypes.c_char_p]
        self._libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self._libc.fstatfs.argtypes = [ctypes.c_int, ctypes.POINTER(_StatFs)]
        self._libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                                     ctypes.c_ulong, ctypes.c_ulong]

    def unshare(self, flags: int) -> None:
        _check(self._libc.unshare(ctypes.c_int(flags)))

    def setns(self, fd: int, nstype: int) -> None:
        _check(self._libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)))

    def clone(self, flags: int) -> int:
        # clone3 rather than clone: one syscall number and argument order on every machine.
        # With CLONE_PARENT the child takes its exit signal from the caller (SIGCHLD when
        # the caller was forked), and clone3 wants none given.
        signum = 0 if flags & CLONE_PARENT else signal.SIGCHLD
        args = _CloneArgs(flags=flags, exit_signal=signum)
        return self._syscall("clone3", ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))

    def openat2(self, dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
        how = _OpenHow(flags=flags, mode=mode, resolve=resolve)
        return self._syscall("openat2", ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                             ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))

    def fstatfs(self, fd: int) -> int:
        info = _StatFs()
        _check(self._libc.fstatfs(fd, ctypes.byref(info)))
        return int(info.f_type)

    def open_tree(self, dirfd: int, path: str, flags: int) -> int:
        return self._syscall("open_tree", ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                             ctypes.c_uint(flags))

    def move_mount(self, from_fd: int, from_path: str, to_fd: int, to_path: str,
                   flags: int) -> None:
        self._syscall("move_mount", ctypes.c_int(from_fd), ctypes.c_char_p(os.fsencode(from_path)),
                      ctypes.c_int(to_fd), ctypes.c_char_p(os.fsencode(to_path)),
                      ctypes.c_uint(flags))

    def mount_setattr(self, fd: int, path: str, flags: int, attr_set: int,
                      propagation: int = 0, *, userns_fd: int = -1) -> None:
        attr = _MountAttr(attr_set=attr_set, propagation=propagation,
                          userns_fd=max(userns_fd, 0))
        self._syscall("mount_setattr", ctypes.c_int(fd), ctypes.c_char_p(os.fsencode(path)),
                      ctypes.c_uint(flags), ctypes.byref(attr),
                      ctypes.c_size_t(ctypes.sizeof(attr)))

    def _syscall(self, name: str, *args: object) -> int:
        return _check(self._libc.syscall(ctypes.c_long(self._nr[name]), *args))

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        _check(self._libc.mount(os.fsencode(source), os.fsencode(target),
                                fstype.encode() if fstype else None, flags,
                                data.encode() if data else None))

    def umount2(self, target: str, flags: int) -> None:
        _check(self._libc.umount2(os.fsencode(target), flags))

    def pivot_root(self, new_root: str, put_old: str) -> None:
        _check(self._libc.syscall(ctypes.c_long(self._nr["pivot_root"]),
                                  ctypes.c_char_p(os.fsencode(new_root)),
                                  ctypes.c_char_p(os.fsencode(put_old))))

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        _check(self._libc.sethostname(raw, len(raw)))

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        return _check(self._libc.prctl(option, arg2, arg3, 0, 0))

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for index in (0, 1):  # version 3 splits each 64-bit set into two 32-bit words
            shift = 32 * index
            data[index].effective = (effective >> shift) & 0xFFFFFFFF
            data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        _check(self._libc.syscall(ctypes.c_long(self._nr["capset"]), ctypes.byref(header),
                                  ctypes.byref(data)))

    def capget(self) -> tuple[int, int, int]:
        header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        _check(self._libc.syscall(ctypes.c_long(self._nr["capget"]), ctypes.byref(header),
                                  ctypes.byref(data)))
        return (data[0].effective | data[1].effective << 32,
                data[0].permitted | data[1].permitted << 32,
                data[0].inheritable | data[1].inheritable << 32)
