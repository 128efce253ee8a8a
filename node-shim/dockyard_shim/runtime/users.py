"""Resolve `-u USER[:GROUP]` to numeric ids from the image's /etc/passwd and /etc/group.

Docker's rules: a name must exist in the image; a numeric uid need not (its gid is then 0
unless given); the supplementary groups are the groups that list the user by name. The
files are read through `resolve_in_root`, so a symlinked /etc/passwd cannot make the
runtime read a host file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.mounts import resolve_in_root


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str = "/"


def _table(root: Path, name: str) -> list[list[str]]:
    path = resolve_in_root(root, f"/etc/{name}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(root: Path, user: str) -> Identity:
    """The ids for `user` (`""` means root) as seen inside the image at `root`."""
    user_part, _, group_part = (user or "0").partition(":")
    passwd = [row for row in _table(root, "passwd") if len(row) >= 7]
    entry = next((row for row in passwd if row[0] == user_part or row[2] == user_part), None)
    if user_part.isdigit():
        uid = int(user_part)
        gid = int(entry[3]) if entry else 0
    elif entry is None:
        raise InvalidArgumentError(
            f"unable to find user {user_part}: no matching entries in the image's /etc/passwd")
    else:
        uid, gid = int(entry[2]), int(entry[3])
    name = entry[0] if entry else ""
    groups_table = [row for row in _table(root, "group") if len(row) >= 4]
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            match = next((row for row in groups_table if row[0] == group_part), None)
            if match is None:
                raise InvalidArgumentError(f"unable to find group {group_part}: no matching "
                                           "entries in the image's /etc/group")
            gid = int(match[2])
    extra = [int(row[2]) for row in groups_table
             if name and name in row[3].split(",") and row[2].isdigit()]
    groups = tuple(dict.fromkeys([gid, *extra]))
    return Identity(uid, gid, groups, entry[5] if entry else "/")
