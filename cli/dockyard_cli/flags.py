"""Docker's flags of `dockyard run` and `create`, as data, and their value syntax.

`RUN_FLAGS` is the one definition of those flags: `containers` turns it into click options
(help, errors), and `quick` parses the same table without click on the fast path of
`dockyard run`. So this module stays light: no click, no dataclasses, no pydantic.

Each parser accepts what `docker run` accepts and raises `FlagError` (a ValueError) with a
message that says how to write the value; click reports it as `Invalid value for '-m': …`
with exit code 2, like any usage error. Volumes and ports come out in the JSON shape of the
daemon's container config (`ContainerConfig.from_json`), which validates them again.
"""

from __future__ import annotations

import os
import re

TYPE_CHECKING = False  # typing costs `dockyard run` milliseconds of start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SIZE = re.compile(r"^(\d+)(?:\.(\d+))?\s*([kmgtp])?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_CPUS = re.compile(r"^(\d+)(?:\.(\d+))?$")
_COUNT = re.compile(r"^-?\d+$")


class FlagError(ValueError):
    """A flag's value is not written the way the flag wants it."""


def _scaled(whole: str, fraction: str | None, scale: int) -> int:
    """`whole.fraction * scale`, exactly, rounded down (no floats, no Decimal import)."""
    fraction = fraction or ""
    unit: int = 10 ** len(fraction)
    return (int(whole) * unit + int(fraction or 0)) * scale // unit


def parse_size(text: str) -> int:
    """`64m`, `1g`, `512k`, `1048576` -> bytes (Docker's units are binary)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise FlagError(f"{text!r}: write a size such as 64m, 512k or 1g")
    whole, fraction, unit = match.groups()
    return _scaled(whole, fraction, _UNITS[(unit or "").lower()])


def parse_cpus(text: str) -> int:
    """`0.5` -> 500 millicores; at most the CPUs this machine has, as Docker checks."""
    match = _CPUS.fullmatch(text.strip())
    if match is None:
        raise FlagError(f"{text!r}: write a number of CPUs such as 0.5 or 2")
    whole, fraction = match.groups()
    digits = fraction or ""
    exact, scale = int(whole + digits), int(10 ** len(digits))  # the value is exact / scale
    available = os.cpu_count() or 1
    if not scale <= exact * 1000 <= available * scale * 1000:
        raise FlagError(f"range of CPUs is from 0.001 to {available}.00")
    return exact * 1000 // scale


def parse_count(text: str) -> int:
    """A whole number, such as `--pids-limit 100`."""
    if _COUNT.fullmatch(text.strip()) is None:
        raise FlagError(f"{text!r}: write a whole number such as 100")
    return int(text)


def parse_volume(text: str) -> dict[str, Any]:
    """Docker's `-v`: `HOST_PATH:DST[:ro]` (a bind), `NAME:DST[:ro]` (a named volume, made
    if missing) or `DST` (an anonymous volume). The mount in its config shape, tagged with
    `type` (bind or volume)."""
    parts = text.split(":")
    if len(parts) == 1 and parts[0].startswith("/"):
        return {"type": "volume", "name": "", "target": parts[0], "readonly": False}
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise FlagError(f"{text!r}: write HOST_PATH:CONTAINER_PATH[:ro], "
                        "VOLUME:CONTAINER_PATH[:ro] or CONTAINER_PATH")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise FlagError(f"{text!r}: the mode must be ro or rw, not {mode!r}")
    source, target, readonly = parts[0], parts[1], mode == "ro"
    if source.startswith("/"):
        return {"type": "bind", "source": source, "target": target, "readonly": readonly}
    if source.startswith("."):
        raise FlagError(f"{text!r}: a host path must be absolute (write {os.getcwd()}/…)")
    return {"type": "volume", "name": source, "target": target, "readonly": readonly}


_MOUNT_KEYS = {"source": "source", "src": "source", "target": "target", "dst": "target",
               "destination": "target", "readonly": "readonly", "ro": "readonly",
               "type": "type", "volume-subpath": "subpath", "tmpfs-size": "size",
               "tmpfs-mode": "mode"}


def parse_mount(text: str) -> dict[str, Any]:
    """Docker's `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]
    [,volume-subpath=DIR][,tmpfs-size=SIZE][,tmpfs-mode=OCTAL]`, as `parse_volume` tags it."""
    given: dict[str, str] = {}
    for item in text.split(","):
        key, eq, value = item.partition("=")
        if key.strip() not in _MOUNT_KEYS:
            raise FlagError(f"{text!r}: unknown key {key.strip()!r}; use type, source, "
                            "target, readonly, volume-subpath, tmpfs-size or tmpfs-mode")
        given[_MOUNT_KEYS[key.strip()]] = value.strip() if eq else "true"
    kind, target = given.pop("type", "volume"), given.pop("target", "")
    if not target:
        raise FlagError(f"{text!r}: a mount needs target=CONTAINER_PATH")
    readonly = given.pop("readonly", "false") in ("true", "1")
    if kind == "bind" and given.keys() <= {"source"} and given.get("source", "").startswith("/"):
        return {"type": "bind", "source": given["source"], "target": target,
                "readonly": readonly}
    if kind == "volume" and given.keys() <= {"source", "subpath"}:
        return {"type": "volume", "name": given.get("source", ""), "target": target,
                "readonly": readonly, "subpath": given.get("subpath", "")}
    if kind == "tmpfs" and given.keys() <= {"size", "mode"} and not readonly:
        return _tmpfs(target, given.get("size"), given.get("mode"), text)
    raise FlagError(f"{text!r}: write type=bind,source=/HOST/PATH,target=…; "
                    "type=volume[,source=NAME],target=…[,volume-subpath=DIR]; or "
                    "type=tmpfs,target=…[,tmpfs-size=64m][,tmpfs-mode=1777]")


def parse_tmpfs(text: str) -> dict[str, Any]:
    """Docker's `--tmpfs /run[:size=64m,mode=1777]`."""
    target, _, options = text.partition(":")
    given = dict(item.partition("=")[::2] for item in options.split(",") if item)
    if not target.startswith("/") or not given.keys() <= {"size", "mode"}:
        raise FlagError(f"{text!r}: write CONTAINER_PATH[:size=64m,mode=1777]")
    return _tmpfs(target, given.get("size"), given.get("mode"), text)


def _tmpfs(target: str, size: str | None, mode: str | None, text: str) -> dict[str, Any]:
    try:
        octal = int(mode, 8) if mode else 0o1777
    except ValueError:
        raise FlagError(f"{text!r}: the mode is octal, such as 1777") from None
    return {"type": "tmpfs", "target": target,
            "size_bytes": parse_size(size) if size else None, "mode": octal}


def parse_port(text: str) -> dict[str, Any]:
    """`[IP:][HOST:]CONTAINER[/tcp|udp]` -> a port mapping."""
    import ipaddress  # noqa: PLC0415 -- only -p needs it; `run` starts faster without

    spec, _, protocol = text.partition("/")
    protocol = protocol or "tcp"
    host_ip, host, container = "0.0.0.0", "", ""  # noqa: S104 -- Docker's default
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        host_ip, host, container = parts
    elif len(parts) == 2:
        host, container = parts
    else:
        container = parts[0]
    try:
        ipaddress.ip_address(host_ip)
        return {"container_port": int(container), "host_port": int(host) if host else 0,
                "host_ip": host_ip, "protocol": protocol}
    except ValueError:
        raise FlagError(
            f"{text!r}: write [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80") from None


def parse_restart(text: str) -> tuple[str, int]:
    """`no`, `always`, `unless-stopped`, `on-failure[:N]` -> (policy, max retries)."""
    policy, _, retries = text.partition(":")
    if retries and (policy != "on-failure" or not retries.isdigit()):
        raise FlagError(f"{text!r}: only on-failure takes a count, as on-failure:3")
    return policy, int(retries) if retries else 0


_TRUE, _FALSE = ("", "true", "1", "yes"), ("false", "0", "no")


def parse_security_opt(text: str) -> dict[str, Any]:
    """Docker's `--security-opt`: `no-new-privileges[:true|false]` and
    `seccomp=unconfined|builtin|PROFILE.json`, as config fields. A profile file is read
    here, as Docker's client does: the container keeps the profile, not the path."""
    key, sep, value = text.partition("=")
    if not sep:
        key, _, value = text.partition(":")
    key, value = key.strip(), value.strip()
    if key == "no-new-privileges":
        if value.lower() not in (*_TRUE, *_FALSE):
            raise FlagError(f"{text!r}: write no-new-privileges or no-new-privileges=false")
        return {"no_new_privileges": value.lower() in _TRUE}
    if key == "seccomp":
        if value in ("unconfined", "builtin", "default"):
            return {"seccomp": "unconfined" if value == "unconfined" else "default"}
        if not value:
            raise FlagError(f"{text!r}: write seccomp=unconfined or seccomp=PROFILE.json")
        path = os.path.abspath(value)
        try:
            with open(path, encoding="utf-8") as f:
                profile = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise FlagError(f"{text!r}: cannot read the seccomp profile {path}: {e}") from None
        return {"seccomp": "localhost", "seccomp_profile_path": path,
                "seccomp_profile": profile}
    if key in ("label", "apparmor", "systempaths", "mask", "unmask"):
        raise FlagError(f"{text!r}: {key} is not supported (Dockyard has no LSM profiles)")
    raise FlagError(f"{text!r}: write no-new-privileges, seccomp=unconfined or "
                    "seccomp=PROFILE.json")


def security_config(options: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """The config fields of every `--security-opt` given, the last one of a kind winning."""
    merged: dict[str, Any] = {}
    for option in options:
        if "seccomp" in option:
            for key in ("seccomp_profile", "seccomp_profile_path"):
                merged.pop(key, None)
        merged.update(option)
    return merged


def parse_sysctl(text: str) -> tuple[str, str]:
    """Docker's `--sysctl NAME=VALUE`, split at the first `=`. Which names and values a
    container may have is the daemon's check (`dockyard_shim.runtime.sysctls`)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise FlagError(f"{text!r}: write NAME=VALUE, such as net.ipv4.ip_forward=1")
    return name.strip(), value


def sysctl_config(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Every `--sysctl` given, in order; the last value of a name wins, as in Docker."""
    return dict(items)


def parse_env(items: tuple[str, ...]) -> tuple[str, ...]:
    """`-e K=V` as is; `-e K` takes K from this shell's environment, or is dropped."""
    out = []
    for item in items:
        if "=" in item:
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return tuple(out)


class Flag:
    """One flag: its spellings, where its value goes, and how that value is read.

    A flag without a `metavar` is a switch (False unless given). A `multiple` flag may be
    repeated and collects a tuple. `parse` turns each given text (and a text default) into
    its value; `choices` limits the text to those words.
    """

    __slots__ = ("choices", "default", "dest", "help", "metavar", "multiple", "names",
                 "parse")

    def __init__(self, *names: str, dest: str, help: str,
                 metavar: str | None = None, multiple: bool = False,
                 parse: Callable[[str], Any] | None = None, default: Any = None,
                 choices: tuple[str, ...] = ()) -> None:
        self.names = names
        self.dest = dest
        self.help = help
        self.metavar = metavar
        self.multiple = multiple
        self.parse = parse
        self.default: Any = () if multiple else (False if metavar is None else default)
        self.choices = choices

    @property
    def is_switch(self) -> bool:
        return self.metavar is None


RUN_FLAGS = (
    Flag("--name", dest="name", metavar="NAME", default="",
         help="Name the container (default: a random one)."),
    Flag("-e", "--env", dest="env", metavar="K=V", multiple=True,
         help="Set an environment variable (repeatable); -e K copies K from this shell."),
    Flag("-m", "--memory", dest="memory", metavar="SIZE", parse=parse_size,
         help="Memory limit: 64m, 1g…"),
    Flag("--cpus", dest="cpus", metavar="N", parse=parse_cpus, help="CPU limit: 0.5, 2…"),
    Flag("--pids-limit", dest="pids_limit", metavar="N", parse=parse_count,
         help="Most processes at once."),
    Flag("-v", "--volume", dest="volume", metavar="SRC:DST[:ro]", multiple=True,
         parse=parse_volume,
         help="Mount a volume (NAME:DST), a host path (/PATH:DST) or a new anonymous "
              "volume (DST); repeatable."),
    Flag("--mount", dest="mount", metavar="type=…,target=…", multiple=True,
         parse=parse_mount,
         help="Mount a bind, volume or tmpfs, Docker's long form; repeatable."),
    Flag("--tmpfs", dest="tmpfs", metavar="DST[:size=64m]", multiple=True,
         parse=parse_tmpfs, help="Mount a private memory filesystem; repeatable."),
    Flag("--network", dest="network", metavar="[none|host|bridge]", default="none",
         choices=("none", "host", "bridge"),
         help="Networking: own loopback only, the host's, or a bridge."),
    Flag("-p", "--publish", dest="publish", metavar="[IP:]HOST:CTR", multiple=True,
         parse=parse_port, help="Publish a container port (bridge network; repeatable)."),
    Flag("--hostname", dest="hostname", metavar="NAME", default="",
         help="Container hostname (default: short id)."),
    Flag("--read-only", dest="read_only", help="Mount the image read-only."),
    Flag("-w", "--workdir", dest="workdir", metavar="DIR", default="",
         help="Working directory in the container."),
    Flag("-u", "--user", dest="user", metavar="USER", default="",
         help="UID[:GID] or NAME[:GROUP] to run as."),
    Flag("--restart", dest="restart", metavar="POLICY", default="no", parse=parse_restart,
         help="Restart policy: no, on-failure[:N], always, unless-stopped."),
    Flag("--cap-add", dest="cap_add", metavar="CAP", multiple=True,
         help="Add a Linux capability."),
    Flag("--cap-drop", dest="cap_drop", metavar="CAP", multiple=True,
         help="Drop a Linux capability (or ALL)."),
    Flag("--security-opt", dest="security_opt", metavar="OPT", multiple=True,
         parse=parse_security_opt,
         help="no-new-privileges, seccomp=unconfined or seccomp=PROFILE.json (Docker's "
              "JSON profile format); repeatable."),
    Flag("--sysctl", dest="sysctl", metavar="NAME=VALUE", multiple=True, parse=parse_sysctl,
         help="Set a namespaced kernel parameter: kernel.msg{max,mnb,mni}, kernel.sem, "
              "kernel.shm{all,max,mni}, kernel.shm_rmid_forced, fs.mqueue.*, "
              "kernel.domainname, or net.* (not with --network host); repeatable."),
    Flag("--userns", dest="userns", metavar="[host|auto]", default="host",
         choices=("host", "auto"),
         help="auto: run in a user namespace of the container's own, its root a block of "
              "the node's subordinate ids (user dockyard in /etc/subuid and /etc/subgid), "
              "so root inside is no one on the node; host: the node's ids (default)."),
    Flag("--entrypoint", dest="entrypoint", metavar="CMD",
         help="Override the image's ENTRYPOINT."),
)
"""The flags `run` and `create` share."""

RUN_ONLY_FLAGS = (
    Flag("-d", "--detach", dest="detach", help="Run in the background; print the id."),
    Flag("--rm", dest="auto_remove", help="Remove the container when it exits."),
)
