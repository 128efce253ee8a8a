"""Loading image archives, naming, finding and removing images (no unpacking: no root)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from dockyard_shim.images import ImageStore, Platform
from dockyard_shim.snapshots import OverlaySnapshotter
from tests.shim import imagefactory as f

BASE = {"etc/os-release": "ID=test\n", "bin/tool": "#!/bin/sh\n"}
APP = {"app/main": "print('hi')\n"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    with OverlaySnapshotter(tmp_path / "snapshots") as sn, ImageStore(tmp_path / "images",
                                                                      sn) as images:
        yield images


def nothing_stored(store: ImageStore) -> bool:
    return (list(store.content.list()) == [] and store.list() == []
            and list(store.snapshotter.walk()) == []
            and list((store.content.root / "ingest").iterdir()) == [])


# Formats ---------------------------------------------------------------------------------------

def test_an_oci_layout_loads_with_the_name_in_its_annotations(store: ImageStore,
                                                              tmp_path: Path) -> None:
    img = f.image([BASE, APP])
    [record] = store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["busybox"])]))
    assert record.names == ("docker.io/library/busybox:latest",)
    assert record.id == img.id
    assert record.manifest_digest == img.manifest_digest
    assert record.size == sum(len(b) for b in img.blobs.values())
    assert record.created is not None
    assert record.created.year == 2024
    assert set(store.content.list()) == set(img.blobs)


def test_docker_save_and_oci_layout_give_the_same_image(store: ImageStore,
                                                        tmp_path: Path) -> None:
    img = f.image([BASE, APP], compress=False)
    [saved] = store.load(f.docker_save_archive(tmp_path / "save.tar", [(img, ["app:1"])]))
    [oci] = store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["app:2"])]))
    assert saved.id == oci.id == img.id
    assert oci.names == ("docker.io/library/app:1", "docker.io/library/app:2")
    assert store.config("app:1") == store.config("app:2")
    assert len(store.list()) == 1


def test_a_docker_25_archive_is_read_through_its_oci_index(store: ImageStore,
                                                           tmp_path: Path) -> None:
    img = f.image([BASE], compress=False)
    archive = f.docker_save_archive(tmp_path / "save.tar", [(img, ["me/app:v1"])], legacy=False)
    [record] = store.load(archive)
    assert record.manifest_digest == img.manifest_digest  # the real manifest, not one we built
    assert record.names == ("docker.io/me/app:v1",)


def test_repo_tags_name_images_that_the_index_leaves_unnamed(store: ImageStore,
                                                             tmp_path: Path) -> None:
    img = f.image([BASE], compress=False)
    archive = f.docker_save_archive(tmp_path / "save.tar", [(img, ["me/app:v1", "me/app:v2"])],
                                    legacy=False, index_names=False)
    [record] = store.load(archive)
    assert record.names == ("docker.io/me/app:v1", "docker.io/me/app:v2")


def test_a_legacy_archive_with_a_repeated_layer_follows_its_link(store: ImageStore,
                                                                 tmp_path: Path) -> None:
    img = f.image([BASE, APP, BASE], compress=False)  # the same layer twice: a symlink
    [record] = store.load(f.docker_save_archive(tmp_path / "save.tar", [(img, ["rep"])]))
    assert len(store.config(record.id).diff_ids) == 3


def test_a_compressed_archive_loads(store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE], compress=False)
    plain = f.docker_save_archive(tmp_path / "save.tar", [(img, ["zipped"])])
    packed = tmp_path / "save.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert store.load(packed)[0].id == img.id


def test_several_images_in_one_archive_all_load(store: ImageStore, tmp_path: Path) -> None:
    one, two = f.image([BASE]), f.image([BASE, APP])
    records = store.load(f.oci_archive(tmp_path / "oci.tar", [(one, ["one"]), (two, ["two"])]))
    assert [r.id for r in records] == [one.id, two.id]
    assert sorted(store.content.list()) == sorted(one.blobs | two.blobs)
    assert len(one.blobs | two.blobs) == 6  # the shared base layer is stored once


def test_an_image_without_a_name_loads_dangling(store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE])
    [record] = store.load(f.oci_archive(tmp_path / "oci.tar", [(img, [])]))
    assert record.names == ()
    assert store.get(record.id) == record


# Platforms -------------------------------------------------------------------------------------

def node_and_other() -> tuple[f.Image, f.Image, bytes]:
    mine = f.image([BASE], arch=f.NODE_ARCH)
    other = f.image([APP], arch=f.OTHER_ARCH)
    index = f.index_blob([(other, {"os": "linux", "architecture": f.OTHER_ARCH}),
                          (mine, {"os": "linux", "architecture": f.NODE_ARCH})])
    return mine, other, index


def test_a_multi_platform_image_loads_the_manifest_for_this_node(store: ImageStore,
                                                                 tmp_path: Path) -> None:
    mine, other, index = node_and_other()
    archive = f.oci_archive(tmp_path / "multi.tar", [],
                            indexes=[(index, [mine, other], "multi:1")])
    [record] = store.load(archive)
    assert record.id == mine.id
    assert record.names == ("docker.io/library/multi:1",)
    stored = set(store.content.list())
    assert stored == set(mine.blobs) | {f.sha256(index)}  # the other platform is not read
    assert store.config("multi:1").platform == Platform("linux", f.NODE_ARCH)


def test_platform_manifests_listed_in_index_json_are_chosen_from_too(store: ImageStore,
                                                                     tmp_path: Path) -> None:
    mine, other, _ = node_and_other()
    entries = [f.descriptor(other, ["flat:1"], platform={"os": "linux",
                                                          "architecture": f.OTHER_ARCH}),
               f.descriptor(mine, ["flat:1"], platform={"os": "linux",
                                                         "architecture": f.NODE_ARCH})]
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
               "index.json": json.dumps({"schemaVersion": 2, "manifests": entries}).encode()}
    members |= {f"blobs/sha256/{d.removeprefix('sha256:')}": b
                for d, b in (mine.blobs | other.blobs).items()}
    [record] = store.load(f.write_tar(tmp_path / "buildx.tar", members))
    assert record.id == mine.id


def test_an_index_without_this_platform_is_refused_clearly(store: ImageStore,
                                                           tmp_path: Path) -> None:
    _, other, _ = node_and_other()
    index = f.index_blob([(other, {"os": "linux", "architecture": f.OTHER_ARCH})])
    archive = f.oci_archive(tmp_path / "foreign.tar", [], indexes=[(index, [other], "alien")])
    with pytest.raises(InvalidArgumentError,
                       match=rf"no image for this node's platform linux/{f.NODE_ARCH} "
                             rf"\(it offers: linux/{f.OTHER_ARCH}\)"):
        store.load(archive)
    assert nothing_stored(store)


# Hostile and broken archives -----------------------------------------------------------------

def test_a_blob_with_one_flipped_byte_is_refused_and_nothing_is_left(store: ImageStore,
                                                                     tmp_path: Path) -> None:
    img = f.image([BASE, APP])
    good = f.oci_archive(tmp_path / "oci.tar", [(img, ["victim"])])
    layer = json.loads(img.manifest)["layers"][1]["digest"]
    bad = f.flip_byte(good, f"blobs/sha256/{layer.removeprefix('sha256:')}", tmp_path / "b.tar")
    with pytest.raises(InvalidArgumentError) as refused:
        store.load(bad)
    assert layer in str(refused.value)  # the expected digest and…
    assert "got sha256:" in str(refused.value)  # …the one that arrived
    assert nothing_stored(store)


@pytest.mark.parametrize("member", ["layer", "config"])
def test_a_corrupted_legacy_archive_is_refused_and_nothing_is_left(
        store: ImageStore, tmp_path: Path, member: str) -> None:
    img = f.image([BASE, APP], compress=False)
    good = f.docker_save_archive(tmp_path / "save.tar", [(img, ["victim"])])
    manifest = json.loads(f.read_member(good, "manifest.json"))[0]
    target = manifest["Layers"][1] if member == "layer" else manifest["Config"]
    with pytest.raises(InvalidArgumentError, match="expected sha256:"):
        store.load(f.flip_byte(good, target, tmp_path / "bad.tar"))
    assert nothing_stored(store)


def test_a_failed_load_keeps_blobs_that_other_images_use(store: ImageStore,
                                                         tmp_path: Path) -> None:
    first = f.image([BASE])
    store.load(f.oci_archive(tmp_path / "first.tar", [(first, ["first"])]))
    second = f.image([BASE, APP])
    good = f.oci_archive(tmp_path / "second.tar", [(second, ["second"])])
    layer = json.loads(second.manifest)["layers"][1]["digest"]
    with pytest.raises(InvalidArgumentError):
        store.load(f.flip_byte(good, f"blobs/sha256/{layer.removeprefix('sha256:')}",
                               tmp_path / "bad.tar"))
    assert set(store.content.list()) == set(first.blobs)
    assert [r.id for r in store.list()] == [first.id]


def test_a_manifest_that_is_also_an_index_is_refused(store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE])
    document = json.loads(img.manifest)
    document["manifests"] = []
    img.manifest = json.dumps(document).encode()
    img.blobs[img.manifest_digest] = img.manifest
    with pytest.raises(InvalidArgumentError, match="CVE-2021-41190"):
        store.load(f.oci_archive(tmp_path / "ambiguous.tar", [(img, ["amb"])]))
    assert nothing_stored(store)


def test_an_archive_missing_a_blob_is_refused(store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE])
    layer = json.loads(img.manifest)["layers"][0]["digest"]
    del img.blobs[layer]
    with pytest.raises(InvalidArgumentError, match="lacks"):
        store.load(f.oci_archive(tmp_path / "holey.tar", [(img, ["holey"])]))
    assert nothing_stored(store)


def test_a_config_that_disagrees_with_its_manifest_is_refused(store: ImageStore,
                                                              tmp_path: Path) -> None:
    img = f.image([BASE, APP])
    short = f.image([BASE])  # one diff_id, while the manifest lists two layers
    document = json.loads(img.manifest)
    document["config"] = json.loads(short.manifest)["config"]
    img.manifest = json.dumps(document).encode()
    img.blobs |= {img.manifest_digest: img.manifest, short.config_digest: short.config}
    with pytest.raises(InvalidArgumentError, match="2 layers but its config lists 1"):
        store.load(f.oci_archive(tmp_path / "mismatch.tar", [(img, ["m"])]))
    assert nothing_stored(store)


def test_files_that_are_not_image_archives_are_refused(store: ImageStore,
                                                       tmp_path: Path) -> None:
    (tmp_path / "text").write_text("not a tar")
    with pytest.raises(InvalidArgumentError, match="not a readable tar"):
        store.load(tmp_path / "text")
    with pytest.raises(InvalidArgumentError, match="neither an OCI image layout"):
        store.load(f.write_tar(tmp_path / "empty.tar", {"hello": b"x"}))
    with pytest.raises(NotFoundError):
        store.load(tmp_path / "missing.tar")


# Finding and naming ----------------------------------------------------------------------------

def test_images_are_found_by_any_form_of_a_name_by_id_and_by_id_prefix(
        store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["busybox"])]))
    hex_id = img.id.removeprefix("sha256:")
    for ref in ("busybox", "busybox:latest", "library/busybox", "docker.io/library/busybox",
                img.id, hex_id, hex_id[:12], f"sha256:{hex_id[:5]}",
                f"busybox@{img.manifest_digest}"):
        assert store.get(ref).id == img.id, ref
    with pytest.raises(NotFoundError, match=r"busybox:1 \(docker.io/library/busybox:1\)"):
        store.get("busybox:1")
    with pytest.raises(NotFoundError, match="no such image: 0123"):
        store.get("0123")


def test_an_ambiguous_id_prefix_is_refused(store: ImageStore, tmp_path: Path) -> None:
    images = [f.image([{"n": str(n)}]) for n in range(40)]  # 40 ids: two share a first digit
    store.load(f.oci_archive(tmp_path / "many.tar", [(i, []) for i in images]))
    first_digits = [i.id.removeprefix("sha256:")[0] for i in images]
    shared = next(d for d in first_digits if first_digits.count(d) > 1)
    with pytest.raises(InvalidArgumentError, match="ambiguous"):
        store.get(shared)


def test_tag_adds_a_name_and_moves_it_from_another_image(store: ImageStore,
                                                         tmp_path: Path) -> None:
    one, two = f.image([BASE]), f.image([APP])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(one, ["one"]), (two, ["two"])]))
    assert store.tag("one", "ghcr.io/me/app:v1").names == (
        "docker.io/library/one:latest", "ghcr.io/me/app:v1")
    store.tag("two", "ghcr.io/me/app:v1")
    assert store.get("ghcr.io/me/app:v1").id == two.id
    assert store.get("one").names == ("docker.io/library/one:latest",)
    with pytest.raises(InvalidArgumentError, match="not a digest"):
        store.tag("one", f"me/app@{one.id}")
    with pytest.raises(NotFoundError):
        store.tag("three", "x")


def test_loading_a_name_again_moves_it_and_leaves_the_old_image_dangling(
        store: ImageStore, tmp_path: Path) -> None:
    old, new = f.image([BASE]), f.image([APP])
    store.load(f.oci_archive(tmp_path / "old.tar", [(old, ["app"])]))
    store.load(f.oci_archive(tmp_path / "new.tar", [(new, ["app"])]))
    assert store.get("app").id == new.id
    assert store.get(old.id).names == ()


def test_the_config_is_exposed_as_typed_values(store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE, APP], config={
        "Entrypoint": ["/bin/tool"], "Cmd": ["--serve"], "Env": ["A=1", "PATH=/bin"],
        "WorkingDir": "/app", "User": "1000:1000", "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Labels": {"org.example": "yes"}, "StopSignal": "SIGINT", "Volumes": {"/data": {}}})
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["cfg"])]))
    config = store.config("cfg")
    assert config.entrypoint == ("/bin/tool",)
    assert config.cmd == ("--serve",)
    assert config.env == ("A=1", "PATH=/bin")
    assert (config.working_dir, config.user) == ("/app", "1000:1000")
    assert config.exposed_ports == ("53/udp", "80/tcp")
    assert dict(config.labels) == {"org.example": "yes"}
    assert (config.stop_signal, config.volumes) == ("SIGINT", ("/data",))
    assert config.diff_ids == tuple(img.diff_ids)
    assert config.chain_id == config.chain_ids[-1] != img.diff_ids[-1]
    assert config.chain_ids[0] == img.diff_ids[0]


# Removing (without unpacked layers) ------------------------------------------------------------

def test_removing_one_of_several_names_only_untags(store: ImageStore, tmp_path: Path) -> None:
    img = f.image([BASE])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["a"])]))
    store.tag("a", "b")
    report = store.remove("a")
    assert report.untagged == ("docker.io/library/a:latest",)
    assert report.deleted == ()
    assert store.get("b").id == img.id


def test_removing_the_last_name_deletes_the_image_and_its_unshared_blobs(
        store: ImageStore, tmp_path: Path) -> None:
    base_only, with_app = f.image([BASE]), f.image([BASE, APP])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(base_only, ["a"]), (with_app, ["b"])]))
    report = store.remove("b")
    assert report.deleted == (with_app.id,)
    assert set(report.blobs_removed) == set(with_app.blobs) - set(base_only.blobs)
    assert set(store.content.list()) == set(base_only.blobs)  # the shared layer stays
    with pytest.raises(NotFoundError):
        store.get("b")


def test_removing_by_id_an_image_with_several_names_needs_force(store: ImageStore,
                                                                tmp_path: Path) -> None:
    img = f.image([BASE])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["a"])]))
    store.tag("a", "b")
    with pytest.raises(FailedPreconditionError, match="2 names"):
        store.remove(img.id)
    report = store.remove(img.id, force=True)
    assert set(report.untagged) == {"docker.io/library/a:latest", "docker.io/library/b:latest"}
    assert nothing_stored(store)


def test_a_store_reopened_knows_its_images(tmp_path: Path) -> None:
    img = f.image([BASE])
    with OverlaySnapshotter(tmp_path / "s") as sn, ImageStore(tmp_path / "i", sn) as store:
        store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["kept"])]))
    with OverlaySnapshotter(tmp_path / "s") as sn, ImageStore(tmp_path / "i", sn) as store:
        assert store.get("kept").id == img.id


def test_removal_collects_extract_snapshots_a_crash_left_behind(store: ImageStore,
                                                                tmp_path: Path) -> None:
    img = f.image([BASE])
    store.load(f.oci_archive(tmp_path / "oci.tar", [(img, ["a"])]))
    crashed = f"extract-0123456789abcdef-{img.diff_ids[0]}"
    store.snapshotter.prepare(crashed, labels={"dockyard.dev/unpack": img.diff_ids[0]})
    store.snapshotter.prepare("container")  # not the image store's: never touched
    report = store.remove("a")
    assert report.snapshots_removed == (crashed,)
    assert [i.key for i in store.snapshotter.walk()] == ["container"]
