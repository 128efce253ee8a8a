"""Mounts as data: the `Mount` value, and resolving paths inside a root without escaping it.

Code that plans mounts (the snapshotter, the container's filesystem setup) returns `Mount`
values; one place (`dockyard_shim.kernel`) performs them. Keeping them as data makes the
plans testable without root and printable when something fails.

`resolve_in_root` is the guard against symlink escapes (CVE-2018-15664 for docker cp,
CVE-2021-30465 for runc's mount destinations): a path inside a container's root is
resolved component by component, symlinks included, but never above the root.

Pure computation on paths except for `resolve_in_root`, which reads links.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dockyard_shim.errors import InvalidArgumentError


@dataclass(frozen=True)
class Mount:
    """One mount: what (`source`), how (`type`, `options`) and where (`target`).

    A snapshotter returns mounts with an empty `target`: where the rootfs goes is the
    caller's decision, as in containerd. Options are mount(8) style strings
    (`ro`, `nosuid`, `lowerdir=…`); flags and data are split when the mount is performed.
    """

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = field(default_factory=tuple)

    def at(self, target: str) -> Mount:
        """The same mount, placed at `target`."""
        return Mount(self.type, self.source, target, self.options)


_MAX_SYMLINKS = 40  # the kernel's limit (MAXSYMLINKS), so a loop fails like it would


def resolve_in_root(root: Path, path: str) -> Path:
    """The host path of `path` as seen from inside `root`, following links within `root`.

    An absolute symlink is taken relative to `root`, and `..` never climbs above it, exactly
    as if `root` were `/` (chroot semantics). Components that do not exist are kept as they
    are, so the result may not exist. Raises InvalidArgumentError on a symlink loop.
    """
    root = root.resolve()
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)  # not a link (or missing): keep the name as it is
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise InvalidArgumentError(f"too many levels of symbolic links resolving {path!r}")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return root.joinpath(*resolved)
