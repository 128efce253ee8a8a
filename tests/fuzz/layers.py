"""Generated layer archives, a sandbox to apply them in, and a description of what they made.

Two families of archives:
- `hostile_layers`: any sequence of entries over a small alphabet of name components, so
  that names collide, replace each other and go through each other: files, directories,
  symlinks (absolute, relative, dangling, out with `..`, at the sandbox's canary), hardlinks
  (to earlier entries, missing ones, out of the tree), whiteouts and opaque markers, device
  nodes and fifos, odd modes, owners and times, xattrs an archive must not set, unicode,
  undecodable and over-long names, `.`/`..` components and leading slashes.
- `well_formed_layers`: what a real writer produces (parents first, unique names, hardlinks
  to earlier files, whiteouts of names the layer does not have, opaque markers after their
  directory), with the tree they must make, for the round trip through `write_layer`.

Targets name the sandbox through placeholders (`@OUT@`, `@CANARY@`) that `concrete`
replaces once the sandbox exists, so one generated archive can aim at any sandbox.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from hypothesis import strategies as st

from tests.shim.layerfactory import (
    Device,
    Dir,
    Entry,
    Fifo,
    File,
    Hardlink,
    HostSnapshot,
    Opaque,
    Symlink,
    Whiteout,
    tar_of,
)

T = TypeVar("T")
OUT, CANARY = "@OUT@", "@CANARY@"

PLAIN = ("a", "b", "c", "d", "é", "日本", "\udcff")  # \udcff: an undecodable byte, 0xff
ODD = (".", "..", "", "new\nline", " ", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh..wh.plnk",
       ".wh.", ".wh..", ".wh...", "x" * 255, "y" * 256)  # the longest component, one more
PREFIXES = ("",) * 20 + ("./", "./", "/", "//", "../", "../", "a/../../")
LINK_TARGETS = ("/", ".", "..", "../..", "../outside", "../outside/canary", OUT, CANARY,
                f"{OUT}/canary", "/etc/passwd", "nowhere/at/all", "a/../../..", "")
XATTRS = ("user.a", "user.overlay.opaque", "trusted.overlay.opaque",
          "trusted.overlay.redirect", "security.capability", "security.selinux",
          "system.posix_acl_access", "user." + "z" * 300)
MTIME = 1_700_000_000



def rarely(rare: st.SearchStrategy[T], usual: st.SearchStrategy[T], one_in: int
           ) -> st.SearchStrategy[T]:
    """`rare` one time in `one_in`, `usual` otherwise."""
    return st.integers(0, one_in - 1).flatmap(lambda n: rare if n == 0 else usual)


# Mostly plain components and relative names, so that many archives get far enough to do
# damage; an odd component one time in eight, a name longer than PATH_MAX one in fifty.
components = rarely(st.sampled_from(ODD), st.sampled_from(PLAIN), 8)
names = rarely(st.just("a/" * 2100 + "x"), st.builds(
    lambda prefix, parts, slash: prefix + "/".join(parts) + slash,
    st.sampled_from(PREFIXES),
    st.lists(components, min_size=1, max_size=4),
    st.sampled_from(("", "", "", "/")),
), 50)
targets = names | st.sampled_from(LINK_TARGETS)
modes = st.integers(0, 0o7777) | st.sampled_from((0o755, 0o644, 0o4755, 0o1777, 0))
ids = rarely(st.sampled_from((2**21 - 1, 2**21, 2**32 - 2, 2**32 - 1, 2**32, 2**63)),
             st.integers(0, 70_000), 20)
mtimes = st.integers(-(2**34), 2**34) | st.just(MTIME)
xattrs = st.dictionaries(st.sampled_from(XATTRS), st.binary(max_size=24), max_size=2)

devices = st.builds(Device, names, st.sampled_from(("char", "block")),
                    st.sampled_from((0, 1, 8)), st.sampled_from((0, 3)))
kinds = st.one_of(
    st.builds(File, names, st.binary(max_size=64), modes, ids, ids, mtimes, xattrs),
    st.builds(Dir, names, modes, ids, ids, mtimes, xattrs),
    st.builds(Symlink, names, targets, ids, ids, mtimes),
    st.builds(Hardlink, names, targets),
    st.builds(Whiteout, names),
    st.builds(Opaque, names | st.just("")),
    st.builds(Fifo, names, modes),
)
entries: st.SearchStrategy[Entry] = rarely(devices, kinds, 40)


@dataclass(frozen=True)
class Layer:
    """A generated archive: its entries, then how it is written."""

    entries: tuple[Entry, ...]
    fmt: int = tarfile.PAX_FORMAT
    gzip: bool = False

    def tar(self, sandbox: Sandbox | None = None) -> bytes | None:
        """The layer's tar stream (uncompressed) aimed at `sandbox`; None when `tarfile`
        cannot write it (a name or number the format cannot hold)."""
        concrete = [sandbox.concrete(e) if sandbox else e for e in self.entries]
        try:
            return tar_of(*concrete, fmt=self.fmt)
        except (ValueError, UnicodeError, OverflowError):
            return None


hostile_layers = st.builds(
    Layer, st.lists(entries, max_size=12).map(tuple),
    st.sampled_from((tarfile.PAX_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT)),
    st.booleans())


@dataclass(frozen=True)
class Sandbox:
    """`top/root` (where the layer goes) next to `top/outside/canary` and a neighbour."""

    top: Path

    @property
    def root(self) -> Path:
        return self.top / "root"

    @property
    def outside(self) -> Path:
        return self.top / "outside"

    def concrete(self, entry: Entry) -> Entry:
        """`entry` with the sandbox's placeholders replaced by its real paths."""
        if isinstance(entry, Symlink | Hardlink):
            target = entry.target.replace(CANARY, f"{self.outside}/canary")
            return replace(entry, target=target.replace(OUT, str(self.outside)))
        return entry

    def host(self) -> HostSnapshot:
        return HostSnapshot.take(self.top, skip=self.root)


@contextlib.contextmanager
def sandbox() -> Iterator[Sandbox]:
    """A fresh sandbox, removed with everything in it when the block ends."""
    box = Sandbox(Path(tempfile.mkdtemp(prefix="dockyard-fuzz-")))
    try:
        box.root.mkdir()
        box.outside.mkdir(mode=0o755)
        (box.outside / "canary").write_bytes(b"untouched")
        (box.top / "neighbour").write_bytes(b"untouched")
        yield box
    finally:
        shutil.rmtree(box.top)


def describe(root: Path, *, placeholder: Path | None = None,
             dir_times: bool = True) -> dict[str, tuple[object, ...]]:
    """Everything applying a layer decides about the tree under `root`, comparable across
    roots: types, modes, owners, times, contents, link targets, xattrs, device numbers,
    and which names share an inode. `placeholder`'s path in link targets becomes `@TOP@`.

    A whiteout's time is left out: the archive says nothing about it (it is the time the
    whiteout was made); so are directories' with `dir_times=False`, for layers that use
    parents they do not list (those get the time they were made, too)."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        dirnames.sort()
        for raw in sorted([*dirnames, *filenames]):
            path = os.path.join(dirpath, raw)
            name = os.fsdecode(os.path.relpath(path, os.fsencode(root)))
            st_ = os.lstat(path)
            kind = stat.S_IFMT(st_.st_mode)
            detail: object = None
            if stat.S_ISREG(kind):
                detail = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).hexdigest()
            elif stat.S_ISLNK(kind):
                detail = os.fsdecode(os.readlink(path))
                if placeholder is not None:
                    detail = str(detail).replace(str(placeholder), "@TOP@")
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                detail = st_.st_rdev
            whiteout = stat.S_ISCHR(kind) and st_.st_rdev == 0
            untimed = whiteout or (stat.S_ISDIR(kind) and not dir_times)
            mtime = None if untimed else st_.st_mtime_ns
            group = inodes.setdefault(st_.st_ino, name) if not stat.S_ISDIR(kind) else name
            found[name] = (kind, stat.S_IMODE(st_.st_mode) if not stat.S_ISLNK(kind) else None,
                           st_.st_uid, st_.st_gid, mtime, detail, group, _xattrs(path))
    return found


def _xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((k, os.getxattr(path, k, follow_symlinks=False)) for k in keys))


# Well-formed layers ---------------------------------------------------------------------------

owners = st.integers(0, 70_000) | st.sampled_from((2**21 - 1, 2**21, 2**32 - 2))
WELL_FORMED_COMPONENTS = ("a", "b", "c", "é", "日本", "\udcff", "new\nline", "x" * 255)


@dataclass(frozen=True)
class WellFormed:
    """A well-formed layer's entries, and the names it must leave behind."""

    entries: tuple[Entry, ...]
    expected: frozenset[str]
    fmt: int = tarfile.PAX_FORMAT


@st.composite
def well_formed_layers(draw: st.DrawFn) -> WellFormed:
    """Entries as a real writer orders them; every parent listed before its children."""
    dirs: list[str] = [""]
    files: list[str] = []
    taken: set[str] = set()
    whited: set[str] = set()
    made: list[Entry] = []
    opaque: set[str] = set()
    for _ in range(draw(st.integers(0, 14))):
        parent = draw(st.sampled_from(dirs))
        base = draw(st.sampled_from(WELL_FORMED_COMPONENTS))
        name = f"{parent}/{base}" if parent else base
        if name in taken or name in whited:
            continue
        kind = draw(st.sampled_from(("file", "dir", "symlink", "hardlink", "fifo",
                                     "whiteout", "opaque")))
        mode, uid, gid = draw(st.integers(0, 0o7777)), draw(owners), draw(owners)
        mtime = draw(st.integers(-(2**33), 2**33))  # before 1970 too
        user_xattrs = draw(st.dictionaries(st.sampled_from(("user.a", "user.b")),
                                           st.binary(max_size=16), max_size=2))
        if kind == "file":
            made.append(File(name, draw(st.binary(max_size=64)), mode, uid, gid, mtime,
                             user_xattrs))
            files.append(name)
        elif kind == "dir":
            made.append(Dir(name, mode, uid, gid, mtime, user_xattrs))
            dirs.append(name)
        elif kind == "symlink":
            made.append(Symlink(name, draw(st.sampled_from(LINK_TARGETS[:-1])), uid, gid,
                                mtime))
        elif kind == "hardlink" and files:
            made.append(Hardlink(name, draw(st.sampled_from(files))))
        elif kind == "fifo":
            made.append(Fifo(name, mode))
        elif kind == "whiteout":
            made.append(Whiteout(name))
            whited.add(name)
            continue
        elif kind == "opaque" and parent and parent not in opaque:
            made.append(Opaque(parent))
            opaque.add(parent)
            continue
        else:
            continue
        taken.add(name)
    return WellFormed(tuple(made), frozenset(taken | whited),
                      draw(st.sampled_from((tarfile.PAX_FORMAT, tarfile.GNU_FORMAT))))
