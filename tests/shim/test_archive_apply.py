"""Applying a well-formed layer writes what the archive says, in overlayfs upper-dir form."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from dockyard_shim.archive import ApplyStats, Limits, apply_layer
from dockyard_shim.errors import FailedPreconditionError, NotFoundError
from tests.shim.layerfactory import (
    MTIME,
    Dir,
    Entry,
    Fifo,
    File,
    Hardlink,
    Opaque,
    Symlink,
    Whiteout,
    gzip_of,
    layer,
    tar_of,
)

pytestmark = pytest.mark.root  # ownership, whiteout devices and trusted.* xattrs need root

# A v2 file capability granting cap_net_bind_service (bit 10), effective
CAPABILITY = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")


def apply(tmp_path: Path, blob: bytes, limits: Limits | None = None) -> tuple[Path, ApplyStats]:
    root = tmp_path / "upper"
    root.mkdir(exist_ok=True)
    stats = apply_layer(io.BytesIO(blob), root, limits=limits or Limits())
    return root, stats


def is_whiteout(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def test_a_normal_layer_lands_with_its_files_directories_symlinks_and_hardlinks(
        tmp_path: Path) -> None:
    root, stats = apply(tmp_path, layer(
        Dir("etc"), File("etc/hosts", b"127.0.0.1 localhost\n"),
        Hardlink("etc/hosts.allow", "etc/hosts"), Dir("usr"), Dir("usr/bin"),
        File("usr/bin/tool", b"#!/bin/sh\n", mode=0o755), Symlink("bin", "usr/bin"),
        Symlink("etc/abs", "/etc/hosts"), Fifo("run.pipe")))

    assert (root / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert (root / "etc/hosts").stat().st_ino == (root / "etc/hosts.allow").stat().st_ino
    assert (root / "etc/hosts").stat().st_nlink == 2
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "etc/abs") == "/etc/hosts"  # data, stored as is
    assert stat.S_ISFIFO((root / "run.pipe").lstat().st_mode)
    assert stats.entries == 9
    assert stats.bytes_written == len(b"127.0.0.1 localhost\n") + len(b"#!/bin/sh\n")
    assert stats.whiteouts == 0
    assert stats.inodes == 9


def test_ownership_permissions_and_setuid_bits_are_applied_as_the_archive_says(
        tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(
        Dir("srv", mode=0o1777, uid=7, gid=8),
        File("srv/su", b"x", mode=0o4755, uid=0, gid=0),
        File("srv/sg", b"x", mode=0o2711, uid=1000, gid=50),
        File("srv/big", b"x", uid=3_000_000, gid=3_000_001),
        Symlink("srv/link", "su", uid=33, gid=34),
        Fifo("srv/fifo", mode=0o620)))

    def owner_mode(name: str) -> tuple[int, int, int]:
        st = (root / name).lstat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode("srv") == (7, 8, 0o1777)
    assert owner_mode("srv/su") == (0, 0, 0o4755)
    assert owner_mode("srv/sg") == (1000, 50, 0o2711)
    assert owner_mode("srv/big")[:2] == (3_000_000, 3_000_001)
    assert owner_mode("srv/link")[:2] == (33, 34)
    assert owner_mode("srv/fifo")[2] == 0o620


def test_mtimes_are_applied_and_directory_times_survive_later_writes_inside(
        tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(
        Dir("d", mtime=1_000_000_000), File("d/f", b"x", mtime=1_100_000_000.5),
        Symlink("d/l", "f", mtime=1_200_000_000), File("d/later", b"y"), Dir("e")))

    assert (root / "d").stat().st_mtime_ns == 1_000_000_000 * 10**9
    assert (root / "d/f").stat().st_mtime_ns == 1_100_000_000_500_000_000
    assert (root / "d/l").lstat().st_mtime_ns == 1_200_000_000 * 10**9
    assert (root / "e").stat().st_mtime_ns == MTIME * 10**9


def test_user_xattrs_and_file_capabilities_are_kept_next_to_the_setuid_bit(
        tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(
        Dir("d", xattrs={"user.mime": b"inode/directory"}),
        File("d/ping", b"\x7fELF", mode=0o4755,
             xattrs={"security.capability": CAPABILITY, "user.comment": b"\xff\x00binary"})))

    assert os.getxattr(root / "d", "user.mime") == b"inode/directory"
    assert os.getxattr(root / "d/ping", "security.capability") == CAPABILITY
    assert os.getxattr(root / "d/ping", "user.comment") == b"\xff\x00binary"
    assert stat.S_IMODE((root / "d/ping").stat().st_mode) == 0o4755


def test_a_whiteout_becomes_a_character_device_0_0_named_after_the_deleted_file(
        tmp_path: Path) -> None:
    root, stats = apply(tmp_path, layer(Dir("etc"), Whiteout("etc/motd"), Whiteout("gone")))

    assert is_whiteout(root / "etc/motd")
    assert is_whiteout(root / "gone")
    assert not (root / "etc/.wh.motd").exists()
    assert stats.whiteouts == 2


@pytest.mark.parametrize("whiteout_first", [True, False], ids=["whiteout-first", "file-first"])
def test_a_whiteout_never_deletes_an_entry_of_its_own_layer(tmp_path: Path,
                                                           whiteout_first: bool) -> None:
    entries = [File("a/keep", b"mine"), Whiteout("a/keep")]
    root, _ = apply(tmp_path, layer(*(reversed(entries) if whiteout_first else entries)))

    assert (root / "a/keep").read_bytes() == b"mine"


@pytest.mark.parametrize("entries", [
    [Whiteout("opt"), Dir("opt"), File("opt/new")],
    [Dir("opt"), File("opt/new"), Whiteout("opt")],
    [Whiteout("opt"), File("opt/new")],
], ids=["whiteout-first", "whiteout-last", "parent-implied"])
def test_a_directory_whited_out_and_made_anew_in_the_same_layer_becomes_opaque(
        tmp_path: Path, entries: list[Entry]) -> None:
    root, _ = apply(tmp_path, layer(*entries))

    assert os.getxattr(root / "opt", "trusted.overlay.opaque") == b"y"
    assert (root / "opt/new").exists()


def test_a_whited_out_file_made_anew_in_the_same_layer_is_a_plain_file(tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(Whiteout("f"), File("f", b"new")))

    assert (root / "f").read_bytes() == b"new"
    assert os.listxattr(root / "f") == []


@pytest.mark.parametrize("marker_first", [True, False], ids=["marker-first", "marker-last"])
def test_an_opaque_directory_hides_lower_layers_but_keeps_its_own_children(
        tmp_path: Path, marker_first: bool) -> None:
    children = [Dir("cache"), File("cache/new", b"n"), Dir("cache/sub"), File("cache/sub/x")]
    marker = [Opaque("cache")]
    root, stats = apply(tmp_path, layer(*(marker + children if marker_first
                                          else children + marker)))

    assert os.getxattr(root / "cache", "trusted.overlay.opaque") == b"y"
    assert sorted(p.name for p in (root / "cache").iterdir()) == ["new", "sub"]
    assert not (root / "cache/.wh..wh..opq").exists()
    assert stats.whiteouts == 1


def test_an_opaque_marker_creates_its_directory_when_the_layer_does_not_list_it(
        tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(Opaque("var/lib/apt")))

    assert os.getxattr(root / "var/lib/apt", "trusted.overlay.opaque") == b"y"
    assert stat.S_IMODE((root / "var").stat().st_mode) == 0o755


def test_an_opaque_marker_at_the_top_makes_the_root_opaque(tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(Opaque(""), File("only", b"1")))

    assert os.getxattr(root, "trusted.overlay.opaque") == b"y"
    assert (root / "only").exists()


@pytest.mark.parametrize("compress", [None, "gzip"])
def test_the_diff_id_is_the_sha256_of_the_uncompressed_stream(tmp_path: Path,
                                                              compress: str | None) -> None:
    raw = tar_of(Dir("etc"), File("etc/os-release", b"ID=dockyard\n"))
    blob = gzip_of(raw) if compress else raw
    _, stats = apply(tmp_path, blob)

    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert stats.compression == (compress or "none")


def test_a_gzip_stream_of_several_members_is_one_layer(tmp_path: Path) -> None:
    raw = tar_of(File("a", b"1" * 5000), File("b", b"2"))
    root, stats = apply(tmp_path, gzip.compress(raw[:3000]) + gzip.compress(raw[3000:]))

    assert (root / "a").read_bytes() == b"1" * 5000
    assert stats.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
                         ids=["ustar", "gnu", "pax"])
def test_long_names_and_link_targets_apply_in_every_tar_format(tmp_path: Path,
                                                               fmt: int) -> None:
    deep = "/".join(["directory"] * 12)  # 119 bytes: past ustar's 100-byte name field
    long_file = f"{deep}/{'f' * 60}"
    long_link = f"{deep}/{'h' * 60}"
    entries = [File(long_file, b"deep")]
    if fmt != tarfile.USTAR_FORMAT:  # ustar cannot write a link target past 100 bytes
        entries += [Hardlink(long_link, long_file), Symlink("s", "/" + long_file)]
    root, _ = apply(tmp_path, layer(*entries, fmt=fmt))

    assert (root / long_file).read_bytes() == b"deep"
    if fmt != tarfile.USTAR_FORMAT:
        assert (root / long_link).stat().st_nlink == 2
        assert os.readlink(root / "s") == "/" + long_file


def test_a_later_entry_replaces_an_earlier_one_of_the_same_name(tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(
        File("f", b"old"), File("f", b"new"),
        Dir("d"), File("d/inside"), File("d", b"now a file"),
        File("s", b"file"), Symlink("s", "f"),
        Symlink("t", "f"), Dir("t", mode=0o700),
        File("linked", b"shared"), Hardlink("other", "linked"), File("linked", b"fresh")))

    assert (root / "f").read_bytes() == b"new"
    assert (root / "d").read_bytes() == b"now a file"
    assert os.readlink(root / "s") == "f"
    assert (root / "t").is_dir()
    assert not (root / "t").is_symlink()
    assert (root / "linked").read_bytes() == b"fresh"
    assert (root / "other").read_bytes() == b"shared"  # a new inode, not a write through


def test_a_directory_entry_over_a_directory_replaces_its_attributes_and_keeps_its_content(
        tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(
        Dir("d", mode=0o700, xattrs={"user.old": b"1"}), File("d/x"),
        Dir("d", mode=0o750, uid=5, gid=6, xattrs={"user.new": b"2"})))

    st = (root / "d").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (5, 6, 0o750)
    assert (root / "d/x").exists()
    assert os.listxattr(root / "d") == ["user.new"]


def test_parents_the_layer_does_not_list_are_created_0755(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the umask of whoever runs the shim must not matter
    try:
        root, _ = apply(tmp_path, layer(File("a/b/c", b"x")))
    finally:
        os.umask(old)

    assert stat.S_IMODE((root / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "a/b").stat().st_mode) == 0o755


@pytest.mark.parametrize("name", ["./", ".", "/"])
def test_a_root_directory_entry_sets_the_attributes_of_the_root(tmp_path: Path,
                                                                name: str) -> None:
    root, _ = apply(tmp_path, layer(Dir(name, mode=0o751, mtime=1_234_567_890), File("x")))

    assert stat.S_IMODE(root.stat().st_mode) == 0o751
    assert root.stat().st_mtime_ns == 1_234_567_890 * 10**9


def test_leading_dot_slash_and_doubled_slashes_name_the_same_entry(tmp_path: Path) -> None:
    root, _ = apply(tmp_path, layer(Dir("./etc/"), File(".//etc/./hosts", b"h")))

    assert (root / "etc/hosts").read_bytes() == b"h"


def test_aufs_bookkeeping_entries_are_skipped(tmp_path: Path) -> None:
    root, stats = apply(tmp_path, layer(
        Dir(".wh..wh.plnk"), File(".wh..wh.plnk/1234.5", b"x"), File(".wh..wh.aufs"),
        File("real", b"y")))

    assert sorted(p.name for p in root.iterdir()) == ["real"]
    assert stats.entries == 4


def test_an_empty_layer_changes_nothing(tmp_path: Path) -> None:
    root, stats = apply(tmp_path, layer())

    assert list(root.iterdir()) == []
    assert stats.entries == 0


def test_the_root_must_exist_and_be_empty(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        apply_layer(io.BytesIO(layer()), tmp_path / "missing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "leftover").touch()
    with pytest.raises(FailedPreconditionError, match="not empty"):
        apply_layer(io.BytesIO(layer()), tmp_path / "full")
