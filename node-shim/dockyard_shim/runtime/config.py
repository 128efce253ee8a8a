"""What a container is asked to be: the runtime's input, validated at the edge.

The CLI builds a `ContainerConfig` from `docker run`-style flags, the daemon from JSON, and
`dockyard up` from a `Container` manifest; all three go through `validate`, so a bad
request fails the same way whichever door it came in by, before anything is created.

Pure data: no I/O except the existence check of bind sources, and the reading of a
seccomp profile named by its path on the node, once, when the config is made.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.runtime import capabilities, seccomp, sysctls, userns
from dockyard_shim.volumes import check_name, check_subpath

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")  # Docker's container name rule
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NETWORK_MODES = ("none", "host", "bridge")
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
SECCOMP_MODES = ("default", "unconfined", "localhost")
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses less: the runtime itself needs headroom


@dataclass(frozen=True)
class Bind:
    """A host directory or file bind-mounted into the container (`-v SRC:DST[:ro]`)."""

    source: str
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class VolumeUse:
    """A named volume mounted into the container (`-v NAME:/path[:ro]`, `--mount
    type=volume`). An empty name (`-v /path`) asks for an anonymous volume, made at create
    and named then."""

    name: str
    target: str
    readonly: bool = False
    subpath: str = ""
    """Mount only this directory of the volume (relative to its root)."""


@dataclass(frozen=True)
class TmpfsMount:
    """A memory filesystem of the container's own (`--tmpfs /run:size=64m`), gone when it
    stops."""

    target: str
    size_bytes: int | None = None
    """At most this many bytes; None: the kernel's default, half of the memory."""
    mode: int = 0o1777


@dataclass(frozen=True)
class PortMapping:
    """`-p [IP:]HOST:CONTAINER[/PROTO]`: a host port forwarded to a container port."""

    container_port: int
    host_port: int = 0  # 0: the node picks a free port
    host_ip: str = "0.0.0.0"  # noqa: S104 -- Docker's default: every address of the node
    protocol: str = "tcp"


@dataclass(frozen=True)
class ContainerConfig:
    """Everything `docker run` can say that Dockyard supports."""

    image: str
    name: str = ""
    command: tuple[str, ...] = ()
    """Replaces the image's CMD (the arguments after IMAGE on the command line)."""
    entrypoint: tuple[str, ...] | None = None
    """Replaces the image's ENTRYPOINT when set (an empty tuple clears it)."""
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    memory_bytes: int | None = None
    cpu_millis: int | None = None
    pids_limit: int | None = None
    binds: tuple[Bind, ...] = ()
    volumes: tuple[VolumeUse, ...] = ()
    tmpfs: tuple[TmpfsMount, ...] = ()
    network: str = "bridge"
    ports: tuple[PortMapping, ...] = ()
    read_only: bool = False
    restart: str = "no"
    restart_max_retries: int = 0
    auto_remove: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    """`--security-opt no-new-privileges`: execve never grants privileges (setuid bits
    and file capabilities are ignored)."""
    seccomp: str = "default"
    """`default` (the runtime's profile), `unconfined` (no filter) or `localhost` (the
    profile in `seccomp_profile`: `--security-opt seccomp=FILE`)."""
    seccomp_profile: str = ""
    """With `localhost`: the profile, Docker's JSON, kept in the config so that the
    container keeps it whatever happens to the file."""
    seccomp_profile_path: str = ""
    """With `localhost`: where the profile came from (a path on the node); read when
    `seccomp_profile` is empty."""
    sysctls: dict[str, str] = field(default_factory=dict)
    """`--sysctl NAME=VALUE`: namespaced kernel settings (`runtime.sysctls`), names as
    given (dots or slashes), written in this order at each start."""
    userns: str = "host"
    """`--userns`: `host` (the node's ids) or `auto` (a user namespace of its own, its
    root a block of the node's subordinate ids: `runtime.userns`)."""
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # Left out when empty, as Docker's HostConfig omits Sysctls: the config of a
        # container without any stays what it was before the field existed, and so do the
        # spec hashes `dockyard up` and the agent compute over such configs (a new key
        # would replace every managed container once).
        if not self.sysctls:
            del data["sysctls"]
        if self.userns == "host":
            del data["userns"]  # the same reason
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerConfig:
        """Rebuild (and validate) a config from its JSON form, as the daemon receives it."""
        try:
            values = dict(data)
            for key in ("command", "env", "cap_add", "cap_drop"):
                values[key] = tuple(values.get(key, ()))
            if values.get("entrypoint") is not None:
                values["entrypoint"] = tuple(values["entrypoint"])
            values["binds"] = tuple(Bind(**b) for b in values.get("binds", ()))
            values["volumes"] = tuple(VolumeUse(**v) for v in values.get("volumes", ()))
            values["tmpfs"] = tuple(TmpfsMount(**t) for t in values.get("tmpfs", ()))
            values["ports"] = tuple(PortMapping(**p) for p in values.get("ports", ()))
            config = _with_profile(cls(**values))
        except TypeError as e:
            raise InvalidArgumentError(f"malformed container config: {e}") from e
        return validate(config)


def _with_profile(config: ContainerConfig) -> ContainerConfig:
    """A `localhost` config named by path only, with the profile read from that path."""
    if config.seccomp != "localhost" or config.seccomp_profile or not config.seccomp_profile_path:
        return config
    path = config.seccomp_profile_path
    if not path.startswith("/"):
        raise InvalidArgumentError(f"seccomp profile path {path!r} must be absolute")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"cannot read the seccomp profile {path}: {e}") from e
    return replace(config, seccomp_profile=text)


def _container_path(flag: str, path: str) -> None:
    parts = path.split("/")
    if not path.startswith("/") or ".." in parts or "\0" in path:
        raise InvalidArgumentError(
            f"{flag}: {path!r} must be an absolute path inside the container without '..' "
            "(for example /data)")


def validate(config: ContainerConfig) -> ContainerConfig:
    """Return `config` if every field is acceptable; else InvalidArgumentError naming it."""
    for check in (_check_identity, _check_limits, _check_binds, _check_network, _check_policy,
                  _check_security, _check_sysctls, _check_userns):
        check(config)
    return config


def _check_identity(config: ContainerConfig) -> None:
    if not config.image:
        raise InvalidArgumentError("an image is required: dockyard run IMAGE [COMMAND...]")
    if config.name and not _NAME.fullmatch(config.name):
        raise InvalidArgumentError(
            f"--name: invalid container name {config.name!r}: use letters, digits, '_', "
            "'.' and '-', starting with a letter or digit")
    for item in config.env:
        name = item.split("=", 1)[0]
        if "=" not in item or not _ENV_NAME.fullmatch(name):
            raise InvalidArgumentError(f"-e: {item!r} is not NAME=VALUE with a valid name")
    if config.working_dir:
        _container_path("-w", config.working_dir)
    if config.hostname and (len(config.hostname) > 63
                            or not _HOSTNAME.fullmatch(config.hostname)):
        raise InvalidArgumentError(f"--hostname: {config.hostname!r} is not a valid hostname")
    capabilities.resolve(config.cap_add, config.cap_drop)  # raises on unknown names


def _check_limits(config: ContainerConfig) -> None:
    if config.memory_bytes is not None and config.memory_bytes < MIN_MEMORY:
        raise InvalidArgumentError(
            f"-m: minimum memory limit allowed is 6MB, got {config.memory_bytes} bytes")
    if config.cpu_millis is not None and config.cpu_millis < 1:
        raise InvalidArgumentError("--cpus: must be at least 0.001")
    if config.pids_limit is not None and config.pids_limit < 1:
        raise InvalidArgumentError("--pids-limit: must be at least 1")


def _check_binds(config: ContainerConfig) -> None:
    targets: set[str] = set()
    for bind in config.binds:
        if not bind.source.startswith("/") or ".." in bind.source.split("/"):
            raise InvalidArgumentError(
                f"-v: bind source {bind.source!r} must be an absolute host path without '..'")
        if not Path(bind.source).exists():
            raise InvalidArgumentError(f"-v: bind source path does not exist: {bind.source}")
        _mount_target("-v", bind.target, targets)
    for volume in config.volumes:
        if volume.name:
            check_name(volume.name)
        if volume.subpath:
            check_subpath(volume.subpath)
        _mount_target("-v", volume.target, targets)
    for tmpfs in config.tmpfs:
        _mount_target("--tmpfs", tmpfs.target, targets)
        if tmpfs.size_bytes is not None and tmpfs.size_bytes <= 0:
            raise InvalidArgumentError(f"--tmpfs: the size of {tmpfs.target} must be positive")
        if not 0 <= tmpfs.mode <= 0o7777:
            raise InvalidArgumentError(f"--tmpfs: mode {tmpfs.mode:o} is not a permission mode")


def _mount_target(flag: str, target: str, seen: set[str]) -> None:
    _container_path(flag, target)
    if target.rstrip("/") in ("", "/"):
        raise InvalidArgumentError(f"{flag}: cannot mount a volume over the container's /")
    clean = os.path.normpath(target)
    if clean in seen:
        raise InvalidArgumentError(f"{flag}: duplicate mount point {clean}: mount one thing there")
    seen.add(clean)


def _check_network(config: ContainerConfig) -> None:
    if config.network not in NETWORK_MODES:
        raise InvalidArgumentError(f"--network: {config.network!r} is not one of "
                                   f"{', '.join(NETWORK_MODES)}")
    if config.ports and config.network != "bridge":
        raise InvalidArgumentError("-p: ports can be published only with --network bridge")
    for port in config.ports:
        if not 1 <= port.container_port <= 65535 or not 0 <= port.host_port <= 65535:
            raise InvalidArgumentError(f"-p: port out of range 1-65535: {port}")
        if port.protocol not in ("tcp", "udp"):
            raise InvalidArgumentError(f"-p: protocol must be tcp or udp, not {port.protocol}")


def _check_policy(config: ContainerConfig) -> None:
    if config.restart not in RESTART_POLICIES:
        raise InvalidArgumentError(f"--restart: {config.restart!r} is not one of "
                                   f"{', '.join(RESTART_POLICIES)}")
    if config.auto_remove and config.restart != "no":
        raise InvalidArgumentError("--rm and --restart are mutually exclusive")


def _check_security(config: ContainerConfig) -> None:
    if not isinstance(config.no_new_privileges, bool):
        raise InvalidArgumentError("--security-opt no-new-privileges: must be true or false")
    if config.seccomp not in SECCOMP_MODES:
        raise InvalidArgumentError(f"--security-opt seccomp: {config.seccomp!r} is not one "
                                   f"of {', '.join(SECCOMP_MODES)}")
    if config.seccomp != "localhost":
        if config.seccomp_profile or config.seccomp_profile_path:
            raise InvalidArgumentError(f"--security-opt seccomp: a profile is given but the "
                                       f"mode is {config.seccomp!r}, not localhost")
        return
    if not config.seccomp_profile:
        if not config.seccomp_profile_path:
            raise InvalidArgumentError("--security-opt seccomp: localhost needs a profile: "
                                       "seccomp=/path/to/profile.json")
        return  # read when the process is made (`seccomp_profile`)
    source = f"seccomp profile {config.seccomp_profile_path}".rstrip()
    seccomp.parse_json(config.seccomp_profile, source)  # raises naming the bad field


def _check_sysctls(config: ContainerConfig) -> None:
    if not isinstance(config.sysctls, dict):
        raise InvalidArgumentError("--sysctl: sysctls are a map of NAME to VALUE, not "
                                   f"{type(config.sysctls).__name__}")
    container_sysctls(config)


def container_sysctls(config: ContainerConfig) -> tuple[sysctls.Sysctl, ...]:
    """The config's sysctls checked, in order: what init writes (`SandboxSpec.sysctls`)."""
    return sysctls.check_all(config.sysctls, own_network=config.network != "host")


def seccomp_profile(config: ContainerConfig) -> seccomp.Profile | None:
    """The profile a container runs under; None when unconfined."""
    if config.seccomp == "unconfined":
        return None
    if config.seccomp == "localhost":
        text = _with_profile(config).seccomp_profile
        return seccomp.parse_json(text, f"seccomp profile {config.seccomp_profile_path}".rstrip())
    return seccomp.default_profile()


def _check_userns(config: ContainerConfig) -> None:
    userns.validate_mode(config.userns)
