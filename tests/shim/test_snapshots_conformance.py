"""The snapshotter contract, run against every snapshotter (containerd's testsuite idea).

Each test states one rule of `dockyard_shim.snapshots.Snapshotter`. A new snapshotter joins
by adding its factory to `FACTORIES`. These tests need no root: they check metadata, keys and
directories; `test_snapshots_mounts.py` mounts for real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from dockyard_shim.snapshots import Kind, OverlaySnapshotter, Snapshotter

SnapshotterFactory = Callable[[Path], Snapshotter]

FACTORIES = [pytest.param(OverlaySnapshotter, id="overlay")]


@pytest.fixture(params=FACTORIES)
def factory(request: pytest.FixtureRequest) -> SnapshotterFactory:
    made: SnapshotterFactory = request.param
    return made


@pytest.fixture
def sn(factory: SnapshotterFactory, tmp_path: Path) -> Iterator[Snapshotter]:
    snapshotter = factory(tmp_path / "root")
    yield snapshotter
    snapshotter.close()


def committed(sn: Snapshotter, name: str, parent: str | None = None,
              files: dict[str, str] | None = None) -> str:
    """Prepare, write `files` into the upper dir, commit as `name`."""
    key = f"extract-{name}"
    sn.prepare(key, parent)
    for path, text in (files or {}).items():
        target = sn.upper_dir(key) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    sn.commit(name, key)
    return name


# Lifecycle ---------------------------------------------------------------------------------

def test_prepare_creates_an_active_snapshot_with_labels(sn: Snapshotter) -> None:
    mounts = sn.prepare("c1", labels={"owner": "test"})
    assert len(mounts) == 1
    info = sn.stat("c1")
    assert (info.key, info.parent, info.kind) == ("c1", None, Kind.ACTIVE)
    assert dict(info.labels) == {"owner": "test"}
    assert info.created == info.updated
    assert info.created.tzinfo is not None


def test_commit_turns_the_active_snapshot_into_a_named_committed_one(sn: Snapshotter) -> None:
    sn.prepare("work")
    (sn.upper_dir("work") / "hello").write_text("hi")
    sn.commit("layer1", "work", labels={"layer": "1"})
    info = sn.stat("layer1")
    assert info.kind == Kind.COMMITTED
    assert dict(info.labels) == {"layer": "1"}
    assert info.updated >= info.created
    with pytest.raises(NotFoundError):
        sn.stat("work")


def test_committed_snapshots_keep_their_parent(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("work", "base")
    sn.commit("top", "work")
    assert sn.stat("top").parent == "base"


def test_view_creates_a_read_only_snapshot_that_cannot_be_committed(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.view("look", "base")
    assert sn.stat("look").kind == Kind.VIEW
    with pytest.raises(FailedPreconditionError):
        sn.commit("never", "look")
    with pytest.raises(FailedPreconditionError):
        sn.upper_dir("look")


def test_mounts_returns_what_prepare_returned(sn: Snapshotter) -> None:
    committed(sn, "base")
    first = sn.prepare("c1", "base")
    assert sn.mounts("c1") == first
    view = sn.view("v1", "base")
    assert sn.mounts("v1") == view


def test_mounts_of_a_committed_snapshot_is_refused(sn: Snapshotter) -> None:
    committed(sn, "base")
    with pytest.raises(FailedPreconditionError, match="committed"):
        sn.mounts("base")


# Errors by category -------------------------------------------------------------------------

def test_unknown_keys_and_parents_are_not_found(sn: Snapshotter) -> None:
    for call in (lambda: sn.stat("nope"), lambda: sn.mounts("nope"),
                 lambda: sn.usage("nope"), lambda: sn.remove("nope"),
                 lambda: sn.commit("name", "nope"), lambda: sn.upper_dir("nope"),
                 lambda: sn.prepare("c1", "nope"), lambda: sn.view("v1", "nope")):
        with pytest.raises(NotFoundError, match="nope"):
            call()
    assert list(sn.walk()) == []


def test_a_key_in_use_cannot_be_taken_again_by_any_kind(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("c1")
    for call in (lambda: sn.prepare("c1"), lambda: sn.view("c1", "base"),
                 lambda: sn.prepare("base")):
        with pytest.raises(AlreadyExistsError):
            call()
    sn.prepare("c2")
    with pytest.raises(AlreadyExistsError):
        sn.commit("base", "c2")
    assert sn.stat("c2").kind == Kind.ACTIVE  # a failed commit leaves the snapshot as it was


def test_only_committed_snapshots_can_be_parents(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("active", "base")
    sn.view("view", "base")
    for parent in ("active", "view"):
        with pytest.raises(FailedPreconditionError, match="committed"):
            sn.prepare("child", parent)
        with pytest.raises(FailedPreconditionError):
            sn.view("child", parent)
    assert [i.key for i in sn.walk()] == ["base", "active", "view"]


def test_commit_of_anything_but_an_active_snapshot_is_refused(sn: Snapshotter) -> None:
    committed(sn, "base")
    with pytest.raises(FailedPreconditionError):
        sn.commit("again", "base")


def test_a_snapshot_with_children_cannot_be_removed(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("container", "base")
    with pytest.raises(FailedPreconditionError, match="container"):
        sn.remove("base")
    sn.remove("container")
    sn.remove("base")
    assert list(sn.walk()) == []


def test_empty_keys_are_invalid(sn: Snapshotter) -> None:
    with pytest.raises(InvalidArgumentError):
        sn.prepare("")
    with pytest.raises(InvalidArgumentError):
        sn.prepare("ok", labels={"a": 1})  # type: ignore[dict-item]


# Removal and reuse --------------------------------------------------------------------------

def test_removed_keys_can_be_used_again(sn: Snapshotter) -> None:
    sn.prepare("c1")
    (sn.upper_dir("c1") / "old").write_text("x")
    sn.remove("c1")
    sn.prepare("c1")
    assert list(sn.upper_dir("c1").iterdir()) == []


def test_remove_works_for_every_kind(sn: Snapshotter) -> None:
    committed(sn, "base", files={"a": "1"})
    sn.prepare("active", "base")
    sn.view("view", "base")
    for key in ("active", "view", "base"):
        sn.remove(key)
    assert list(sn.walk()) == []
    assert sn.cleanup() == []  # removal freed the disk already


# Walk, usage ------------------------------------------------------------------------------

def test_walk_filters_by_kind_parent_and_labels(sn: Snapshotter) -> None:
    committed(sn, "base")
    sn.prepare("c1", "base", labels={"team": "a"})
    sn.prepare("c2", labels={"team": "b"})
    sn.view("v1", "base", labels={"team": "a"})
    assert [i.key for i in sn.walk()] == ["base", "c1", "c2", "v1"]
    assert [i.key for i in sn.walk(kind=Kind.ACTIVE)] == ["c1", "c2"]
    assert [i.key for i in sn.walk(parent="base")] == ["c1", "v1"]
    assert [i.key for i in sn.walk(labels={"team": "a"})] == ["c1", "v1"]
    assert [i.key for i in sn.walk(kind=Kind.VIEW, labels={"team": "a"})] == ["v1"]


def test_usage_counts_only_the_snapshot_itself(sn: Snapshotter) -> None:
    committed(sn, "base", files={"big": "x" * 100_000})
    sn.prepare("c1", "base")
    empty = sn.usage("c1")
    (sn.upper_dir("c1") / "small").write_text("y" * 10_000)
    grown = sn.usage("c1")
    base = sn.usage("base")
    assert base.size >= 100_000
    assert base.inodes == 2  # the layer's root and one file
    assert grown.size - empty.size >= 10_000
    assert grown.inodes == empty.inodes + 1
    assert grown.size < base.size


def test_committed_usage_is_measured_at_commit(sn: Snapshotter) -> None:
    sn.prepare("work")
    (sn.upper_dir("work") / "f").write_text("z" * 50_000)
    sn.commit("layer", "work")
    assert sn.usage("layer").size >= 50_000


# Persistence and cleanup --------------------------------------------------------------------

def test_metadata_survives_reopening(factory: SnapshotterFactory, tmp_path: Path) -> None:
    with_root = tmp_path / "root"
    first = factory(with_root)
    committed(first, "base", files={"etc/hostname": "box"})
    first.prepare("c1", "base", labels={"k": "v"})
    mounts = first.mounts("c1")
    first.close()
    second = factory(with_root)
    try:
        assert sn_keys(second) == ["base", "c1"]
        assert second.mounts("c1") == mounts
        assert dict(second.stat("c1").labels) == {"k": "v"}
        assert second.stat("c1").parent == "base"
    finally:
        second.close()


def test_two_snapshotters_on_one_root_see_each_other(factory: SnapshotterFactory,
                                                     tmp_path: Path) -> None:
    one, two = factory(tmp_path / "root"), factory(tmp_path / "root")
    try:
        committed(one, "base")
        two.prepare("c1", "base")
        assert sn_keys(one) == ["base", "c1"]
        with pytest.raises(AlreadyExistsError):
            one.prepare("c1")
        with pytest.raises(FailedPreconditionError):
            one.remove("base")
    finally:
        one.close()
        two.close()


def test_cleanup_keeps_every_live_snapshot(sn: Snapshotter) -> None:
    committed(sn, "base", files={"a": "1"})
    sn.prepare("c1", "base")
    (sn.upper_dir("c1") / "b").write_text("2")
    assert sn.cleanup() == []
    assert (sn.upper_dir("c1") / "b").read_text() == "2"


def sn_keys(sn: Snapshotter) -> list[str]:
    return [info.key for info in sn.walk()]
