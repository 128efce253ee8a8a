"""Hostile layers are refused or neutralised, and the host outside the root is never touched.

Every case runs in a sandbox: the root (an empty upper directory) next to an `outside`
directory holding a canary file. After each case the whole tree outside the root must be
exactly as it was: same paths, types, modes, owners, sizes, times and canary content. The
cases follow containerd's TestBreakouts table and the OCI whiteout rules, adapted to our
stricter policy (a symlink as a parent is refused rather than resolved inside the root).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard_shim.archive import ApplyStats, Limits, apply_layer, paths
from dockyard_shim.errors import InvalidArgumentError
from tests.shim.layerfactory import (
    END,
    Device,
    Dir,
    Entry,
    File,
    Hardlink,
    HostSnapshot,
    Opaque,
    Raw,
    Symlink,
    Whiteout,
    layer,
    pax_block,
    ustar_block,
)

pytestmark = pytest.mark.root


@dataclass(frozen=True)
class Sandbox:
    root: Path
    outside: Path
    canary: Path
    host: HostSnapshot

    def apply(self, *entries: Entry, limits: Limits | None = None) -> ApplyStats:
        return self.apply_blob(layer(*entries), limits)

    def apply_blob(self, blob: bytes, limits: Limits | None = None) -> ApplyStats:
        return apply_layer(io.BytesIO(blob), self.root, limits=limits or Limits())

    def from_root(self, path: Path) -> str:
        """`path` as a name relative to the root (climbing with ..)."""
        return os.path.relpath(path, self.root)


@pytest.fixture(params=["openat2", "component walk"])
def sandbox(tmp_path: Path, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A root next to a canary; resolution by openat2 (Linux ≥ 5.6) and by the fallback."""
    if request.param == "component walk":
        monkeypatch.setattr(paths._openat2, "_kernel", None)
    else:
        assert paths._openat2._kernel is not None, "this kernel should have openat2"
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir(mode=0o755)
    canary = outside / "canary"
    canary.write_bytes(b"untouched")
    box = Sandbox(root, outside, canary, HostSnapshot.take(tmp_path, skip=root))
    yield box
    box.host.assert_unchanged()  # every test of this module, whatever it asserts itself


Case = Callable[[Sandbox], list[Entry]]
REFUSED: dict[str, tuple[Case, str]] = {
    "dotdot name": (lambda s: [File("../outside/canary", b"pwned")], r"contains '\.\.'"),
    "dotdot in the middle": (lambda s: [File("a/../../outside/canary", b"pwned")], r"'\.\.'"),
    "absolute name": (lambda s: [File(str(s.canary), b"pwned")], "is absolute"),
    "write through a symlink to /": (
        lambda s: [Symlink("rootfs", "/"), File("rootfs" + str(s.canary), b"pwned")],
        "through a symlink"),
    "write through a symlink to ../..": (
        lambda s: [Symlink("up", "../.."),
                   File(f"up/{s.root.parent.name}/outside/canary", b"pwned")],
        "through a symlink"),
    "write through a relative symlink out": (
        lambda s: [Symlink("out", "../outside"), File("out/canary", b"pwned")],
        "through a symlink"),
    "new directory through a symlink": (
        lambda s: [Symlink("out", str(s.outside)), Dir("out/planted", mode=0o777)],
        "through a symlink"),
    "symlink chain": (
        lambda s: [Dir("d"), Symlink("d/out", str(s.outside)), Symlink("hop", "d/out"),
                   File("hop/canary", b"pwned")],
        "through a symlink"),
    "hardlink to an absolute path": (
        lambda s: [Hardlink("stolen", str(s.canary))], "is absolute"),
    "hardlink with ..": (
        lambda s: [Hardlink("stolen", "../outside/canary")], r"'\.\.'"),
    "hardlink through a symlinked parent": (
        lambda s: [Symlink("out", str(s.outside)), Hardlink("stolen", "out/canary")],
        "through a symlink"),
    "hardlink to something not in the layer": (
        lambda s: [Hardlink("stolen", "etc/shadow")], "not in this layer"),
    "hardlink to a directory": (
        lambda s: [Dir("d"), Hardlink("d2", "d")], "directory or a whiteout"),
    "hardlink to itself": (lambda s: [Hardlink("x", "x")], "no usable target"),
    "root entry that is a symlink (.)": (
        lambda s: [Symlink(".", str(s.outside)), File("canary", b"pwned")],
        "names the root but is a symlink"),
    "root entry that is a symlink (/)": (
        lambda s: [Symlink("/", str(s.outside))], "names the root but is a symlink"),
    "root entry that is a file": (lambda s: [File("./", b"x")], "names the root"),
    "whiteout .wh..": (lambda s: [File("d/.wh..")], "names no file"),
    "whiteout .wh...": (lambda s: [File("d/.wh...")], "names no file"),
    "whiteout .wh.": (lambda s: [File(".wh.")], "names no file"),
    "whiteout through a symlinked directory": (
        lambda s: [Symlink("out", str(s.outside)), Whiteout("out/canary")],
        "through a symlink"),
    "opaque marker through a symlinked directory": (
        lambda s: [Symlink("out", str(s.outside)), Opaque("out")], "through a symlink"),
    "whiteout name used as a directory": (
        lambda s: [File(".wh.x/y")], "whiteout name as a directory"),
    "whiteout that is a directory": (lambda s: [Dir(".wh.x")], "whiteouts are files"),
    "char device": (lambda s: [Device("dev/null", "char", 1, 3)], "device nodes"),
    "block device": (lambda s: [Device("dev/sda", "block", 8, 0)], "device nodes"),
    "char device 0:0 not named as a whiteout": (
        lambda s: [Device("fake-whiteout", "char", 0, 0)], "device nodes"),
    "directory replaced by a symlink, then written under": (
        lambda s: [Dir("d"), File("d/f"), Symlink("d", str(s.outside)),
                   File("d/canary", b"pwned")],
        "through a symlink"),
    "directory replaced by a symlink, then chmod under it": (
        lambda s: [Dir("d"), Dir("d/sub"), Symlink("d", "../outside"),
                   Dir("d/canary", mode=0o777)],
        "through a symlink"),
    "empty name": (lambda s: [File("")], "empty name"),
    "name longer than PATH_MAX": (lambda s: [File("a/" * 2100 + "x")], "PATH_MAX"),
    "empty symlink target": (lambda s: [Symlink("s", "")], "empty"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_hostile_layer_is_refused_and_the_host_is_untouched(sandbox: Sandbox,
                                                              case: str) -> None:
    build, message = REFUSED[case]
    with pytest.raises(InvalidArgumentError, match=message):
        sandbox.apply(*build(sandbox))
    sandbox.host.assert_unchanged()
    assert sandbox.canary.read_bytes() == b"untouched"


def test_a_name_with_a_nul_byte_is_refused(sandbox: Sandbox) -> None:
    blob = pax_block({b"path": b"ok\0/../../outside/canary"}) + ustar_block("ok") + END
    with pytest.raises(InvalidArgumentError, match="NUL"):
        sandbox.apply_blob(blob)


def test_a_hardlink_to_a_symlink_that_points_outside_links_the_symlink_itself(
        sandbox: Sandbox) -> None:
    sandbox.apply(Symlink("evil", str(sandbox.canary)), Hardlink("h", "evil"))

    h = (sandbox.root / "h").lstat()
    assert stat.S_ISLNK(h.st_mode)
    assert h.st_ino == (sandbox.root / "evil").lstat().st_ino
    assert h.st_ino != sandbox.canary.stat().st_ino


def test_a_symlink_replaced_by_a_directory_gets_a_real_directory_inside_the_root(
        sandbox: Sandbox) -> None:
    sandbox.apply(Dir("d"), Symlink("d", str(sandbox.outside)), Dir("d", mode=0o777),
                  File("d/canary", b"mine"))

    assert not (sandbox.root / "d").is_symlink()
    assert (sandbox.root / "d/canary").read_bytes() == b"mine"
    assert stat.S_IMODE(sandbox.outside.stat().st_mode) == 0o755


def test_replacing_a_directory_removes_its_tree_without_following_symlinks_in_it(
        sandbox: Sandbox) -> None:
    sandbox.apply(Dir("d"), Symlink("d/out", str(sandbox.outside)), Dir("d/sub"),
                  Symlink("d/sub/canary", str(sandbox.canary)), File("d/sub/f"),
                  File("d", b"now a file"))

    assert (sandbox.root / "d").read_bytes() == b"now a file"
    assert sandbox.canary.read_bytes() == b"untouched"


def test_replacing_a_very_deep_directory_tree_needs_neither_recursion_nor_many_fds(
        sandbox: Sandbox) -> None:
    deep = "/".join(["d"] * 1500)  # deeper than Python's recursion limit and a 1024 fd limit
    sandbox.apply(File(f"{deep}/leaf"), Symlink(f"{deep}/out", str(sandbox.outside)),
                  File("d", b"flat"))

    assert (sandbox.root / "d").read_bytes() == b"flat"


def test_writing_a_file_never_writes_through_an_earlier_hardlink_or_symlink(
        sandbox: Sandbox) -> None:
    sandbox.apply(Symlink("target", str(sandbox.canary)), File("target", b"pwned"))

    assert not (sandbox.root / "target").is_symlink()
    assert (sandbox.root / "target").read_bytes() == b"pwned"


@pytest.mark.parametrize("xattr", ["trusted.overlay.opaque", "trusted.overlay.redirect",
                                   "trusted.overlay.metacopy", "trusted.other",
                                   "user.overlay.opaque", "security.selinux"])
def test_xattrs_that_could_forge_overlay_or_host_metadata_never_reach_the_disk(
        sandbox: Sandbox, xattr: str) -> None:
    sandbox.apply(Dir("d", xattrs={xattr: b"y", "user.fine": b"1"}),
                  File("d/f", xattrs={xattr: b"/etc", "user.fine": b"1"}))

    for name in ("d", "d/f"):
        assert xattr not in os.listxattr(sandbox.root / name)
        assert "user.fine" in os.listxattr(sandbox.root / name)


def test_capabilities_are_not_set_on_directories(sandbox: Sandbox) -> None:
    sandbox.apply(Dir("d", xattrs={"security.capability": b"\x01\x00\x00\x02" + bytes(16)}))

    assert "security.capability" not in os.listxattr(sandbox.root / "d")


def test_a_layer_cannot_turn_a_whiteout_into_something_else_by_hardlinking_it(
        sandbox: Sandbox) -> None:
    with pytest.raises(InvalidArgumentError, match="whiteout"):
        sandbox.apply(Whiteout("gone"), Hardlink("alias", "gone"))


def test_an_out_of_range_owner_is_refused(sandbox: Sandbox) -> None:
    info = tarfile.TarInfo("f")
    info.uid = 2**32 - 1  # (uid_t)-1 would mean "leave the owner unchanged" to chown(2)
    with pytest.raises(InvalidArgumentError, match="uid"):
        sandbox.apply(Raw(info))
