"""Applying one OCI image layer to the empty upper directory of an overlayfs snapshot.

The upper directory sees none of the lower layers, so the layer's changes are written in the
form overlayfs reads them (Documentation/filesystems/overlayfs.rst): a whiteout `.wh.NAME`
becomes a character device 0:0 named NAME, and an opaque marker `D/.wh..wh..opq` becomes
the xattr trusted.overlay.opaque="y" on D. Whiteouts hide lower layers only (OCI image-spec,
layer.md): an entry of this same layer is never removed by one, whatever the order of the
two in the archive, and an opaque directory keeps this layer's children. A directory that is
both whited out and present in the layer was deleted below and made anew: it becomes opaque.

The safety rules, each because an archive is hostile until proven otherwise:
- names are resolved by `paths`: no `..`, no absolute names, no symlink followed on the way
  (a symlink as a parent is refused, not resolved), the last component used through the
  parent's descriptor with O_NOFOLLOW/O_EXCL or the no-follow *at calls;
- a hardlink must point to a non-directory this layer created, found the same way, and is
  made with linkat(2) without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink;
- a file is always a new inode (O_EXCL): an entry replacing another unlinks it first
  (a directory is removed recursively, never through a symlink), so writing one name can
  never write through a hardlink or symlink planted by an earlier entry;
- device nodes are refused (a layer has no business shipping them; whiteouts are the only
  character devices in an upper directory, and only we make them); fifos are allowed;
- xattrs: only user.* and security.capability are kept. trusted.* (trusted.overlay.opaque,
  .redirect, .metacopy…) and user.overlay.* (what overlayfs reads instead when mounted with
  `userxattr`) would let an archive forge overlay metadata; security.selinux and the rest
  are the host's business.
- ownership and permissions are applied as the archive says, setuid bits included, in the
  order that keeps them: chown, then xattrs (chown drops security.capability), then chmod
  (chown drops setuid). Directory times are set at the very end, when nothing else will be
  written into them.

Directories that the archive uses before (or without) listing them are created 0755, owned
by the caller. With well-formed layers (every writer we know lists parents first) their own
entry fixes that; a layer that omits them gets those defaults in its upper directory, which
then win over the lower layers' attributes for those directories in the merged view.

AUFS bookkeeping entries (`.wh..wh.plnk`, `.wh..wh.aufs`…) are skipped, as Docker and
containerd do; hardlinks into `.wh..wh.plnk` are therefore refused.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dockyard_shim.archive.limits import ApplyStats, Limits, MiB
from dockyard_shim.archive.paths import (
    DIR_FLAGS,
    closing_fd,
    lstat_at,
    open_dir,
    remove_at,
    split_name,
)
from dockyard_shim.archive.streams import TarBytes
from dockyard_shim.archive.tarstream import Header, Kind, TarReader
from dockyard_shim.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.snapshots.changes import OPAQUE_XATTR

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_AUFS_META = ".wh..wh."
_CHUNK = 1 * MiB
_NS_LIMIT = 2**63 - 1
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2)
# Errors that a hostile or malformed archive provokes; anything else is the host's problem.
_INPUT_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EEXIST,
                 errno.ENOENT, errno.EMLINK, errno.E2BIG, errno.ERANGE, errno.EINVAL}
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DEFAULT_LIMITS = Limits()


def apply_layer(stream: BinaryIO, root: Path, *, limits: Limits = _DEFAULT_LIMITS) -> ApplyStats:
    """Apply the layer blob `stream` (tar or tar+gzip) to the empty directory `root`.

    `root` is the upper directory of a fresh overlay snapshot. Returns the counts and the
    diff_id (sha256 of the uncompressed stream) for the caller to check against the image
    config before committing the snapshot.

    Raises InvalidArgumentError for a malformed or hostile archive and for a limit exceeded
    (the message names the limit), UnavailableError when the disk is full, NotFoundError or
    FailedPreconditionError when `root` is missing or not empty. On any failure `root` may be
    left partly written, but nothing outside it is ever touched: the caller removes the
    whole snapshot.
    """
    source = TarBytes(stream, limits)
    try:
        reader = TarReader(source, limits)
        with _Applier(root, limits) as applier:
            while (header := reader.next()) is not None:
                applier.apply(header, reader)
            applier.finish()
    finally:
        source.close()  # its hashing thread; the digest stays readable
    return ApplyStats(diff_id=source.diff_id, entries=reader.entries,
                      bytes_written=applier.bytes_written, whiteouts=applier.whiteouts,
                      inodes=applier.inodes, compression=source.compression)


def _kept(name: str, kind: Kind) -> bool:
    """Whether an archive xattr reaches the disk; the kernel refuses user.* on links and
    fifos, and capabilities only mean something on regular files."""
    if name == "security.capability":
        return kind is Kind.FILE
    return (kind in (Kind.FILE, Kind.DIR) and name.startswith("user.")
            and not name.startswith("user.overlay."))


def _clamp(ns: int) -> int:
    return max(-_NS_LIMIT, min(_NS_LIMIT, ns))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Applier:
    """The filesystem side: one open descriptor of the root, the counts, deferred work."""

    def __init__(self, root: Path, limits: Limits) -> None:
        try:
            self._root = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise NotFoundError(f"the layer root {root} does not exist") from e
        except NotADirectoryError as e:
            raise InvalidArgumentError(f"the layer root {root} is not a directory") from e
        if os.listdir(self._root):
            os.close(self._root)
            raise FailedPreconditionError(
                f"the layer root {root} is not empty: a layer is applied to a fresh snapshot")
        self._limits = limits
        self._dir_times: dict[tuple[str, ...], int] = {}
        self._opaque: set[tuple[str, ...]] = set()  # directories with an opaque marker
        self._whited: set[tuple[str, ...]] = set()  # paths named by a whiteout
        self.inodes = 0
        self.whiteouts = 0
        self.bytes_written = 0

    def __enter__(self) -> _Applier:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._root)

    def _charge(self) -> None:
        self.inodes += 1
        if self.inodes > self._limits.max_inodes:
            raise InvalidArgumentError(
                f"the layer creates more than max_inodes ({self._limits.max_inodes}) files, "
                f"directories and links")

    def apply(self, header: Header, reader: TarReader) -> None:
        """Apply one entry; its data, if any, is read from `reader`."""
        try:
            self._apply(header, reader)
        except OSError as e:
            if e.errno in _RESOURCE_ERRNOS:
                raise UnavailableError(
                    f"no room to apply the layer at {header.name!r}: {e.strerror}") from e
            if e.errno in _INPUT_ERRNOS:
                raise InvalidArgumentError(f"malformed layer: cannot apply {header.kind.value} "
                                           f"{header.name!r}: {e.strerror}") from e
            raise

    def _apply(self, header: Header, reader: TarReader) -> None:
        parts = split_name(header.name)
        if header.uid > _MAX_ID or header.gid > _MAX_ID:
            raise InvalidArgumentError(f"malformed layer: {header.name!r} has uid/gid "
                                       f"{header.uid}/{header.gid}, beyond {_MAX_ID}")
        meta = [i for i, part in enumerate(parts) if part.startswith(_AUFS_META)]
        if meta and not (meta == [len(parts) - 1] and parts[-1] == OPAQUE_MARKER):
            return
        if any(part.startswith(WHITEOUT_PREFIX) for part in parts[:-1]):
            raise InvalidArgumentError(
                f"malformed layer: {header.name!r} uses a whiteout name as a directory")
        if parts and parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(header, parts)
            return
        if header.kind in (Kind.CHAR, Kind.BLOCK):
            raise InvalidArgumentError(
                f"hostile layer: {header.kind.value} {header.name!r} "
                f"({header.devmajor}:{header.devminor}): layers may not contain device nodes")
        if not parts:
            if header.kind is not Kind.DIR:
                raise InvalidArgumentError(f"hostile layer: the entry {header.name!r} names "
                                           f"the root but is a {header.kind.value}")
            with closing_fd(os.dup(self._root)) as fd:
                self._set_metadata(fd, header, merge=True)
            self._dir_times[parts] = header.mtime_ns
            return
        with closing_fd(open_dir(self._root, parts[:-1], create=True,
                                 on_create=self._charge)) as parent:
            if header.kind is Kind.HARDLINK:
                with self._link_source(header, parts) as (source_dir, source_name):
                    self._make_room(parent, parts[-1], header)
                    self._charge()
                    os.link(source_name, parts[-1], src_dir_fd=source_dir,
                            dst_dir_fd=parent, follow_symlinks=False)
                return
            if self._make_room(parent, parts[-1], header):
                with closing_fd(os.open(parts[-1], DIR_FLAGS, dir_fd=parent)) as fd:
                    self._set_metadata(fd, header, merge=True)
                self._dir_times[parts] = header.mtime_ns
                return
            self._charge()
            self._create(parent, parts, header, reader)

    def _make_room(self, parent: int, name: str, header: Header) -> bool:
        """Remove what `name` holds unless both it and the entry are directories (→ True)."""
        existing = lstat_at(parent, name)
        if existing is None:
            return False
        if header.kind is Kind.DIR and stat.S_ISDIR(existing.st_mode):
            return True
        remove_at(parent, name)
        return False

    def _create(self, parent: int, parts: tuple[str, ...], header: Header,
                reader: TarReader) -> None:
        name, mtime = parts[-1], _clamp(header.mtime_ns)
        if header.kind is Kind.FILE:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with closing_fd(os.open(name, flags, 0o600, dir_fd=parent)) as fd:
                while chunk := reader.read(_CHUNK):
                    _write_all(fd, chunk)
                    self.bytes_written += len(chunk)
                self._set_metadata(fd, header)
                os.utime(fd, ns=(mtime, mtime))
        elif header.kind is Kind.DIR:
            os.mkdir(name, 0o700, dir_fd=parent)
            with closing_fd(os.open(name, DIR_FLAGS, dir_fd=parent)) as fd:
                self._set_metadata(fd, header)
            self._dir_times[parts] = header.mtime_ns
        elif header.kind is Kind.SYMLINK:
            if not header.linkname or "\0" in header.linkname:
                raise InvalidArgumentError(f"malformed layer: symlink {header.name!r} has an "
                                           f"empty or NUL-bearing target")
            os.symlink(header.linkname, name, dir_fd=parent)  # stored as is, never followed
            os.chown(name, header.uid, header.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
        else:  # a fifo: opening it non-blocking for reading neither blocks nor needs a writer
            os.mkfifo(name, 0o600, dir_fd=parent)
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
            with closing_fd(os.open(name, flags, dir_fd=parent)) as fd:
                self._set_metadata(fd, header)
                os.utime(fd, ns=(mtime, mtime))

    @contextlib.contextmanager
    def _link_source(self, header: Header, parts: tuple[str, ...]) -> Iterator[tuple[int, str]]:
        """The directory descriptor and name of a hardlink's target, checked."""
        where = f"hardlink {header.name!r} -> {header.linkname!r}"
        target = split_name(header.linkname) if header.linkname else ()
        if not target or target == parts:
            raise InvalidArgumentError(f"malformed layer: {where} has no usable target")
        missing = InvalidArgumentError(f"malformed layer: {where}: the target is not in this "
                                       f"layer (links must point to an earlier entry)")
        try:
            source_dir = open_dir(self._root, target[:-1])
        except FileNotFoundError:
            raise missing from None
        with closing_fd(source_dir):
            found = lstat_at(source_dir, target[-1])
            if found is None:
                raise missing
            if stat.S_ISDIR(found.st_mode) or stat.S_ISCHR(found.st_mode) \
                    or stat.S_ISBLK(found.st_mode):
                raise InvalidArgumentError(f"malformed layer: {where}: the target is a "
                                           f"directory or a whiteout")
            yield source_dir, target[-1]

    def _whiteout(self, header: Header, parts: tuple[str, ...]) -> None:
        if header.kind is Kind.DIR:
            raise InvalidArgumentError(f"malformed layer: the whiteout {header.name!r} is a "
                                       f"directory; whiteouts are files")
        self.whiteouts += 1
        with closing_fd(open_dir(self._root, parts[:-1], create=True,
                                 on_create=self._charge)) as parent:
            if parts[-1] == OPAQUE_MARKER:
                self._opaque.add(parts[:-1])  # set at the end: see finish
                return
            hidden = parts[-1][len(WHITEOUT_PREFIX):]
            if hidden in ("", ".", ".."):
                raise InvalidArgumentError(
                    f"hostile layer: the whiteout {header.name!r} names no file")
            self._whited.add((*parts[:-1], hidden))
            if lstat_at(parent, hidden) is not None:
                return  # this layer's own entry: a whiteout hides lower layers only
            self._charge()
            os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)

    def _set_metadata(self, fd: int, header: Header, *, merge: bool = False) -> None:
        os.fchown(fd, header.uid, header.gid)
        kept = {k: v for k, v in header.xattrs.items() if _kept(k, header.kind)}
        if merge:  # the entry's attributes replace the directory's (OCI layer.md)
            for name in os.listxattr(fd):
                if name not in kept and _kept(name, header.kind):
                    os.removexattr(fd, name)
        for name, value in kept.items():
            os.setxattr(fd, name, value)
        os.fchmod(fd, header.mode)

    def finish(self) -> None:
        """Mark opaque directories, then set directory times, now that all is written.

        Opaque markers are applied last so that the order of the marker and the directory's
        own entries in the archive does not matter (OCI layer.md). A path that is both
        whited out and a directory of this layer (in either order) is a directory deleted
        below and made anew here: overlayfs must not merge it with the lower one, so it is
        made opaque too.
        """
        for parts in self._opaque:
            try:
                fd = open_dir(self._root, parts)
            except (FileNotFoundError, InvalidArgumentError) as e:
                raise InvalidArgumentError(f"malformed layer: {'/'.join(parts)!r} has an "
                                           f"opaque marker but is no directory") from e
            with closing_fd(fd):
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        for parts in self._whited - self._opaque:
            try:
                fd = open_dir(self._root, parts)
            except (FileNotFoundError, InvalidArgumentError):
                continue  # still a whiteout, or a non-directory: either hides the lower one
            with closing_fd(fd):
                os.setxattr(fd, OPAQUE_XATTR, b"y")
        for parts, mtime in self._dir_times.items():
            try:
                fd = open_dir(self._root, parts)
            except (FileNotFoundError, InvalidArgumentError):
                continue  # replaced by a later entry of the layer: its time went with it
            with closing_fd(fd):
                os.utime(fd, ns=(_clamp(mtime), _clamp(mtime)))
