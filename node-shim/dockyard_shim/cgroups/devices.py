"""The device cgroup policy: which device nodes a container may create, read and write.

Docker's default, as data: everything is denied, then a container may `mknod` any
character or block device (so an image can carry device nodes) but open only the
harmless ones: null, zero, full, random, urandom, tty, console, ptmx, the pseudo
terminals (major 136) and tun. A process that keeps CAP_MKNOD (in Docker's default set)
can create `/dev/sda`'s node, but opening it fails with EPERM: the device cgroup, not the
missing node, is what keeps the host's disks, memory (`/dev/mem`) and kernel log
(`/dev/kmsg`) out of reach.

The v1 driver writes these rules to `devices.deny` and `devices.allow`
(Documentation/admin-guide/cgroup-v1/devices.rst); the v2 driver attaches them as an
eBPF program (`bpf_program`, loaded by `bpf`), as runc and crun do. Pure data; no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

WILDCARD: Final = -1


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """Allow `access` (some of r, w, m) on devices of `kind` (`c`har, `b`lock or `a`ll)
    with `major`:`minor`; WILDCARD matches any number."""

    kind: Literal["a", "b", "c"]
    major: int
    minor: int
    access: str

    def v1_line(self) -> str:
        """The rule as `devices.allow` takes it: `c 1:3 rwm`, `b *:* m`."""
        if self.kind == "a":
            return "a"
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.kind} {major}:{minor} {self.access}"


DEFAULT_RULES: Final = (
    DeviceRule("c", WILDCARD, WILDCARD, "m"),   # mknod of any node; opening is another matter
    DeviceRule("b", WILDCARD, WILDCARD, "m"),
    DeviceRule("c", 1, 3, "rwm"),                # /dev/null
    DeviceRule("c", 1, 5, "rwm"),                # /dev/zero
    DeviceRule("c", 1, 7, "rwm"),                # /dev/full
    DeviceRule("c", 1, 8, "rwm"),                # /dev/random
    DeviceRule("c", 1, 9, "rwm"),                # /dev/urandom
    DeviceRule("c", 5, 0, "rwm"),                # /dev/tty
    DeviceRule("c", 5, 1, "rwm"),                # /dev/console
    DeviceRule("c", 5, 2, "rwm"),                # /dev/ptmx
    DeviceRule("c", 136, WILDCARD, "rwm"),       # /dev/pts/*
    DeviceRule("c", 10, 200, "rwm"),             # /dev/net/tun, as Docker allows it
)
"""Docker's default device cgroup (moby's DefaultLinuxSpec), after `deny a`."""


def v1_writes(rules: tuple[DeviceRule, ...] = DEFAULT_RULES) -> list[tuple[str, str]]:
    """The (file, text) writes that give a fresh v1 devices cgroup exactly `rules`: first
    everything denied (a child starts with its parent's list, usually `a *:* rwm`), then
    each rule allowed, one write each (the kernel parses one rule per write)."""
    return [("devices.deny", "a"), *(("devices.allow", rule.v1_line()) for rule in rules)]


# ------------------------------------------------------------------ cgroup v2: eBPF
#
# cgroup v2 has no devices files: the kernel asks a BPF_PROG_TYPE_CGROUP_DEVICE program
# attached to the cgroup, once per access, with a `struct bpf_cgroup_dev_ctx`
# {u32 access_type; u32 major; u32 minor}, `access_type` being access << 16 | type
# (include/uapi/linux/bpf.h). It returns 1 to allow, 0 to deny. The program below tests
# the rules in order, each as a block that jumps to the next block on any mismatch.

_DEV_BLOCK, _DEV_CHAR = 1, 2
_ACC_MKNOD, _ACC_READ, _ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": _ACC_MKNOD, "r": _ACC_READ, "w": _ACC_WRITE}

# eBPF opcodes (Documentation/bpf/standardization/instruction-set.rst).
_LDX_W = 0x61      # dst = *(u32 *)(src + off)
_AND32_K = 0x54    # dst = (u32)dst & imm
_RSH32_K = 0x74    # dst = (u32)dst >> imm
_MOV64_X = 0xBF    # dst = src
_MOV64_K = 0xB7    # dst = imm
_JNE_K = 0x55      # if dst != imm: pc += off
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def _rule_block(rule: DeviceRule) -> list[bytes]:
    """r2 = type, r3 = access, r4 = major, r5 = minor: allow (return 1) when `rule` matches,
    else fall through to the next block."""
    tests: list[tuple[int, int, int]] = []  # (code, register, imm) of each mismatch jump
    if rule.kind != "a":
        tests.append((_JNE_K, 2, _DEV_BLOCK if rule.kind == "b" else _DEV_CHAR))
    allowed = sum(_ACCESS_BITS[c] for c in set(rule.access))
    if allowed != _ACC_MKNOD | _ACC_READ | _ACC_WRITE:
        tests.append((_AND32_K, 1, 0x7 & ~allowed))  # r1 = what is asked and not allowed
        tests.append((_JNE_K, 1, 0))
    if rule.major != WILDCARD:
        tests.append((_JNE_K, 4, rule.major))
    if rule.minor != WILDCARD:
        tests.append((_JNE_K, 5, rule.minor))
    length = sum(2 if code == _AND32_K else 1 for code, _, _ in tests) + 2
    block: list[bytes] = []
    for code, register, imm in tests:
        if code == _AND32_K:
            block.append(_insn(_MOV64_X, 1, 3))
            block.append(_insn(_AND32_K, 1, imm=imm))
        else:
            block.append(_insn(code, register, off=length - len(block) - 1, imm=imm))
    block += [_insn(_MOV64_K, 0, imm=1), _insn(_EXIT)]
    return block


def bpf_program(rules: tuple[DeviceRule, ...] = DEFAULT_RULES) -> bytes:
    """The eBPF device program (instructions, little-endian) that allows `rules` only."""
    program = [
        _insn(_LDX_W, 2, 1, 0), _insn(_AND32_K, 2, imm=0xFFFF),   # r2 = type
        _insn(_LDX_W, 3, 1, 0), _insn(_RSH32_K, 3, imm=16),       # r3 = access
        _insn(_LDX_W, 4, 1, 4), _insn(_LDX_W, 5, 1, 8),           # r4, r5 = major, minor
    ]
    for rule in rules:
        program += _rule_block(rule)
    program += [_insn(_MOV64_K, 0, imm=0), _insn(_EXIT)]  # nothing matched: deny
    return b"".join(program)
