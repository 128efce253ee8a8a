"""The overlay snapshotter's mounts on the real kernel: what each mount shows, and that
copy-on-write never reaches a committed layer."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.snapshots import OverlaySnapshotter
from tests.shim.imagefactory import mounted

pytestmark = pytest.mark.root


@pytest.fixture
def sn(tmp_path: Path) -> Iterator[OverlaySnapshotter]:
    with OverlaySnapshotter(tmp_path / "root") as snapshotter:
        yield snapshotter


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


def layer(sn: OverlaySnapshotter, name: str, parent: str | None,
          files: dict[str, str]) -> str:
    sn.prepare(f"extract-{name}", parent)
    for path, text in files.items():
        (sn.upper_dir(f"extract-{name}") / path).write_text(text)
    sn.commit(name, f"extract-{name}")
    return name


def tree(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir()) if p.is_file()}


def test_an_active_snapshot_without_parent_mounts_read_write(sn: OverlaySnapshotter,
                                                             target: Path) -> None:
    with mounted(sn.prepare("c1"), target):
        (target / "new").write_text("written through the mount")
    assert (sn.upper_dir("c1") / "new").read_text() == "written through the mount"


def test_writes_over_a_committed_parent_never_change_the_parent(sn: OverlaySnapshotter,
                                                                target: Path,
                                                                tmp_path: Path) -> None:
    base = layer(sn, "base", None, {"keep": "base", "edit": "old", "drop": "gone soon"})
    top = layer(sn, "top", base, {"edit": "newer"})
    with mounted(sn.prepare("container", top), target):
        assert tree(target) == {"keep": "base", "edit": "newer", "drop": "gone soon"}
        (target / "edit").write_text("container's")
        (target / "drop").unlink()
        (target / "added").write_text("fresh")
        assert tree(target) == {"keep": "base", "edit": "container's", "added": "fresh"}
    upper = sn.upper_dir("container")
    assert (upper / "edit").read_text() == "container's"
    assert os.major((upper / "drop").lstat().st_rdev) == 0  # an overlay whiteout (0/0 device)
    view_target = tmp_path / "view"
    view_target.mkdir()
    with mounted(sn.view("check", top), view_target):
        assert tree(view_target) == {"keep": "base", "edit": "newer", "drop": "gone soon"}


def test_committing_a_container_makes_a_layer_others_can_build_on(sn: OverlaySnapshotter,
                                                                  target: Path,
                                                                  tmp_path: Path) -> None:
    base = layer(sn, "base", None, {"a": "1"})
    with mounted(sn.prepare("container", base), target):
        (target / "b").write_text("2")
    sn.commit("committed", "container")
    second = tmp_path / "second"
    second.mkdir()
    with mounted(sn.prepare("next", "committed"), second):
        assert tree(second) == {"a": "1", "b": "2"}


def test_views_are_read_only(sn: OverlaySnapshotter, target: Path, tmp_path: Path) -> None:
    one = layer(sn, "one", None, {"a": "1"})
    two = layer(sn, "two", one, {"b": "2"})
    for key, parent, expected in (("v1", one, {"a": "1"}), ("v2", two, {"a": "1", "b": "2"})):
        with mounted(sn.view(key, parent), target):
            assert tree(target) == expected
            with pytest.raises(OSError, match="Read-only file system") as refused:
                (target / "c").write_text("3")
            assert refused.value.errno == errno.EROFS


def test_two_containers_on_one_image_do_not_see_each_other(sn: OverlaySnapshotter,
                                                           tmp_path: Path) -> None:
    image = layer(sn, "image", layer(sn, "base", None, {"a": "1"}), {"b": "2"})
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with mounted(sn.prepare("c1", image), first), mounted(sn.prepare("c2", image), second):
        (first / "mine").write_text("c1")
        assert not (second / "mine").exists()
    sn.remove("c1")
    sn.remove("c2")
    assert sn.cleanup() == []


def test_cleanup_never_deletes_through_a_mount(sn: OverlaySnapshotter, target: Path) -> None:
    (target / "precious").write_text("a host directory, bind-mounted into an orphan")
    orphan = sn.root / "snapshots" / "999"
    (orphan / "fs").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(target), str(orphan / "fs")], check=True)
    try:
        assert sn.cleanup() == []  # moved aside, but not deleted while something is mounted
        [trash] = (sn.root / "snapshots").iterdir()
        assert trash.name.startswith("trash-999-")
        assert (target / "precious").exists()
    finally:
        subprocess.run(["umount", str(next((sn.root / "snapshots").iterdir()) / "fs")],
                       check=True)
    assert sn.cleanup() == [trash]  # free now: collected
    assert list((sn.root / "snapshots").iterdir()) == []
    assert (target / "precious").exists()


def test_removing_a_snapshot_still_mounted_removes_its_metadata_all_the_same(
        sn: OverlaySnapshotter, target: Path) -> None:
    sn.prepare("c1")
    with mounted(sn.mounts("c1"), target):
        sn.remove("c1")
    assert list(sn.walk()) == []
    assert sn.cleanup() == []
