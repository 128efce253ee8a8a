"""The overlay snapshotter's own promises: mount shapes, crash safety, the option-size limit,
concurrent processes, and a `prepare` whose cost does not grow with the image."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.errors import InvalidArgumentError, NotFoundError, UnavailableError
from dockyard_shim.mounts import Mount
from dockyard_shim.snapshots import PAGE_SIZE, Kind, OverlaySnapshotter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sn(tmp_path: Path) -> Iterator[OverlaySnapshotter]:
    with OverlaySnapshotter(tmp_path / "root") as snapshotter:
        yield snapshotter


def chain(sn: OverlaySnapshotter, length: int, prefix: str = "layer") -> list[str]:
    names: list[str] = []
    for n in range(length):
        key = f"extract-{prefix}{n}"
        sn.prepare(key, names[-1] if names else None)
        (sn.upper_dir(key) / f"file{n}").write_text(str(n))
        sn.commit(f"{prefix}{n}", key)
        names.append(f"{prefix}{n}")
    return names


# Mount shapes --------------------------------------------------------------------------------

def test_an_active_snapshot_without_parent_is_a_read_write_bind(sn: OverlaySnapshotter) -> None:
    [mount] = sn.prepare("c1")
    assert mount == Mount("bind", str(sn.upper_dir("c1")), options=("rw", "rbind"))
    assert mount.target == ""


def test_an_active_snapshot_with_parents_is_an_overlay_nearest_layer_first(
        sn: OverlaySnapshotter) -> None:
    _, top = chain(sn, 2)
    [mount] = sn.prepare("c1", top)
    assert (mount.type, mount.source) == ("overlay", "overlay")
    options = dict(o.split("=", 1) for o in mount.options)
    nearest, farthest = (Path(p) for p in options["lowerdir"].split(":"))
    assert [p.name for p in nearest.iterdir()] == ["file1"]
    assert [p.name for p in farthest.iterdir()] == ["file0"]
    assert options["upperdir"] == str(sn.upper_dir("c1"))
    assert Path(options["workdir"]).name == "work"
    assert Path(options["workdir"]).parent == Path(options["upperdir"]).parent


def test_a_view_of_one_layer_is_a_read_only_bind_of_that_layer(sn: OverlaySnapshotter) -> None:
    [base] = chain(sn, 1)
    [mount] = sn.view("v1", base)
    assert mount.type == "bind"
    assert mount.options == ("ro", "rbind")
    assert (Path(mount.source) / "file0").read_text() == "0"


def test_a_view_of_several_layers_is_an_overlay_with_lower_dirs_only(
        sn: OverlaySnapshotter) -> None:
    layers = chain(sn, 3)
    [mount] = sn.view("v1", layers[-1])
    assert mount.type == "overlay"
    assert "ro" in mount.options
    assert [o.split("=", 1)[0] for o in mount.options if "=" in o] == ["lowerdir"]
    assert len(next(o for o in mount.options if o.startswith("lowerdir=")).split(":")) == 3


def test_an_empty_view_is_a_read_only_bind(sn: OverlaySnapshotter) -> None:
    [mount] = sn.view("v1")
    assert mount.type == "bind"
    assert mount.options == ("ro", "rbind")


# The option-size limit -------------------------------------------------------------------------

def test_a_chain_too_long_for_one_page_of_options_is_refused_clearly(
        sn: OverlaySnapshotter) -> None:
    layers: list[str] = []
    refused: UnavailableError | None = None
    for n in range(PAGE_SIZE // 10):
        try:
            sn.prepare(f"extract-{n}", layers[-1] if layers else None)
        except UnavailableError as e:
            refused = e
            break
        sn.commit(f"layer{n}", f"extract-{n}")
        layers.append(f"layer{n}")
    assert refused is not None, "a chain of this length should not fit in one page"
    assert f"more than the kernel's limit of {PAGE_SIZE}" in str(refused)
    assert f"stacks {len(layers)} layers" in str(refused)
    per_layer = len(str(sn.root / "snapshots" / "10" / "fs")) + 1
    assert abs(len(layers) - PAGE_SIZE // per_layer) <= 3  # refused where the page is full
    assert [i.key for i in sn.walk()] == layers  # the refused snapshot left no row…
    assert sn.cleanup() == []  # …and no directory
    [view] = sn.view("view", layers[-1])  # a view has no upper and work dirs: it still fits
    assert len(",".join(o for o in view.options if "=" in o)) < PAGE_SIZE
    with pytest.raises(UnavailableError, match="shorter path"):
        sn.prepare("container", layers[-1])


def test_a_root_with_overlay_separators_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="separators"):
        OverlaySnapshotter(tmp_path / "a,b")


# Cost ----------------------------------------------------------------------------------------

def _fastest_prepare(sn: OverlaySnapshotter, parent: str, runs: int = 7) -> float:
    best = float("inf")
    for n in range(runs):
        start = time.perf_counter()
        sn.prepare(f"container-{parent}-{n}", parent)
        best = min(best, time.perf_counter() - start)
    return best


def test_prepare_costs_the_same_on_a_huge_layer_as_on_a_small_one(
        sn: OverlaySnapshotter) -> None:
    sn.prepare("extract-big")
    with open(sn.upper_dir("extract-big") / "huge", "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: what matters is that prepare never reads it
    for n in range(200):  # and many entries, which a copying implementation would walk
        (sn.upper_dir("extract-big") / f"f{n}").write_text("x")
    sn.commit("big", "extract-big")
    sn.prepare("extract-small")
    (sn.upper_dir("extract-small") / "small").write_bytes(b"x" * (2 << 20))
    sn.commit("small", "extract-small")
    small, big = _fastest_prepare(sn, "small"), _fastest_prepare(sn, "big")
    assert big / small < 3, f"prepare on 1 GiB took {big:.4f}s, on 2 MiB {small:.4f}s"


# Crash safety --------------------------------------------------------------------------------

def _crash_in_child(root: Path, body: str) -> None:
    """Run `body` in a fresh interpreter that dies (os._exit) where the body says."""
    script = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from dockyard_shim.snapshots import OverlaySnapshotter
        from dockyard_shim.snapshots import _disk, overlay
        sn = OverlaySnapshotter(Path(sys.argv[1]))
    """) + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True,
                            text=True, check=False, timeout=60, cwd=REPO)
    assert result.returncode == 99, result.stderr


def test_a_crash_after_the_rename_but_before_the_commit_leaves_no_snapshot(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    _crash_in_child(root, """
        real_rename = Path.rename
        def rename_then_die(self, target):
            real_rename(self, target)
            os._exit(99)
        Path.rename = rename_then_die
        sn.prepare("doomed")
    """)
    with OverlaySnapshotter(root) as sn:
        with pytest.raises(NotFoundError):
            sn.stat("doomed")
        leftovers = sorted(p.name for p in (root / "snapshots").iterdir())
        assert leftovers == ["1"]  # the directory got its id, the row rolled back
        sn.prepare("next")  # the rolled-back id is handed out again: the leftover moves aside
        assert list(sn.upper_dir("next").iterdir()) == []
        assert sn.cleanup() == []
        assert sorted(p.name for p in (root / "snapshots").iterdir()) == ["1"]


def test_cleanup_collects_what_a_crashed_creation_left(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _crash_in_child(root, """
        real_rename = Path.rename
        def die_before_rename(self, target):
            os._exit(99)
        Path.rename = die_before_rename
        sn.prepare("doomed")
    """)
    with OverlaySnapshotter(root) as sn:
        [leftover] = (root / "snapshots").iterdir()
        assert leftover.name.startswith("new-")
        assert sn.cleanup() == [leftover]
        assert list((root / "snapshots").iterdir()) == []


def test_a_crash_after_removing_the_row_leaves_only_an_orphan_for_cleanup(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    with OverlaySnapshotter(root) as sn:
        sn.prepare("c1")
        (sn.upper_dir("c1") / "data").write_text("x")
    _crash_in_child(root, """
        overlay._disk.trash = lambda path: os._exit(99)
        sn.remove("c1")
    """)
    with OverlaySnapshotter(root) as sn:
        with pytest.raises(NotFoundError):
            sn.stat("c1")
        orphan = root / "snapshots" / "1"
        assert (orphan / "fs" / "data").exists()
        assert sn.cleanup() == [orphan]
        assert not orphan.exists()
        sn.prepare("c2")  # ids are not reused after a committed removal
        assert [p.name for p in (root / "snapshots").iterdir()] == ["2"]


def test_cleanup_finishes_interrupted_deletions(sn: OverlaySnapshotter) -> None:
    trash = sn.root / "snapshots" / "trash-7-abcd"
    (trash / "fs" / "deep").mkdir(parents=True)
    (trash / "fs" / "deep" / "file").write_text("x")
    assert sn.cleanup() == [trash]
    assert not trash.exists()


# Several processes ---------------------------------------------------------------------------

def test_processes_sharing_a_root_create_snapshots_without_losing_any(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with OverlaySnapshotter(root) as sn:
        [base] = chain(sn, 1)
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from dockyard_shim.snapshots import OverlaySnapshotter
        with OverlaySnapshotter(Path(sys.argv[1])) as sn:
            for n in range(25):
                sn.prepare(f"{sys.argv[2]}-{n}", sys.argv[3])
                if n % 5 == 0:
                    sn.cleanup()
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(root), name, base],
                                cwd=REPO, env={**os.environ})
               for name in ("a", "b", "c")]
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]
    with OverlaySnapshotter(root) as sn:
        active = list(sn.walk(kind=Kind.ACTIVE))
        assert len(active) == 75
        assert len({m for info in active for m in sn.mounts(info.key)}) == 75
        for info in active:
            assert sn.upper_dir(info.key).is_dir()
        assert sn.cleanup() == []
