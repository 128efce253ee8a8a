"""What a container changed: `docker diff`, computed from an overlay snapshot's upper dir.

Docker's rules (its overlay2 driver), so that the same changes give the same answer:
- every entry of the upper dir is a change; a whiteout (a 0/0 character device) is `D`
  for its path, and so is an opaque directory that exists in a lower layer;
- any other entry is `C` when its path exists in some lower layer (`stat`, as Docker's
  check) and `A` when it does not; but a directory that exists below with the same size,
  mode and mtime was only copied up on the way to a deeper change, and is not listed;
- the parent of an `A` or `D` is listed as `C` unless it is already listed (or is `/`).

Read-only: nothing is mounted or written, and symbolic links are never followed in the
upper dir (`lstat`, `scandir` without following).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclass(frozen=True, order=True)
class Change:
    """One line of `docker diff`: `kind` is `A` (added), `C` (changed) or `D` (deleted)."""

    path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


def changes(upper: Path, lowers: Sequence[Path]) -> list[Change]:
    """The changes in `upper` over `lowers` (the image's layer dirs), sorted by path."""
    found: list[Change] = []
    listed_dirs: set[str] = set()
    for path, entry in _walk(upper):
        info = entry.stat(follow_symlinks=False)
        below = _below(lowers, path)
        if _is_whiteout(info) or (below is not None and _is_opaque(entry, info)):
            kind = "D"
        elif below is None:
            kind = "A"
        elif stat.S_ISDIR(below.st_mode) and stat.S_ISDIR(info.st_mode) \
                and (info.st_size, info.st_mode, info.st_mtime_ns) \
                == (below.st_size, below.st_mode, below.st_mtime_ns):
            continue  # copied up on the way to a deeper change
        else:
            kind = "C"
        if stat.S_ISDIR(info.st_mode):
            listed_dirs.add(path)
        parent = path.rsplit("/", 1)[0] or "/"
        if kind in ("A", "D") and parent != "/" and parent not in listed_dirs:
            found.append(Change(parent, "C"))
            listed_dirs.add(parent)
        found.append(Change(path, kind))
    return sorted(found)


def _walk(top: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(container path, entry) for everything under `top`, parents before children."""
    stack = [(str(top), "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            path = f"{prefix}/{entry.name}"
            yield path, entry
        for entry in reversed(ordered):
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, f"{prefix}/{entry.name}"))


def _below(lowers: Sequence[Path], path: str) -> os.stat_result | None:
    for lower in lowers:
        try:
            return os.stat(f"{lower}{path}")
        except OSError:
            continue
    return None


def _is_whiteout(info: os.stat_result) -> bool:
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def _is_opaque(entry: os.DirEntry[str], info: os.stat_result) -> bool:
    if not stat.S_ISDIR(info.st_mode):
        return False
    try:
        return os.getxattr(entry.path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise
