"""Capability sets: Docker's default set, `--cap-add`/`--cap-drop`, names to bit masks.

Docker (and runc's default spec) give containers 14 capabilities in the bounding, permitted
and effective sets, nothing inheritable and nothing ambient. Pure data: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from dockyard_shim.errors import InvalidArgumentError

# linux/capability.h numbering.
NUMBERS: dict[str, int] = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

DOCKER_DEFAULT = frozenset({
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
})


def _normalise(name: str) -> str:
    upper = name.upper()
    return upper.removeprefix("CAP_")


def resolve(add: Iterable[str] = (), drop: Iterable[str] = (),
            last_cap: int = max(NUMBERS.values()), held: int = -1) -> frozenset[str]:
    """The capability names a container gets: Docker's default, minus `drop`, plus `add`.

    `ALL` in drop empties the set before additions; `ALL` in add grants every capability
    this kernel knows (up to `last_cap`) that the runtime holds itself (`held`, a mask:
    as Docker, a node whose runtime lacks one still runs `--cap-add ALL`). Unknown names
    are InvalidArgumentError.
    """
    adds, drops = {_normalise(n) for n in add}, {_normalise(n) for n in drop}
    for name in (adds | drops) - {"ALL"}:
        if name not in NUMBERS:
            raise InvalidArgumentError(f"unknown capability {name!r}: use names such as "
                                       "NET_ADMIN or SYS_PTRACE (without CAP_)")
    caps = set() if "ALL" in drops else set(DOCKER_DEFAULT) - drops
    if "ALL" in adds:
        caps |= {name for name, number in NUMBERS.items()
                 if number <= last_cap and held & (1 << number)}
    caps |= adds - {"ALL"}
    return frozenset(caps)


def mask(names: Iterable[str]) -> int:
    """The 64-bit capability mask of `names`."""
    value = 0
    for name in names:
        value |= 1 << NUMBERS[name]
    return value


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
        return int(f.read())


def held() -> int:
    """The capabilities this process holds (its permitted set): all a child can get."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0
