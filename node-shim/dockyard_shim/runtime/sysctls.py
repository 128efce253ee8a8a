"""Which sysctls a container may set (`--sysctl NAME=VALUE`), and where each one lives.

Only a sysctl that belongs to a namespace of the container's own may be set, or the
container would change the node: the IPC ones (`kernel.msgmax`, `kernel.msgmnb`,
`kernel.msgmni`, `kernel.sem`, `kernel.shm*` of the list below, `fs.mqueue.*`: every
container has its own IPC namespace), `kernel.domainname` (its own UTS namespace), and
`net.*` only with a network namespace of its own (refused with `--network host`). That is
the rule of runc's validator, which Docker relies on. `kernel.hostname` is namespaced too
but refused, as runc refuses it: the hostname is `--hostname`'s, set by sethostname(2).

A value may not contain `=` or `+`: CRI-O wrote `a=1+b=2` as two sysctls, so a pod could
smuggle a second, unchecked one such as `kernel.core_pattern` (CVE-2022-0811). Nothing
here splits a value, but refusing the characters keeps a value from being read as more
than one sysctl by any tool it is handed to.

Names are written with dots (`net.ipv4.ip_forward`) or, as sysctl(8) allows, slashes
(`net/ipv4/conf/eth0.100/forwarding`: when the first separator is a slash, a dot is part of
a name, such as a VLAN interface's). `Sysctl.name` is the dotted form (an interface's dot
shown as a slash, as sysctl(8) prints it), `Sysctl.path` the file under /proc/sys.

Pure: no I/O. The writing is `spawn`'s, through `procfs.write_verified`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from dockyard_shim.errors import InvalidArgumentError

IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})
IPC_PREFIX = "fs.mqueue."
UTS_SYSCTLS = frozenset({"kernel.domainname"})
NET_PREFIX = "net."
ALLOWED = ("kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, "
           "kernel.shmmax, kernel.shmmni, kernel.shm_rmid_forced, fs.mqueue.*, "
           "kernel.domainname and net.* (with a network of its own)")

_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")
_MAX_NAME = 255
_MAX_VALUE = 4095  # a sysctl takes at most one page, its end included
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab may separate kernel.sem's four


@dataclass(frozen=True)
class Sysctl:
    """One checked sysctl: its dotted name, its file under /proc/sys, its value."""

    name: str
    path: str
    """Relative to /proc/sys: `net/ipv4/ip_forward`."""
    value: str


def dotted(name: str) -> str:
    """`name` in the dotted form: when its first separator is a slash, slashes and dots
    trade places (sysctl(8)'s rule), so `net/ipv4/conf/eth0.100/forwarding` becomes
    `net.ipv4.conf.eth0/100.forwarding`."""
    first = re.search(r"[./]", name)
    if first is None or first.group() == ".":
        return name
    return name.translate(str.maketrans("./", "/."))


def path_of(name: str) -> str:
    """The file under /proc/sys of a dotted name: dots separate, a slash is a dot."""
    return "/".join(part.replace("/", ".") for part in name.split("."))


def check(name: str, value: str, *, own_network: bool) -> Sysctl:
    """The sysctl `name=value` if a container may set it; else InvalidArgumentError that
    names it and says what to do."""
    _check_name(name)
    dots = dotted(name)
    if dots == "kernel.hostname":
        raise InvalidArgumentError(f"--sysctl {name}: refused: set the container's "
                                   "hostname with --hostname")
    if dots.startswith(NET_PREFIX):
        if not own_network:
            raise InvalidArgumentError(
                f"--sysctl {name}: a net.* sysctl needs a network of the container's own; "
                "with --network host it would change the node's: use --network none or "
                "bridge")
    elif dots not in IPC_SYSCTLS | UTS_SYSCTLS and not dots.startswith(IPC_PREFIX):
        raise InvalidArgumentError(f"--sysctl {name}: not a namespaced sysctl: a container "
                                   f"may set only {ALLOWED}")
    _check_value(name, value)
    return Sysctl(dots, path_of(dots), value)


def check_all(sysctls: Mapping[str, str], *, own_network: bool) -> tuple[Sysctl, ...]:
    """Every sysctl of `sysctls` checked (`check`), in order; one written twice (with dots
    and with slashes) is refused, as the last write would win unnoticed."""
    checked: dict[str, Sysctl] = {}
    for name, value in sysctls.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgumentError(f"--sysctl {name!r}: a name and a value are text, "
                                       f"not {type(name).__name__}={type(value).__name__}")
        sysctl = check(name, value, own_network=own_network)
        if sysctl.name in checked:
            raise InvalidArgumentError(f"--sysctl {name}: given twice (also as "
                                       f"{checked[sysctl.name].name}): give it once")
        checked[sysctl.name] = sysctl
    return tuple(checked.values())


def _check_name(name: str) -> None:
    if not name:
        raise InvalidArgumentError("--sysctl: a name is required: write --sysctl NAME=VALUE, "
                                   "such as --sysctl net.ipv4.ip_forward=1")
    if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"--sysctl {name!r}: a sysctl name has only letters, digits, '_' and '-', with "
            "'.' or '/' between its parts, such as net.ipv4.ip_forward")
    parts = path_of(dotted(name)).split("/")
    if ".." in name or any(part in ("", ".", "..") for part in parts):
        raise InvalidArgumentError(
            f"--sysctl {name}: an empty part, '.' or '..' in a sysctl name: write it as "
            "sysctl -a prints it, such as net.ipv4.ip_forward")


def _check_value(name: str, value: str) -> None:
    if not value:
        raise InvalidArgumentError(f"--sysctl {name}: a value is required: write "
                                   f"--sysctl {name}=VALUE")
    for char in "+=":
        if char in value:
            raise InvalidArgumentError(
                f"--sysctl {name}: the value {value!r} contains {char!r}, which could "
                "smuggle a second sysctl (CVE-2022-0811): refused; give each sysctl its "
                "own --sysctl")
    if _CONTROL.search(value):
        raise InvalidArgumentError(f"--sysctl {name}: the value {value!r} contains a "
                                   "newline or another control character: refused")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"--sysctl {name}: the value {value!r} is not valid "
                                   "text") from None
    if size > _MAX_VALUE:
        raise InvalidArgumentError(f"--sysctl {name}: the value is longer than a sysctl "
                                   f"takes ({_MAX_VALUE} bytes)")
