"""Seccomp profiles with Docker's semantics: parse Docker's JSON format, compile to BPF.

A profile (`Profile`) is Docker's JSON document (`defaultAction`, `defaultErrnoRet`,
`architectures` or `archMap`, `syscalls[{names, action, errnoRet, args, includes,
excludes}]`), checked field by field: a mistake is an InvalidArgumentError naming the
field (`syscalls[3].action`). `compile_profile` turns a profile and the container's
capability set into the BPF program the kernel takes (through `kernel.libseccomp`), the
way Docker and runc do:

- a rule whose `includes.caps` the container lacks, or whose `excludes.caps` it holds, is
  left out (so the default profile opens mount, unshare… only with CAP_SYS_ADMIN), as is
  one for another architecture or a newer kernel (`includes.arches`, `minKernel`);
- names libseccomp does not know are skipped (a profile may name tomorrow's syscalls);
- conditions on different arguments must all hold; several on the same argument are
  separate rules (any may match), as runc adds them;
- when the default action refuses, a syscall numbered above every syscall the profile
  knows (on that architecture) fails with ENOSYS instead: it is newer than the profile,
  and ENOSYS makes libc fall back to the older call it replaces (runc's patch of the
  program does the same). A short prologue in front of libseccomp's program does it.

The default profile is `seccomp_default.PROFILE`. The program is compiled by the caller
(the daemon), before fork: the process that loads it only hands bytes to the kernel.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.kernel import libseccomp as scmp
from dockyard_shim.runtime.seccomp_default import PROFILE as DEFAULT_PROFILE

EPERM, ENOSYS = 1, 38

_ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG")
_REFUSING = ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
             "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP")
_OPS = {"SCMP_CMP_NE": scmp.CMP_NE, "SCMP_CMP_LT": scmp.CMP_LT, "SCMP_CMP_LE": scmp.CMP_LE,
        "SCMP_CMP_EQ": scmp.CMP_EQ, "SCMP_CMP_GE": scmp.CMP_GE, "SCMP_CMP_GT": scmp.CMP_GT,
        "SCMP_CMP_MASKED_EQ": scmp.CMP_MASKED_EQ}
# Docker's architecture names in `architectures` (SCMP_ARCH_*) and in `includes.arches`
# (Go's names), to libseccomp's.
_ARCH_TOKENS = {"SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
                "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64",
                "SCMP_ARCH_PPC64LE": "ppc64le", "SCMP_ARCH_S390X": "s390x",
                "SCMP_ARCH_RISCV64": "riscv64"}
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "x86": "386", "arm": "arm",
            "x32": "x32", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
_IGNORED_KEYS = {"comment", "comments", "flags", "listenerMetadata"}

# The audit architecture numbers seccomp_data.arch carries. x32 syscalls arrive as
# x86_64 ones with bit 30 set in their number.
_AUDIT_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class Arg:
    index: int
    value: int
    value_two: int
    op: str


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[Arg, ...] = ()
    include_caps: tuple[str, ...] = ()
    exclude_caps: tuple[str, ...] = ()
    include_arches: tuple[str, ...] = ()
    exclude_arches: tuple[str, ...] = ()
    min_kernel: tuple[int, ...] = ()


@dataclass(frozen=True)
class Profile:
    default_action: str
    default_errno: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    rules: tuple[Rule, ...] = ()


# ------------------------------------------------------------------------------- parsing


def parse_json(text: str, source: str = "seccomp profile") -> Profile:
    """A profile from Docker's JSON text; InvalidArgumentError naming the bad field."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InvalidArgumentError(f"{source}: not JSON: {e}") from e
    return parse(data, source)


def parse(data: Any, source: str = "seccomp profile") -> Profile:
    """A profile from Docker's JSON document (already decoded)."""
    top = _mapping(data, source, "the profile")
    _known(top, source, "", {"defaultAction", "defaultErrnoRet", "architectures", "archMap",
                             "syscalls", "listenerPath"})
    if top.get("listenerPath"):
        raise InvalidArgumentError(f"{source}: listenerPath: seccomp notifications "
                                   "(SCMP_ACT_NOTIFY) are not supported")
    default = _action(top.get("defaultAction"), source, "defaultAction")
    arches = tuple(_arch(name, source, f"architectures[{i}]")
                   for i, name in enumerate(_list(top.get("architectures"), source,
                                                  "architectures")))
    arch_map = []
    for i, entry in enumerate(_list(top.get("archMap"), source, "archMap")):
        where = f"archMap[{i}]"
        item = _mapping(entry, source, where)
        _known(item, source, where, {"architecture", "subArchitectures"})
        subs = _list(item.get("subArchitectures"), source, f"{where}.subArchitectures")
        arch_map.append((_arch(item.get("architecture"), source, f"{where}.architecture"),
                         tuple(_arch(s, source, f"{where}.subArchitectures[{j}]")
                               for j, s in enumerate(subs))))
    rules = tuple(_rule(entry, source, f"syscalls[{i}]")
                  for i, entry in enumerate(_list(top.get("syscalls"), source, "syscalls")))
    return Profile(default, _errno(top.get("defaultErrnoRet"), source, "defaultErrnoRet"),
                   arches, tuple(arch_map), rules)


def _rule(entry: Any, source: str, where: str) -> Rule:
    item = _mapping(entry, source, where)
    _known(item, source, where, {"names", "name", "action", "errnoRet", "args", "includes",
                                 "excludes"})
    names = [*_list(item.get("names"), source, f"{where}.names")]
    if item.get("name") is not None:
        names.append(item["name"])
    if not names:
        raise InvalidArgumentError(f"{source}: {where}.names: give at least one syscall name")
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"{source}: {where}.names[{j}]: {name!r} is not a "
                                       "syscall name")
    action = _action(item.get("action"), source, f"{where}.action")
    args = tuple(_argument(arg, source, f"{where}.args[{j}]")
                 for j, arg in enumerate(_list(item.get("args"), source, f"{where}.args")))
    includes = _mapping(item.get("includes") or {}, source, f"{where}.includes")
    excludes = _mapping(item.get("excludes") or {}, source, f"{where}.excludes")
    _known(includes, source, f"{where}.includes", {"caps", "arches", "minKernel"})
    _known(excludes, source, f"{where}.excludes", {"caps", "arches"})
    return Rule(
        names=tuple(names), action=action,
        errno_ret=_errno(item.get("errnoRet"), source, f"{where}.errnoRet"), args=args,
        include_caps=_strings(includes.get("caps"), source, f"{where}.includes.caps"),
        exclude_caps=_strings(excludes.get("caps"), source, f"{where}.excludes.caps"),
        include_arches=_strings(includes.get("arches"), source, f"{where}.includes.arches"),
        exclude_arches=_strings(excludes.get("arches"), source, f"{where}.excludes.arches"),
        min_kernel=_kernel_version(includes.get("minKernel"), source,
                                   f"{where}.includes.minKernel"))


def _argument(entry: Any, source: str, where: str) -> Arg:
    item = _mapping(entry, source, where)
    _known(item, source, where, {"index", "value", "valueTwo", "op"})
    index = item.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
        raise InvalidArgumentError(f"{source}: {where}.index: {index!r} is not an argument "
                                   "index from 0 to 5")
    values = []
    for key in ("value", "valueTwo"):
        value = item.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
            raise InvalidArgumentError(f"{source}: {where}.{key}: {value!r} is not an "
                                       "unsigned 64-bit number")
        values.append(value)
    op = item.get("op")
    if op not in _OPS:
        raise InvalidArgumentError(f"{source}: {where}.op: {op!r} is not one of "
                                   f"{', '.join(_OPS)}")
    return Arg(index, values[0], values[1], op)


def _mapping(value: Any, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{source}: {where}: must be a JSON object")
    return value


def _list(value: Any, source: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{source}: {where}: must be a JSON array")
    return value


def _strings(value: Any, source: str, where: str) -> tuple[str, ...]:
    items = _list(value, source, where)
    for j, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidArgumentError(f"{source}: {where}[{j}]: {item!r} is not a string")
    return tuple(items)


def _known(item: Mapping[str, Any], source: str, where: str, keys: set[str]) -> None:
    for key in item:
        if key not in keys | _IGNORED_KEYS:
            prefix = f"{where}." if where else ""
            raise InvalidArgumentError(f"{source}: {prefix}{key}: unknown field; use "
                                       f"{', '.join(sorted(keys))}")


def _action(value: Any, source: str, where: str) -> str:
    if value not in _ACTIONS:
        raise InvalidArgumentError(f"{source}: {where}: {value!r} is not one of "
                                   f"{', '.join(_ACTIONS)}")
    return str(value)


def _errno(value: Any, source: str, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4095:
        raise InvalidArgumentError(f"{source}: {where}: {value!r} is not an errno number "
                                   "(0 to 4095)")
    return value


def _arch(value: Any, source: str, where: str) -> str:
    if value not in _ARCH_TOKENS:
        raise InvalidArgumentError(f"{source}: {where}: {value!r} is not one of "
                                   f"{', '.join(_ARCH_TOKENS)}")
    return str(value)


def _kernel_version(value: Any, source: str, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    parts = value.split(".") if isinstance(value, str) else []
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise InvalidArgumentError(f"{source}: {where}: {value!r} is not a kernel version "
                                   "such as 4.8")
    return tuple(int(p) for p in parts)


@lru_cache(maxsize=1)
def default_profile() -> Profile:
    return parse(DEFAULT_PROFILE, "the default seccomp profile")


# ----------------------------------------------------------------------------- compiling


_FIXED_ACTIONS = {"SCMP_ACT_ALLOW": scmp.ACT_ALLOW, "SCMP_ACT_KILL": scmp.ACT_KILL_THREAD,
                  "SCMP_ACT_KILL_THREAD": scmp.ACT_KILL_THREAD,
                  "SCMP_ACT_KILL_PROCESS": scmp.ACT_KILL_PROCESS,
                  "SCMP_ACT_TRAP": scmp.ACT_TRAP, "SCMP_ACT_LOG": scmp.ACT_LOG}


def _action_value(action: str, errno_ret: int | None) -> int:
    number = EPERM if errno_ret is None else errno_ret  # Docker's errno when none is given
    if action == "SCMP_ACT_ERRNO":
        return scmp.act_errno(number)
    if action == "SCMP_ACT_TRACE":
        return scmp.act_trace(number)
    return _FIXED_ACTIONS[action]


def _kernel_release() -> tuple[int, ...]:
    numbers = []
    for part in os.uname().release.split("-")[0].split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def _applies(rule: Rule, caps: frozenset[str], native: str) -> bool:
    held = {f"CAP_{name}" for name in caps}
    go_arch = _GO_ARCH.get(native, native)
    if rule.include_caps and not set(rule.include_caps) <= held:
        return False
    if set(rule.exclude_caps) & held:
        return False
    if rule.include_arches and go_arch not in rule.include_arches:
        return False
    if go_arch in rule.exclude_arches:
        return False
    return not rule.min_kernel or _kernel_release() >= rule.min_kernel


def _arches(profile: Profile, native: str) -> list[str]:
    """libseccomp names of the architectures to filter: the profile's list, else its
    archMap entry for this machine, else this machine's alone."""
    if profile.architectures:
        names = [_ARCH_TOKENS[a] for a in profile.architectures]
    else:
        names = [native]
        for main, subs in profile.arch_map:
            if _ARCH_TOKENS[main] == native:
                names += [_ARCH_TOKENS[s] for s in subs]
    return list(dict.fromkeys([native, *names]))


def compile_profile(profile: Profile, capabilities: Iterable[str]) -> bytes:
    """The BPF program of `profile` for a container holding `capabilities` (names without
    CAP_). InvalidArgumentError when libseccomp refuses a rule of it."""
    return _compile(profile, frozenset(capabilities))


@lru_cache(maxsize=32)
def _compile(profile: Profile, caps: frozenset[str]) -> bytes:
    native_token = scmp.arch_native()
    native = next((name for name in _GO_ARCH
                   if scmp.arch_resolve_name(name) == native_token), "")
    arches = _arches(profile, native)
    default = _action_value(profile.default_action, profile.default_errno)
    with scmp.Filter(default) as flt:
        flt.attr_set(scmp.ATTR_CTL_NNP, 0)  # no_new_privs is the container's choice
        flt.attr_set(scmp.ATTR_CTL_OPTIMIZE, 2)  # a binary tree: O(log n) per syscall
        for name in arches:
            flt.arch_add(scmp.arch_resolve_name(name))
        for i, rule in enumerate(profile.rules):
            if not _applies(rule, caps, native):
                continue
            action = _action_value(rule.action, rule.errno_ret)
            if action == default:
                continue  # libseccomp refuses such a rule; it would change nothing
            for name in rule.names:
                number = scmp.syscall_resolve_name(name)
                if number == scmp.NR_ERROR:
                    continue  # unknown to libseccomp: newer than it
                for conditions in _condition_sets(rule.args):
                    try:
                        flt.rule_add(action, number, conditions)
                    except scmp.SeccompError as e:
                        raise InvalidArgumentError(
                            f"seccomp profile: syscalls[{i}] ({name}): {e.strerror}") from e
        program = flt.export_bpf()
    if profile.default_action in _REFUSING:
        program = _enosys_prologue(profile, arches) + program
    if len(program) // scmp.INSTRUCTION_SIZE > scmp.BPF_MAXINSNS:
        raise InvalidArgumentError("seccomp profile: too many rules: the program exceeds "
                                   f"{scmp.BPF_MAXINSNS} instructions")
    return program


def _condition_sets(args: tuple[Arg, ...]) -> list[list[scmp.ArgCmp]]:
    """One rule when every condition is on its own argument (all must hold); else one
    rule per condition (libseccomp cannot test one argument twice in a rule)."""
    conditions = [scmp.ArgCmp(a.index, _OPS[a.op], a.value, a.value_two) for a in args]
    if len({a.index for a in args}) == len(args):
        return [conditions]
    return [[c] for c in conditions]


# The classic BPF the prologue uses (linux/filter.h), and offsets in struct seccomp_data.
_LD_W_ABS, _JEQ, _JGT, _JGE, _JA, _RET = 0x20, 0x15, 0x25, 0x35, 0x05, 0x06
_NR, _ARCH = 0, 4


def _enosys_prologue(profile: Profile, arches: list[str]) -> bytes:
    """Instructions that answer ENOSYS for a syscall numbered above the highest this
    profile names on its architecture; any other falls through to the program after."""
    names = {name for rule in profile.rules for name in rule.names}
    # audit arch -> [(lowest number of the range, highest number the profile knows)]
    ranges: dict[int, list[tuple[int, int]]] = {}
    for arch in arches:
        token = scmp.arch_resolve_name(arch)
        known = [n for n in (scmp.syscall_resolve_name(name, token) for name in names)
                 if n >= 0]
        if not known:
            continue
        audit, low = (_AUDIT_X86_64, _X32_SYSCALL_BIT) if arch == "x32" else (token, 0)
        ranges.setdefault(audit, []).append((low, max(known)))
    # Assembled with labels; every jump goes forward, as classic BPF requires.
    code: list[tuple[int, int, int | str, int | str]] = []  # (op, k, jump true, jump false)
    labels: dict[str, int] = {}
    for a, (audit, spans) in enumerate(sorted(ranges.items())):
        code += [(_LD_W_ABS, _ARCH, 0, 0), (_JEQ, audit, 0, f"next{a}"),
                 (_LD_W_ABS, _NR, 0, 0)]
        for s, (low, highest) in enumerate(sorted(spans, reverse=True)):
            if low:
                code.append((_JGE, low, 0, f"span{a}.{s}"))
            code.append((_JGT, highest, "enosys", f"next{a}"))
            labels[f"span{a}.{s}"] = len(code)
        labels[f"next{a}"] = len(code)
    code.append((_JA, 1, 0, 0))  # over the return below, into libseccomp's program
    labels["enosys"] = len(code)
    code.append((_RET, scmp.act_errno(ENOSYS), 0, 0))
    out = bytearray()
    for here, (op, k, jt, jf) in enumerate(code):
        offsets = [labels[j] - here - 1 if isinstance(j, str) else j for j in (jt, jf)]
        out += struct.pack("=HBBI", op, *offsets, k)
    return bytes(out)


def main() -> None:
    """Print the default profile as Docker's JSON: a base for a custom one."""
    json.dump(DEFAULT_PROFILE, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
