"""Archive names, checked, and resolved under a root through directory file descriptors.

Every name in a layer is attacker-chosen. The classic escapes are a `../` name, an absolute
name, and a symlink planted by an earlier entry and then written through (CVE-2018-15664,
CVE-2019-14271 for docker cp; containerd's TestBreakouts collects the variants). The defence
here is structural rather than a string check: a name is split into components, `..` is
refused outright, and the parent directory is reached from an open descriptor of the root,
one component at a time, with O_NOFOLLOW|O_DIRECTORY, so a symlink (or anything that is
not a directory) in the middle of a path stops the walk instead of being followed. The last
component is then always used relative to the parent's descriptor by the caller (`*at`
calls), with no-follow semantics.

Where the kernel has openat2(2) (Linux 5.6), the walk is first tried in one call with
RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, which the kernel enforces
atomically; on any failure (or without openat2) the component walk runs, which is equally
strict, creates missing parents when asked, and names the component that stopped it.

`remove_at` removes a file or a whole tree without following a symlink, with one open
descriptor at a time however deep the tree is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence

from dockyard_shim.errors import InvalidArgumentError, UnavailableError
from dockyard_shim.kernel import LinuxKernel
from dockyard_shim.kernel.consts import (
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
)

PATH_MAX = 4096  # linux/limits.h, NUL included: a longer name is unusable inside a container
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC



def split_name(name: str) -> tuple[str, ...]:
    """The components of an archive name; () for the root itself ("." , "./" or "/").

    A leading "./" and empty or "." components are dropped. Refused: empty names, NUL
    bytes, absolute names, `..` anywhere, and names longer than PATH_MAX.
    """
    if not name:
        raise InvalidArgumentError("malformed layer: an entry has an empty name")
    if "\0" in name:
        raise InvalidArgumentError(f"malformed layer: the name {name!r} contains a NUL byte")
    if len(os.fsencode(name)) >= PATH_MAX:
        raise InvalidArgumentError(
            f"malformed layer: the name {name[:60]!r}… is longer than PATH_MAX ({PATH_MAX})")
    if name.startswith("/"):
        if name.strip("/"):
            raise InvalidArgumentError(f"malformed layer: the name {name!r} is absolute")
        return ()
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise InvalidArgumentError(f"malformed layer: the name {name!r} contains '..'")
    return parts


class _Openat2:
    """openat2(2) through the kernel seam, switched off for good the first time the kernel
    lacks it (or a seccomp filter refuses it)."""

    def __init__(self) -> None:
        try:
            self._kernel: LinuxKernel | None = LinuxKernel()
        except UnavailableError:  # a machine without a syscall table
            self._kernel = None

    def open_dir(self, dir_fd: int, path: str) -> int | None:
        """A descriptor of the directory `path` beneath `dir_fd`; None when not possible."""
        if self._kernel is None:
            return None
        try:
            path.encode()
        except UnicodeEncodeError:
            # A name that is not UTF-8 (a Latin-1 file name, held as surrogate escapes):
            # the seam encodes strictly, the walk's os calls give the bytes back as they were.
            return None
        try:
            return self._kernel.openat2(dir_fd, path, DIR_FLAGS, RESOLVE_BENEATH
                                        | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.EPERM, errno.E2BIG):  # old kernel, seccomp
                self._kernel = None
            return None


_openat2 = _Openat2()


def open_dir(root_fd: int, parts: Sequence[str], *, create: bool = False,
             on_create: Callable[[], None] = lambda: None) -> int:
    """A new descriptor of the directory `parts` under `root_fd`; the caller closes it.

    Never follows a symlink. Missing directories are created (mode 0755, owned by the caller)
    when `create` is set, calling `on_create` before each, and so is a directory where a
    whiteout stands; otherwise a missing one raises FileNotFoundError. A symlink or another
    non-directory on the way raises InvalidArgumentError.
    """
    if not parts:
        return os.dup(root_fd)
    fast = _openat2.open_dir(root_fd, "/".join(parts))
    if fast is not None:
        return fast
    fd = os.dup(root_fd)
    try:
        for depth, part in enumerate(parts):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                child = _make_dir(fd, part, on_create)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = "/".join(parts[:depth + 1])
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise InvalidArgumentError(
                        f"hostile layer: path goes through a symlink at {where!r}") from e
                if not (create and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                    raise InvalidArgumentError(
                        f"malformed layer: path goes through a non-directory at {where!r}"
                    ) from e
                # A whiteout (only we make character devices) that the layer now fills:
                # the directory was deleted below and is recreated in this layer.
                os.unlink(part, dir_fd=fd)
                child = _make_dir(fd, part, on_create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_dir(dir_fd: int, name: str, on_create: Callable[[], None]) -> int:
    on_create()
    os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    os.fchmod(fd, 0o755)  # explicit: the process umask must not decide
    return fd


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of `name` in the directory `dir_fd`, or None when there is nothing there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def remove_at(dir_fd: int, name: str) -> None:
    """Remove `name` in `dir_fd`, recursively if it is a directory; never follows symlinks.

    Iterative, holding one descriptor besides `dir_fd`: descends with O_NOFOLLOW and climbs
    back with "..", which is always the real parent, so depth costs neither stack nor fds.
    """
    st = lstat_at(dir_fd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    path = [name]
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        while True:
            subdir = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdir = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if subdir is not None:
                child = os.open(subdir, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                path.append(subdir)
                continue
            done = path.pop()
            if not path:
                break
            parent = os.open("..", DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(done, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


@contextlib.contextmanager
def closing_fd(fd: int) -> Iterator[int]:
    """Close `fd` when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)
