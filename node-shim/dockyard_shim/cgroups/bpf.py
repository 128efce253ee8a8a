"""Load and attach a cgroup v2 device program: the bpf(2) calls, through ctypes.

Used by the v2 driver when it makes a cgroup (`devices.bpf_program` is the program). The
program is attached with BPF_F_ALLOW_MULTI, as runc does, so a program of the parent
(systemd's, another runtime's) still applies too: a device must pass every one. An
attached program lives as long as its cgroup; the descriptors are closed at once.

A directory that is not on a cgroup2 filesystem (a test's scratch tree that imitates one)
gets no program. This is a syscall seam of its own; it belongs with the kernel seam
(`dockyard_shim.kernel`) once that is open for changes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from pathlib import Path
from typing import Final

from dockyard_shim.errors import UnavailableError

_SYS_BPF: Final = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}
_BPF_PROG_LOAD, _BPF_PROG_ATTACH = 5, 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2
_CGROUP2_SUPER_MAGIC = 0x63677270
_ATTR_SIZE = 120  # larger than either command's part of `union bpf_attr`, zero-filled

_libc = ctypes.CDLL(None, use_errno=True)


def is_cgroup2(path: Path) -> bool:
    """Whether `path` is on a cgroup2 filesystem (statfs f_type)."""
    buffer = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first word
    if _libc.statfs(os.fsencode(path), buffer) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), str(path))
    magic: int = struct.unpack_from("=q" if ctypes.sizeof(ctypes.c_long) == 8 else "=i",
                                    buffer.raw)[0]
    return magic == _CGROUP2_SUPER_MAGIC


def _bpf(command: int, attr: bytes) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise UnavailableError(f"bpf(2) is not wired up for {platform.machine()}")
    buffer = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    result = _libc.syscall(ctypes.c_long(number), ctypes.c_int(command), buffer,
                           ctypes.c_uint(_ATTR_SIZE))
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return int(result)


def _load(directory: Path, program: bytes) -> int:
    """Load `program`; on a refusal, load it again with the verifier's log for the error."""
    instructions = ctypes.create_string_buffer(program, len(program))
    license_text = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(1 << 16)
    for log_level in (0, 1):
        load = struct.pack("<IIQQIIQII16sII", _BPF_PROG_TYPE_CGROUP_DEVICE,
                           len(program) // 8, ctypes.addressof(instructions),
                           ctypes.addressof(license_text), log_level,
                           len(log) if log_level else 0,
                           ctypes.addressof(log) if log_level else 0, 0, 0,
                           b"dockyard_dev", 0, _BPF_CGROUP_DEVICE)
        try:
            return _bpf(_BPF_PROG_LOAD, load)
        except OSError as e:
            failure = e
    why = log.value.decode(errors="replace").strip().splitlines()[-3:]
    raise UnavailableError(
        f"cannot load the device program for cgroup {directory}: {failure.strerror}"
        + (f" ({' / '.join(why)})" if why else "")) from failure


def attach_device_program(directory: Path, program: bytes) -> None:
    """Load `program` and attach it to the cgroup at `directory` (a no-op off cgroup2)."""
    if not is_cgroup2(directory):
        return
    program_fd = _load(directory, program)
    try:
        cgroup_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attach = struct.pack("<IIII", cgroup_fd, program_fd, _BPF_CGROUP_DEVICE,
                                 _BPF_F_ALLOW_MULTI)
            _bpf(_BPF_PROG_ATTACH, attach)
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise
            raise UnavailableError(
                f"cannot attach the device program to cgroup {directory}: {e.strerror}"
            ) from e
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(program_fd)
