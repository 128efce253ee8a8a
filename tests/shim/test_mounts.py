"""Mounts are data: options split into flags and data; paths resolve inside a root."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.kernel import RecordingKernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.mounts import Mount, perform, plan_call, resolve_in_root


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
