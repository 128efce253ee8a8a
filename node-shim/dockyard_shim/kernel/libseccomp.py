"""libseccomp through ctypes: build a seccomp filter, export it as a BPF program, load one.

A thin binding of the C library (Debian's `libseccomp2`, `libseccomp.so.2`): a `Filter`
wraps one `scmp_filter_ctx` (seccomp_init … seccomp_release), with rules added by syscall
name and argument comparisons, architectures, attributes, and the compiled program
(`export_bpf`). `install` hands such a program to the kernel (prctl PR_SET_SECCOMP) through
the `Kernel` seam, so the process that loads it needs neither libseccomp nor an import:
it runs after pivot_root, where Python can load nothing more.

No policy here (which syscalls, which actions: `runtime.seccomp`). libseccomp returns
negative errnos; they become `SeccompError` (an OSError with that errno), raised from the
call that failed.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from dockyard_shim.kernel.api import Kernel

# seccomp.h: actions (the kernel's SECCOMP_RET_* values, as libseccomp spells them)
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO_BASE = 0x00050000
ACT_TRACE_BASE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000


def act_errno(number: int) -> int:
    """SCMP_ACT_ERRNO(number): fail the syscall with `number`."""
    return ACT_ERRNO_BASE | (number & 0xFFFF)


def act_trace(message: int) -> int:
    """SCMP_ACT_TRACE(message): notify a ptrace tracer."""
    return ACT_TRACE_BASE | (message & 0xFFFF)


# enum scmp_compare
CMP_NE, CMP_LT, CMP_LE, CMP_EQ, CMP_GE, CMP_GT, CMP_MASKED_EQ = range(1, 8)

# enum scmp_filter_attr (libseccomp 2.5)
ATTR_ACT_DEFAULT = 1
ATTR_ACT_BADARCH = 2
ATTR_CTL_NNP = 3
ATTR_CTL_OPTIMIZE = 8

ARCH_NATIVE = 0
NR_ERROR = -1  # __NR_SCMP_ERROR: a name libseccomp does not know

# prctl.h / seccomp.h: loading a program without libseccomp
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
BPF_MAXINSNS = 4096
INSTRUCTION_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class SeccompError(OSError):
    """libseccomp refused a call; `errno` is what it returned (negated)."""


@dataclass(frozen=True)
class ArgCmp:
    """struct scmp_arg_cmp: compare argument `index` (0-5) with `value` (and `value_two`
    for CMP_MASKED_EQ: `(arg & value) == value_two`)."""

    index: int
    op: int
    value: int
    value_two: int = 0


class _ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libseccomp, loaded once, with the signatures we call."""
    global _lib  # noqa: PLW0603 -- one handle for the process, loaded on first use
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise SeccompError(errno.ENOSYS, "libseccomp.so.2 is not installed (Debian "
                               f"package libseccomp2): {e}") from e
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.restype = None
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_remove.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_native.argtypes = []
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ScmpArgCmp)]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


def _check(result: int, what: str) -> int:
    if result < 0:
        raise SeccompError(-result, f"libseccomp {what}: {os.strerror(-result)}")
    return result


def arch_native() -> int:
    """The token (AUDIT_ARCH_* value) of the architecture this process runs."""
    return int(library().seccomp_arch_native())


def arch_resolve_name(name: str) -> int:
    """The token of an architecture by libseccomp's name (`x86_64`, `aarch64`…); 0 when
    unknown."""
    return int(library().seccomp_arch_resolve_name(name.encode()))


def syscall_resolve_name(name: str, arch: int = ARCH_NATIVE) -> int:
    """The number of syscall `name` on `arch`: NR_ERROR when libseccomp does not know the
    name; a negative pseudo-number when the syscall does not exist on that architecture."""
    lib = library()
    if arch == ARCH_NATIVE:
        return int(lib.seccomp_syscall_resolve_name(name.encode()))
    return int(lib.seccomp_syscall_resolve_name_arch(arch, name.encode()))


class Filter:
    """One libseccomp filter context: rules in, a BPF program out. Use as a context
    manager (or call `release`)."""

    def __init__(self, default_action: int) -> None:
        self._lib = library()
        ctx = self._lib.seccomp_init(default_action)
        if not ctx:
            raise SeccompError(errno.EINVAL,
                               f"libseccomp seccomp_init: bad default action {default_action:#x}")
        self._ctx: int | None = ctx

    def __enter__(self) -> Filter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    @property
    def ctx(self) -> int:
        if self._ctx is None:
            raise SeccompError(errno.EBADF, "libseccomp: the filter was released")
        return self._ctx

    def release(self) -> None:
        if self._ctx is not None:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None

    def attr_set(self, attr: int, value: int) -> None:
        _check(self._lib.seccomp_attr_set(self.ctx, attr, value), f"seccomp_attr_set({attr})")

    def arch_add(self, arch: int) -> None:
        """Filter syscalls of `arch` too (EEXIST, already there, is not an error)."""
        result = self._lib.seccomp_arch_add(self.ctx, arch)
        if result != -errno.EEXIST:
            _check(result, f"seccomp_arch_add({arch:#x})")

    def rule_add(self, action: int, syscall: int, args: Sequence[ArgCmp] = ()) -> None:
        """Take `action` for `syscall` when every comparison in `args` holds."""
        array = (_ScmpArgCmp * max(len(args), 1))()
        for slot, cmp in zip(array, args, strict=False):
            slot.arg, slot.op, slot.datum_a, slot.datum_b = (cmp.index, cmp.op, cmp.value,
                                                             cmp.value_two)
        _check(self._lib.seccomp_rule_add_array(self.ctx, action, syscall, len(args), array),
               f"seccomp_rule_add(syscall {syscall})")

    def export_bpf(self) -> bytes:
        """The compiled program: struct sock_filter instructions, as the kernel takes them."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            _check(self._lib.seccomp_export_bpf(self.ctx, fd), "seccomp_export_bpf")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def load(self) -> None:
        """Load the filter into the calling thread (libseccomp's own way: it sets
        no_new_privs first unless ATTR_CTL_NNP is 0)."""
        _check(self._lib.seccomp_load(self.ctx), "seccomp_load")


def install(kernel: Kernel, program: bytes) -> None:
    """Load a compiled program (`Filter.export_bpf`) into the calling thread.

    The caller needs CAP_SYS_ADMIN or no_new_privs set. Only ctypes objects are made
    here, no import and no libseccomp call: safe after fork and pivot_root.
    """
    count, rest = divmod(len(program), INSTRUCTION_SIZE)
    if rest or not 0 < count <= BPF_MAXINSNS:
        raise SeccompError(errno.EINVAL,
                           f"a seccomp program of {len(program)} bytes is not 1 to "
                           f"{BPF_MAXINSNS} instructions")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.addressof(buffer))
    kernel.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
