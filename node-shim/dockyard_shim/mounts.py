"""Mounts as data: the `Mount` value, and resolving paths inside a root without escaping it.

Code that plans mounts (the snapshotter, the container's filesystem setup) returns `Mount`
values; one place (`dockyard_shim.kernel`) performs them. Keeping them as data makes the
plans testable without root and printable when something fails.

`resolve_in_root` is the guard against symlink escapes (CVE-2018-15664 for docker cp,
CVE-2021-30465 for runc's mount destinations): a path inside a container's root is
resolved component by component, symlinks included, but never above the root.

`perform` is the one place mounts happen. Pure computation otherwise, except for
`resolve_in_root`, which reads links.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.kernel import Kernel
from dockyard_shim.kernel import consts as k


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
    `root` itself is the host's and trusted: links in it are left to the kernel. Strings,
    not `Path`s, inside: a container start resolves dozens of paths.
    """
    base = os.path.abspath(root)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    parts.reverse()  # a stack: the next component last
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        try:
            target = os.readlink("/".join((base, *resolved, part)))
        except OSError:
            resolved.append(part)  # not a link (or missing): keep the name as it is
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise InvalidArgumentError(f"too many levels of symbolic links resolving {path!r}")
        if target.startswith("/"):
            resolved = []
        parts.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
    return Path(base, *resolved)


def make_in_root(root: Path, path: str, *, directory: bool) -> Path:
    """The host path of `path` inside `root` (`resolve_in_root`), made if missing: a
    directory, or an empty file in a directory, as mount points are (0755 and 0644, as
    runc makes them)."""
    target = resolve_in_root(root, path)
    if directory:
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
    else:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not target.exists():
            target.touch(mode=0o644)
    return target


_IN_ROOT = k.RESOLVE_IN_ROOT | k.RESOLVE_NO_MAGICLINKS
_O_PATH = os.O_PATH | os.O_CLOEXEC


def open_in_root(kernel: Kernel, root: str, path: str, *, make: str | None = None) -> int:
    """An O_PATH descriptor of `path` inside the directory `root`, resolved by the kernel as
    if `root` were `/` (openat2 RESOLVE_IN_ROOT): no symlink, `..` or /proc magic link leads
    out of it, even one that a container sharing a volume swaps in meanwhile, because what
    is mounted is what the descriptor holds, not a path looked up again later.

    With `make` ("dir" or "file"), missing components are made inside `root` as mount
    points are (directories 0755, a last file 0644); a link to a missing path is followed
    and that path made, inside `root`, as runc does. The caller closes the descriptor.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    root_fd = os.open(root, _O_PATH | os.O_DIRECTORY)
    links = depth = 0
    try:
        if make is None:
            return kernel.openat2(root_fd, "/".join(parts) or ".", _O_PATH, _IN_ROOT)
        while True:
            prefix = "/".join(parts[:depth]) or "."
            try:
                fd = kernel.openat2(root_fd, prefix, _O_PATH, _IN_ROOT)
            except FileNotFoundError:
                link = _make_last(kernel, root_fd, parts[:depth],
                                  file=make == "file" and depth == len(parts))
                if link is not None:  # a link to nothing: make where it leads, inside root
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise InvalidArgumentError(
                            f"too many levels of symbolic links resolving {path!r}") from None
                    base = [] if link.startswith("/") else parts[:depth - 1]
                    parts = [*base, *(p for p in link.split("/") if p not in ("", ".")),
                             *parts[depth:]]
                    depth = 0
                    continue
                try:
                    fd = kernel.openat2(root_fd, prefix, _O_PATH, _IN_ROOT)
                except FileNotFoundError:  # moved away meanwhile: resolve again, a few times
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise
                    depth = 0
                    continue
            if depth == len(parts):
                return fd
            os.close(fd)
            depth += 1
    finally:
        os.close(root_fd)


def _make_last(kernel: Kernel, root_fd: int, parts: list[str], *, file: bool) -> str | None:
    """Make the last of `parts` in its (resolved) parent; None once it exists (made here or
    meanwhile), or the target of the link that stands there."""
    parent = kernel.openat2(root_fd, "/".join(parts[:-1]) or ".", _O_PATH | os.O_DIRECTORY,
                            _IN_ROOT)
    try:
        if file:
            os.close(os.open(parts[-1], os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
                             | os.O_NOFOLLOW, 0o644, dir_fd=parent))
        else:
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
    except FileExistsError:
        try:
            return os.readlink(parts[-1], dir_fd=parent)
        except OSError:
            return None  # not a link: made meanwhile
    finally:
        os.close(parent)
    return None


def clone_tree(kernel: Kernel, source_fd: int, *, readonly: bool = False,
               userns_fd: int = -1) -> int:
    """A detached, recursive copy of the mount tree at `source_fd`, read-only if asked and,
    with `userns_fd`, carrying that user namespace's ids (idmapped: its uid N reads and
    writes as the disk's uid 0). Its flags are set before anyone can see it: `attach`
    it by descriptor, where no path is looked up again."""
    tree = kernel.open_tree(source_fd, "", k.OPEN_TREE_CLONE | k.OPEN_TREE_CLOEXEC
                            | k.AT_EMPTY_PATH | k.AT_RECURSIVE)
    attributes = (k.MOUNT_ATTR_RDONLY if readonly else 0) \
        | (k.MOUNT_ATTR_IDMAP if userns_fd >= 0 else 0)
    try:
        if attributes:
            kernel.mount_setattr(tree, "", k.AT_EMPTY_PATH | k.AT_RECURSIVE, attributes,
                                 userns_fd=userns_fd)
    except BaseException:
        os.close(tree)
        raise
    return tree


def attach(kernel: Kernel, tree: int, target_fd: int) -> None:
    """Mount the detached `tree` (`clone_tree`) where `target_fd` points."""
    kernel.move_mount(tree, "", target_fd, "",
                      k.MOVE_MOUNT_F_EMPTY_PATH | k.MOVE_MOUNT_T_EMPTY_PATH)


def bind_by_fd(kernel: Kernel, source_fd: int, target_fd: int, *, readonly: bool) -> None:
    """Bind the tree at `source_fd` (recursively) onto `target_fd`, read-only if asked, in
    one step: a detached clone gets its flags before it is attached, so it is never
    visible writable, and no path is looked up between the checks and the mount."""
    tree = clone_tree(kernel, source_fd, readonly=readonly)
    try:
        attach(kernel, tree, target_fd)
    finally:
        os.close(tree)


# mount(8) option words that are flags; everything else is filesystem data.
_FLAGS = {
    "ro": k.MS_RDONLY, "rw": 0, "nosuid": k.MS_NOSUID, "nodev": k.MS_NODEV,
    "noexec": k.MS_NOEXEC, "bind": k.MS_BIND, "rbind": k.MS_BIND | k.MS_REC,
    "noatime": k.MS_NOATIME, "relatime": k.MS_RELATIME, "strictatime": k.MS_STRICTATIME,
}
_PROPAGATION = {
    "private": k.MS_PRIVATE, "rprivate": k.MS_PRIVATE | k.MS_REC,
    "slave": k.MS_SLAVE, "rslave": k.MS_SLAVE | k.MS_REC,
    "shared": k.MS_SHARED, "rshared": k.MS_SHARED | k.MS_REC,
    "unbindable": k.MS_UNBINDABLE, "runbindable": k.MS_UNBINDABLE | k.MS_REC,
}
_PAGE = 4096  # mount(2) copies at most one page of option data


@dataclass(frozen=True)
class MountCall:
    """The mount(2) calls one `Mount` becomes: flags and data split, remounts included."""

    flags: int
    data: str
    propagation: int
    remount_flags: int | None  # a bind mount's ro/nosuid/… need a second, remount call


def plan_call(mount: Mount) -> MountCall:
    """Split a Mount's options into mount(2) flags, data and follow-up calls."""
    flags, propagation, data = 0, 0, []
    for option in mount.options:
        if option in _FLAGS:
            flags |= _FLAGS[option]
        elif option in _PROPAGATION:
            propagation |= _PROPAGATION[option]
        else:
            data.append(option)
    text = ",".join(data)
    if len(text) >= _PAGE:
        raise InvalidArgumentError(
            f"mount options for {mount.target or mount.source} are {len(text)} bytes; "
            f"the kernel takes at most {_PAGE - 1}")
    # The kernel ignores ro, nosuid, nodev and noexec on the first call of a bind mount;
    # they take effect only on a remount of the bind (mount(8) does the same).
    extra = flags & (k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC)
    remount = flags & ~k.MS_REC | k.MS_REMOUNT if flags & k.MS_BIND and extra else None
    return MountCall(flags, text, propagation, remount)


def perform(kernel: Kernel, mount: Mount) -> None:
    """Mount `mount` at its target. The target must exist and be safe (resolved in root)."""
    if not mount.target:
        raise InvalidArgumentError(f"mount of {mount.source} has no target")
    call = plan_call(mount)
    kernel.mount(mount.source, mount.target, mount.type, call.flags, call.data)
    if call.remount_flags is not None:
        kernel.mount("", mount.target, "", call.remount_flags, "")
    if call.propagation:
        kernel.mount("", mount.target, "", call.propagation, "")
