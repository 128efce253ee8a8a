"""Pull, push and save against a real registry (Debian's docker-registry on 127.0.0.1)
with real skopeo; images are built by the tests' own factory, not by the code under test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.daemon.client import Client
from dockyard_shim.daemon.storage import open_images
from dockyard_shim.errors import InvalidArgumentError, NotFoundError
from dockyard_shim.images import ImageStore
from dockyard_shim.images.distribution import pull, push, save
from dockyard_shim.images.transport import login
from dockyard_shim.snapshots import OverlaySnapshotter
from tests.registry import Registry, running_registry
from tests.shim.imagefactory import (
    NODE_ARCH,
    OTHER_ARCH,
    Image,
    busybox_files,
    image,
    index_blob,
    oci_archive,
    sha256,
)

pytestmark = [pytest.mark.root, pytest.mark.e2e]

@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    snapshots, images = open_images(tmp_path / "node")
    with snapshots, images:
        yield images


def _skopeo_push(archive: Path, destination: str, *, all_platforms: bool = False) -> None:
    command = ["skopeo", "copy", "--dest-tls-verify=false"]
    if all_platforms:
        command.append("--all")
    subprocess.run([*command, f"oci-archive:{archive}", f"docker://{destination}"],
                   check=True, capture_output=True)


def _publish(tmp_path: Path, registry: Registry, name: str, layers: list[dict[str, object]],
             ) -> str:
    """Push an image holding `layers` to the registry with skopeo; its manifest digest."""
    img = image(layers)  # type: ignore[arg-type]
    safe = name.replace("/", "_").replace(":", "_")  # skopeo reads ':' as a tag separator
    archive = oci_archive(tmp_path / f"{safe}.tar", [(img, ["x/y:1"])])
    _skopeo_push(archive, f"{registry.host}/{name}")
    return img.manifest_digest


def test_an_image_pushed_with_skopeo_is_pulled_named_and_unpacked(
        tmp_path: Path, registry: Registry, store: ImageStore) -> None:
    digest = _publish(tmp_path, registry, "team/app:1",
                      [busybox_files(), {"etc/hello": "world"}])
    record = pull(store, f"{registry.host}/team/app:1")
    assert record.names == (f"{registry.host}/team/app:1",)
    assert record.manifest_digest == digest
    top = store.unpack(record.id)  # unpacked by the pull: nothing is left to do
    assert top is not None
    assert store.snapshotter.stat(top).kind.name == "COMMITTED"


def test_a_second_image_sharing_its_base_fetches_only_its_own_layers(
        tmp_path: Path, registry: Registry, store: ImageStore) -> None:
    base = busybox_files()
    _publish(tmp_path, registry, "shared/one:1", [base, {"one": "1"}])
    _publish(tmp_path, registry, "shared/two:1", [base, {"two": "2"}])
    pull(store, f"{registry.host}/shared/one:1")
    before = len(registry.blob_fetches("shared/two"))
    second = pull(store, f"{registry.host}/shared/two:1")
    fetched = registry.blob_fetches("shared/two")[before:]
    own = image([base, {"two": "2"}])
    # its own layer and its (small) config, read once to plan the unpack and once by the
    # copy; no byte of the shared base layer
    assert set(fetched) == {own.config_digest, sha256(own.layers[1])}
    assert second.manifest_digest == own.manifest_digest


def test_pulling_again_fetches_no_layer(tmp_path: Path, registry: Registry,
                                        store: ImageStore) -> None:
    _publish(tmp_path, registry, "again/app:1", [busybox_files()])
    first = pull(store, f"{registry.host}/again/app:1")
    before = len(registry.blob_fetches("again/app"))
    again = pull(store, f"{registry.host}/again/app:1")
    assert again.id == first.id
    # skopeo reads the (small) config again to compare it; no layer travels
    assert set(registry.blob_fetches("again/app")[before:]) <= {first.id}


def test_our_push_keeps_the_digest_and_pulls_back_as_the_same_image(
        tmp_path: Path, registry: Registry, store: ImageStore) -> None:
    digest = _publish(tmp_path, registry, "orig/app:1", [busybox_files(), {"a": "b"}])
    record = pull(store, f"{registry.host}/orig/app:1")
    pushed = push(store, f"{registry.host}/orig/app:1", f"{registry.host}/copy/app:2")
    assert str(pushed) == f"{registry.host}/copy/app:2"
    snapshots, other = open_images(tmp_path / "other-node")
    with snapshots, other:
        back = pull(other, f"{registry.host}/copy/app:2")
    assert (back.id, back.manifest_digest) == (record.id, digest)


def test_push_without_a_name_to_push_to_is_refused(
        tmp_path: Path, registry: Registry, store: ImageStore) -> None:
    record = pull(store, f"{registry.host}/{_named(tmp_path, registry, 'noname/app:1')}")
    with pytest.raises(Exception, match="say where to push it"):
        push(store, record.id)


def _named(tmp_path: Path, registry: Registry, name: str) -> str:
    _publish(tmp_path, registry, name, [busybox_files()])
    return name


def test_a_multi_platform_image_pulls_this_nodes_platform(
        tmp_path: Path, registry: Registry, store: ImageStore) -> None:
    mine = image([busybox_files(), {"etc/arch": NODE_ARCH}])
    other = image([busybox_files(), {"etc/arch": OTHER_ARCH}], arch=OTHER_ARCH)
    index = index_blob([(mine, {"os": "linux", "architecture": NODE_ARCH}),
                        (other, {"os": "linux", "architecture": OTHER_ARCH})])
    archive = oci_archive(tmp_path / "multi.tar", [],
                          indexes=[(index, [mine, other], "x/multi:1")])
    _skopeo_push(archive, f"{registry.host}/multi/app:1", all_platforms=True)
    record = pull(store, f"{registry.host}/multi/app:1")
    assert (record.id, record.manifest_digest) == (mine.id, mine.manifest_digest)


def test_pulling_a_missing_image_is_not_found_and_leaves_nothing(
        registry: Registry, store: ImageStore) -> None:
    with pytest.raises(NotFoundError, match="cannot pull"):
        pull(store, f"{registry.host}/no/such:image")
    assert store.list() == []
    assert list(store.content.list()) == []
    assert not list(store.root.glob("pull-*"))


def test_save_writes_an_archive_that_loads_back_as_the_same_image(
        tmp_path: Path, registry: Registry, store: ImageStore) -> None:
    _publish(tmp_path, registry, "saved/app:1", [busybox_files(), {"s": "1"}])
    record = pull(store, f"{registry.host}/saved/app:1")
    save(store, [f"{registry.host}/saved/app:1"], tmp_path / "saved.tar")
    with tarfile.open(tmp_path / "saved.tar") as tar:
        assert {"oci-layout", "index.json"} <= set(tar.getnames())
    snapshots = OverlaySnapshotter(tmp_path / "fresh" / "overlay")
    with snapshots, ImageStore(tmp_path / "fresh" / "images", snapshots) as fresh:
        (loaded,) = fresh.load(tmp_path / "saved.tar")
    assert (loaded.id, loaded.names) == (record.id, record.names)


def test_the_cli_pulls_then_runs_the_image(tmp_path: Path, registry: Registry) -> None:
    name = f"{registry.host}/cli/hello:1"
    _publish(tmp_path, registry, "cli/hello:1", [busybox_files(), {"etc/hello": "world\n"}])
    env = {**os.environ, "DOCKYARD_ROOT": str(tmp_path / "root"),
           "DOCKYARD_HOST": str(tmp_path / "dockyard.sock")}

    def dockyard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dockyard_cli", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)

    pulled = dockyard("pull", name)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == name
    assert "Digest: sha256:" in pulled.stderr
    with (tmp_path / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "dockyard_cli", "shim"], env=env,
                                  stdout=log, stderr=log)
    try:
        client = Client(env["DOCKYARD_HOST"])
        deadline = time.monotonic() + 15
        while not client.ping():
            assert daemon.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ran = dockyard("run", "--rm", name, "cat", "/etc/hello")
        assert (ran.returncode, ran.stdout) == (0, "world\n"), ran.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)


def test_a_private_registry_needs_a_login_which_is_kept_in_dockers_config(
        tmp_path: Path, store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    with running_registry(tmp_path / "private", users={"alice": "s3cret"}) as private:
        img = image([busybox_files()])
        archive = oci_archive(tmp_path / "private.tar", [(img, ["x/y:1"])])
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-creds",
                        "alice:s3cret", f"oci-archive:{archive}",
                        f"docker://{private.host}/team/secret:1"],
                       check=True, capture_output=True)
        with pytest.raises(InvalidArgumentError, match="log in first"):
            pull(store, f"{private.host}/team/secret:1")
        with pytest.raises(InvalidArgumentError, match="invalid username/password"):
            login(private.host, "alice", "wrong")
        written = login(private.host, "alice", "s3cret")
        assert written == tmp_path / "docker" / "config.json"
        assert private.host in json.loads(written.read_text())["auths"]
        assert pull(store, f"{private.host}/team/secret:1").id == img.id


def test_a_layer_that_does_not_match_its_config_fails_the_pull_and_leaves_nothing(
        tmp_path: Path, registry: Registry, store: ImageStore) -> None:
    good = image([busybox_files(), {"x": "1"}])
    document = json.loads(good.config)
    document["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64  # the top layer lies
    config = json.dumps(document).encode()
    manifest = json.loads(good.manifest)
    manifest["config"] = {**manifest["config"], "digest": sha256(config), "size": len(config)}
    manifest_bytes = json.dumps(manifest).encode()
    bad = Image(manifest_bytes, config, good.layers, document["rootfs"]["diff_ids"],
                {**good.blobs, sha256(config): config, sha256(manifest_bytes): manifest_bytes})
    _skopeo_push(oci_archive(tmp_path / "bad.tar", [(bad, ["x/y:1"])]),
                 f"{registry.host}/bad/app:1")
    with pytest.raises(InvalidArgumentError, match="unpacks to diff id"):
        pull(store, f"{registry.host}/bad/app:1")
    assert store.list() == []
    assert list(store.content.list()) == []
    assert list(store.snapshotter.walk()) == []  # the base layer unpacked first: taken back
