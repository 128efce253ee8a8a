"""Unpacking images into snapshots on the real kernel: shared layers, whiteouts, verification
against diff ids, garbage collection, concurrent unpackers, and a busybox that runs."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from dockyard_shim.archive import ApplyStats, apply_layer
from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.images import ImageStore
from dockyard_shim.images import unpack as unpack_module
from dockyard_shim.snapshots import Kind, OverlaySnapshotter
from tests.shim import imagefactory as f

pytestmark = pytest.mark.root

BASE = {"etc/keep": "kept", "etc/drop": "dropped later", "data/old/x": "old"}
TOP = {"etc/.wh.drop": "", "data/old/.wh..wh..opq": "", "data/old/y": "new",
       "etc/added": "added"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with OverlaySnapshotter(tmp_path / "snapshots") as sn, ImageStore(tmp_path / "images",
                                                                      sn) as images:
        yield images


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every layer application."""
    calls: list[Path] = []

    def counting(stream: BinaryIO, root: Path, **kwargs: Any) -> ApplyStats:
        calls.append(root)
        return apply_layer(stream, root, **kwargs)

    monkeypatch.setattr(unpack_module, "apply_layer", counting)
    return calls


def files_in(store: ImageStore, ref: str, tmp_path: Path) -> dict[str, str]:
    """Every regular file of the image as seen through a read-only view."""
    top = store.unpack(ref)
    target = tmp_path / "view"
    target.mkdir(exist_ok=True)
    store.snapshotter.view("inspect", top)
    try:
        with f.mounted(store.snapshotter.mounts("inspect"), target):
            return {str(p.relative_to(target)): p.read_text()
                    for p in sorted(target.rglob("*")) if p.is_file()}
    finally:
        store.snapshotter.remove("inspect")


def nothing_stored(store: ImageStore) -> bool:
    return (list(store.content.list()) == [] and store.list() == []
            and list(store.snapshotter.walk()) == [])


def test_layers_unpack_into_committed_snapshots_named_by_chain_id(
        store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE, TOP])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["layered"])]))
    config = store.config("layered")
    assert store.unpack("layered") == config.chain_id
    committed = [i.key for i in store.snapshotter.walk(kind=Kind.COMMITTED)]
    assert committed == list(config.chain_ids)
    assert [i.key for i in store.snapshotter.walk(kind=Kind.ACTIVE)] == []  # no extract left


def test_whiteouts_in_a_later_layer_hide_files_of_the_earlier_ones(store: ImageStore,
                                                                   tmp_path: Path) -> None:
    img = f.image([BASE, TOP])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["layered"])]))
    assert files_in(store, "layered", tmp_path) == {
        "etc/keep": "kept", "etc/added": "added", "data/old/y": "new"}


def test_a_layer_shared_by_two_images_is_unpacked_once(store: ImageStore, tmp_path: Path,
                                                       applied: list[Path]) -> None:
    one, two = f.image([BASE, {"one": "1"}]), f.image([BASE, {"two": "2"}])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(one, ["one"]), (two, ["two"])]))
    store.unpack("one")
    store.unpack("two")
    store.unpack("one")  # already there: nothing to do
    assert len(applied) == 3  # base once, then each top
    assert len(list(store.snapshotter.walk())) == 3
    assert store.config("one").chain_ids[0] == store.config("two").chain_ids[0]


def test_a_layer_that_does_not_match_its_diff_id_is_refused(store: ImageStore,
                                                            tmp_path: Path) -> None:
    img = f.image([BASE, TOP])
    config = json.loads(img.config)
    config["rootfs"]["diff_ids"][1] = f.sha256(b"something else")
    tampered = f.image([BASE, TOP])
    tampered.config = json.dumps(config).encode()
    manifest = json.loads(img.manifest)
    manifest["config"] |= {"digest": tampered.config_digest, "size": len(tampered.config)}
    tampered.manifest = json.dumps(manifest).encode()
    tampered.blobs = {f.sha256(b): b for b in (tampered.manifest, tampered.config,
                                               *img.layers)}
    archive = f.oci_archive(tmp_path / "oci.tar", [(tampered, ["liar"])])
    with pytest.raises(InvalidArgumentError, match="diff id"):
        store.load(archive, unpack=True)
    assert nothing_stored(store)  # no blob, no snapshot (not even the good base), no image
    store.load(archive)  # without unpacking it loads…
    with pytest.raises(InvalidArgumentError, match="corrupt"):
        store.unpack("liar")  # …and refuses to unpack
    assert [i.key for i in store.snapshotter.walk()] == [store.config("liar").chain_ids[0]]


def test_a_busybox_rootfs_imports_unpacks_and_runs(store: ImageStore, tmp_path: Path) -> None:
    for compress in (False, True):
        rootfs = f.rootfs_tar(tmp_path / f"rootfs{compress}.tar", f.busybox_files(),
                              compress=compress)
        record = store.import_rootfs(rootfs, f"busybox:{'gz' if compress else 'plain'}")
        config = store.config(record.id)
        assert (config.os, config.architecture, config.cmd) == ("linux", f.NODE_ARCH, ())
        assert len(config.diff_ids) == 1
    # Same files, plain or gzip: the same diff id, so one snapshot serves both.
    assert store.config("busybox:gz").chain_id == store.config("busybox:plain").chain_id
    top = store.unpack("busybox:gz")
    target = tmp_path / "rootfs"
    target.mkdir()
    store.snapshotter.view("run", top)
    with f.mounted(store.snapshotter.mounts("run"), target):
        assert (target / "bin" / "sh").is_symlink()
        ran = subprocess.run(["chroot", str(target), "/bin/sh", "-c", "echo hello from $0"],
                             capture_output=True, text=True, check=True, timeout=30)
        assert ran.stdout == "hello from /bin/sh\n"
    store.snapshotter.remove("run")


def test_a_rootfs_that_is_not_a_tar_is_refused(store: ImageStore, tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\x1f\x8bnot really gzip")
    (tmp_path / "text").write_text("hello" * 200)
    for path in (tmp_path / "junk", tmp_path / "text"):
        with pytest.raises(InvalidArgumentError):
            store.import_rootfs(path, "junk")
    assert nothing_stored(store)


def test_removing_images_collects_their_layers_but_not_shared_ones(
        store: ImageStore, tmp_path: Path) -> None:
    one, two = f.image([BASE, {"one": "1"}]), f.image([BASE, {"two": "2"}])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(one, ["one"]), (two, ["two"])]),
               unpack=True)
    one_chains, two_chains = store.config("one").chain_ids, store.config("two").chain_ids
    report = store.remove("one")
    assert report.snapshots_removed == (one_chains[1],)
    assert report.snapshots_kept == ()
    assert [i.key for i in store.snapshotter.walk()] == list(two_chains)
    store.remove("two")
    assert nothing_stored(store)


def test_layers_under_a_container_are_kept_then_collected_once_free(
        store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE, TOP])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["app"])]), unpack=True)
    chains = store.config("app").chain_ids
    store.snapshotter.prepare("container", chains[-1])
    report = store.remove("app")
    assert report.deleted == (img.id,)
    assert report.snapshots_kept == (chains[1], chains[0])
    assert list(store.content.list()) == []  # the blobs go: the container needs only layers
    store.snapshotter.remove("container")
    other = f.image([{"other": "x"}])
    store.load(f.oci_archive(tmp_path / "other.tar", [(other, ["other"])]), unpack=True)
    later = store.remove("other")
    assert set(later.snapshots_removed) == {*chains, *store_chain(other)}
    assert nothing_stored(store)


def store_chain(img: f.Image) -> list[str]:
    return [img.diff_ids[0]]


def test_concurrent_unpackers_of_one_layer_keep_one_copy(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    img = f.image([BASE])
    both_applied = threading.Barrier(2, timeout=30)

    def slow_apply(stream: BinaryIO, root: Path, **kwargs: Any) -> ApplyStats:
        stats = apply_layer(stream, root, **kwargs)
        both_applied.wait()  # both have unpacked before either commits
        return stats

    monkeypatch.setattr(unpack_module, "apply_layer", slow_apply)
    with OverlaySnapshotter(tmp_path / "s") as sn, ImageStore(tmp_path / "i", sn) as store:
        store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["race"])]))
    results: list[object] = []

    def unpack() -> None:
        with OverlaySnapshotter(tmp_path / "s") as sn, ImageStore(tmp_path / "i", sn) as mine:
            try:
                results.append(mine.unpack("race"))
            except Exception as e:  # reported by the assertion below
                results.append(e)

    threads = [threading.Thread(target=unpack) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [img.diff_ids[0], img.diff_ids[0]]
    with OverlaySnapshotter(tmp_path / "s") as sn:
        assert [i.key for i in sn.walk()] == [img.diff_ids[0]]
        assert sn.cleanup() == []
