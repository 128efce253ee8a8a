"""Mounts are data: options split into flags and data; paths resolve inside a root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.kernel import LinuxKernel, RecordingKernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.mounts import Mount, open_in_root, perform, plan_call, resolve_in_root


def test_option_words_become_flags_and_the_rest_is_data() -> None:
    call = plan_call(Mount("tmpfs", "tmpfs", "/dev", ("nosuid", "strictatime", "mode=755")))
    assert call.flags == k.MS_NOSUID | k.MS_STRICTATIME
    assert call.data == "mode=755"
    assert call.remount_flags is None


def test_a_read_only_bind_needs_a_remount_as_mount8_does() -> None:
    kernel = RecordingKernel()
    perform(kernel, Mount("bind", "/src", "/dst", ("rbind", "ro", "rslave")))
    assert kernel.calls == [
        ("mount", ("/src", "/dst", "bind", k.MS_BIND | k.MS_REC | k.MS_RDONLY, "")),
        ("mount", ("", "/dst", "", k.MS_BIND | k.MS_RDONLY | k.MS_REMOUNT, "")),
        ("mount", ("", "/dst", "", k.MS_SLAVE | k.MS_REC, "")),
    ]


def test_overlay_options_stay_filesystem_data() -> None:
    call = plan_call(Mount("overlay", "overlay", "/r", ("lowerdir=/a:/b", "upperdir=/u",
                                                        "workdir=/w")))
    assert (call.flags, call.data) == (0, "lowerdir=/a:/b,upperdir=/u,workdir=/w")


def test_option_data_beyond_one_page_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="at most 4095"):
        plan_call(Mount("overlay", "overlay", "/r", ("lowerdir=" + "/x" * 3000,)))


def test_a_mount_without_a_target_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="has no target"):
        perform(RecordingKernel(), Mount("bind", "/src"))


def test_absolute_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "data").symlink_to("/etc")
    assert resolve_in_root(tmp_path, "/data/passwd") == tmp_path.resolve() / "etc" / "passwd"


def test_dotdot_never_climbs_above_the_root(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "up").symlink_to("../../../../../")
    assert resolve_in_root(tmp_path, "/a/up/etc/shadow") == tmp_path.resolve() / "etc/shadow"
    assert resolve_in_root(tmp_path, "/../../etc") == tmp_path.resolve() / "etc"


def test_a_symlink_loop_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(InvalidArgumentError, match="too many levels"):
        resolve_in_root(tmp_path, "/loop/x")


# ----------------------------------------------- open_in_root: resolution by the kernel


def _where(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_open_in_root_keeps_absolute_links_and_dotdot_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "abs").symlink_to("/real")
    (root / "up").symlink_to("../../../../real")
    kernel = LinuxKernel()
    assert _where(open_in_root(kernel, str(root), "/abs")) == str(root / "real")
    assert _where(open_in_root(kernel, str(root), "up")) == str(root / "real")
    assert _where(open_in_root(kernel, str(root), "/../../real/..")) == str(root)


def test_open_in_root_makes_what_is_missing_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    (root / "dangling").symlink_to(outside)  # absolute: means root/<outside> here
    kernel = LinuxKernel()
    made = _where(open_in_root(kernel, str(root), "/dangling/a/b", make="dir"))
    assert made == str(root) + str(outside / "a" / "b")
    assert not outside.exists()
    file = _where(open_in_root(kernel, str(root), "/etc/hostname", make="file"))
    assert Path(file).is_file()
    assert Path(file).stat().st_mode & 0o777 == 0o644


def test_open_in_root_without_make_reports_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_in_root(LinuxKernel(), str(tmp_path), "nothing/here")
    assert list(tmp_path.iterdir()) == []


def test_open_in_root_stops_at_a_link_loop(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises((InvalidArgumentError, OSError)):
        open_in_root(LinuxKernel(), str(tmp_path), "a/x", make="dir")
