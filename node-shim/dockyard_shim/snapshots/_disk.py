"""Disk helpers for snapshotters: measuring a directory, and removing one in two steps.

Removal first renames the directory to a `trash-` name in the same parent (atomic, and it
frees the original name at once), then deletes the trash. A crash or a busy file between the
two steps leaves only a trash directory, which the next cleanup deletes; two processes that
clean up at once do not trip over each other's deletions.

Touches only the paths it is given; never follows symbolic links.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from dockyard_shim.snapshots.api import Usage

TRASH_PREFIX = "trash-"


def disk_usage(path: Path) -> Usage:
    """Allocated bytes and inodes under `path`, as `du` counts them: blocks actually used (a
    sparse file counts its holes as nothing) and each hard-linked inode once."""
    seen: set[tuple[int, int]] = set()
    size = 0

    def count(st: os.stat_result) -> None:
        nonlocal size
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            size += st.st_blocks * 512  # st_blocks is in 512-byte units whatever the fs block

    count(path.lstat())
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                count(os.lstat(os.path.join(dirpath, name)))
            except FileNotFoundError:
                continue  # removed while we walk: it no longer uses space
    return Usage(size=size, inodes=len(seen))


def trash(path: Path) -> Path | None:
    """Rename `path` to a fresh trash name beside it; None when it is already gone."""
    target = path.with_name(f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(4)}")
    try:
        path.rename(target)
    except FileNotFoundError:
        return None
    return target


def delete_tree(path: Path) -> bool:
    """Delete `path` and everything under it; True when it is gone.

    Entries that vanish meanwhile (another process cleaning up) are fine. Anything else that
    resists is left for a later cleanup rather than failing the caller, whose metadata
    change is already committed. A tree with a mount point inside is not touched at all:
    deleting recursively would go through the mount and delete what it shows, perhaps a
    host directory bind-mounted there.
    """
    if _mounts_under(path):
        return False
    failed = False

    def on_error(exc: BaseException) -> None:
        nonlocal failed
        if not isinstance(exc, FileNotFoundError):
            failed = True

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _f, _p, e: on_error(e))
    else:
        shutil.rmtree(path, onerror=lambda _f, _p, info: on_error(info[1]))
    return not failed and not os.path.lexists(path)


def _mounts_under(path: Path) -> bool:
    """Whether anything is mounted at or below `path` (in our mount namespace)."""
    prefix = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return False  # no /proc: nothing better to go on than trying
    for point in points:
        # mountinfo escapes space, tab, newline and backslash as octal (\040…)
        decoded = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
        if decoded == prefix or decoded.startswith(prefix + "/"):
            return True
    return False


def discard(path: Path) -> bool:
    """Trash `path` then delete it; True when nothing is left of it."""
    trashed = trash(path)
    return trashed is None or delete_tree(trashed)
