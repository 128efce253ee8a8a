"""What a volume is: its record, its kinds and the rules its name and host path follow.

Kinds (the `Volume` CRD's sources, and Docker's local-driver variants):
- `local`: a directory under the state root (`volumes/<name>/_data`), made on creation,
  kept until the volume is removed;
- `hostPath`: a directory of the host, only under the node's allowed roots (`HostPaths`);
- `tmpfs`: memory, size-limited, mounted while a container uses it;
- `provider`: a directory a running storage container exports.

Pure data and checks: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from dockyard_shim.errors import InvalidArgumentError

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")  # Docker's volume name rule


class Kind(StrEnum):
    LOCAL = "local"
    HOST_PATH = "hostPath"
    TMPFS = "tmpfs"
    PROVIDER = "provider"


@dataclass(frozen=True)
class VolumeRecord:
    """What the node remembers about one volume."""

    name: str
    kind: Kind = Kind.LOCAL
    created_at: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    """Made for one container (`-v /path`): removed with it by `rm -v` and `--rm`."""
    host_path: str = ""
    """hostPath: the host directory."""
    shared: bool = False
    """hostPath: on storage every node mounts with the same data (no transfer needed)."""
    size_bytes: int | None = None
    """tmpfs: the most memory it may hold."""
    mode: int = 0o1777
    """tmpfs: the permission bits of its root."""
    provider: str = ""
    """provider: the storage container that exports the data."""
    provider_path: str = ""
    """provider: the exported directory inside that container."""

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeRecord:
        return cls(**{**data, "kind": Kind(data["kind"])})

    def with_(self, **changes: Any) -> VolumeRecord:
        return replace(self, **changes)


def volumes_in_use(configs: Iterable[Mapping[str, Any]]) -> set[str]:
    """The names of the volumes these containers' stored configs (their JSON) refer to."""
    return {str(use["name"]) for config in configs for use in config.get("volumes") or ()}


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid volume name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (at most 128)")
    return name


def check_subpath(subpath: str) -> str:
    """A sub-directory of a volume: relative, no `..` (resolved inside the volume anyway)."""
    parts = PurePosixPath(subpath).parts
    if subpath.startswith("/") or ".." in parts or "\0" in subpath:
        raise InvalidArgumentError(
            f"volume subpath {subpath!r} must be relative to the volume's root, without "
            "'..' (for example db/main)")
    return subpath


_NEVER_EXACT = ("/", "/etc")
_NEVER_UNDER = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class HostPaths:
    """Which host directories may be bound into containers, on this node.

    `allowed` roots come from the node's configuration (`DOCKYARD_HOST_PATHS`); whatever
    they say, these are refused: `/` and `/etc` themselves, anything under `/proc`, `/sys`
    or `/dev`, and any path that is, holds or lies under the state root or the API socket
    (a container that saw them would command the node).
    """

    allowed: tuple[str, ...] = ("/",)
    protected: tuple[str, ...] = ()
    """The state root and the socket."""

    def check(self, path: str, what: str = "host path") -> str:
        """`path` if a container may have it; InvalidArgumentError saying why not."""
        if not path.startswith("/") or ".." in path.split("/") or "\0" in path:
            raise InvalidArgumentError(f"{what} {path!r} must be an absolute path without '..'")
        clean = str(PurePosixPath(path))
        if clean in _NEVER_EXACT or any(_within(clean, p) for p in _NEVER_UNDER):
            raise InvalidArgumentError(
                f"{what} {clean} is refused: /, /etc and anything under /proc, /sys or /dev "
                "would hand the container the host; bind a data directory such as /srv/data")
        for guarded in self.protected:
            if _within(clean, guarded) or _within(guarded, clean):
                raise InvalidArgumentError(
                    f"{what} {clean} is refused: it exposes the node's own state ({guarded}); "
                    "bind a directory outside it")
        if not any(_within(clean, root) for root in self.allowed):
            raise InvalidArgumentError(
                f"{what} {clean} is not under this node's allowed roots "
                f"({', '.join(self.allowed) or 'none'}): move the data there, or add a root "
                "to DOCKYARD_HOST_PATHS on the node")
        return clean


def _within(path: str, root: str) -> bool:
    """True when `path` is `root` or lies under it (both absolute and normalised)."""
    return root in ("/", path) or path.startswith(root + "/")
