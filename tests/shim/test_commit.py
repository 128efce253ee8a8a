"""docker commit: the committed image reproduces the container's filesystem exactly.

A container makes every kind of change (files, modes, owners, symbolic and hard links,
a fifo, deletions, a directory deleted and made again, which overlayfs marks opaque); an
extended attribute is added from the host. Then the tree the committed image gives and
the container's own tree (its writable layer over its image's layers, both as real
read-only overlay mounts) must be equal in content, type, mode, owner, size, link
targets, hard-link groups and user xattrs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.daemon.commit import commit_container
from dockyard_shim.daemon.node import Node, open_node
from dockyard_shim.daemon.storage import open_images
from dockyard_shim.images import parse_reference
from dockyard_shim.images.distribution import pull, push
from dockyard_shim.mounts import Mount
from dockyard_shim.runtime.config import ContainerConfig
from tests.registry import running_registry
from tests.shim.imagefactory import mounted
from tests.shim.rootfs_dir import busybox_rootfs

pytestmark = pytest.mark.root

CHANGES = """set -e
mkdir -p /data/sub
echo hello > /data/sub/file
chmod 640 /data/sub/file
chown 1000:1000 /data/sub
ln -s ../etc/passwd /data/link
ln /data/sub/file /data/hardlink
mkfifo /data/fifo
echo more >> /etc/passwd
rm /etc/group
rm -r /root
mkdir /root
echo fresh > /root/new
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "root").mkdir(exist_ok=True)
    (rootfs / "root" / "old").write_text("old")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    with tarfile.open(tmp_path / "busybox.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    opened = open_node(tmp_path / "node", cgroup_parent=f"dockyard-test-{secrets.token_hex(4)}")
    opened.images.import_rootfs(tmp_path / "busybox.tar", "busybox", unpack=True)
    try:
        yield opened
    finally:
        for record in opened.runtime.store.all():
            opened.runtime.delete(record.id, force=True)
        opened.close()
        opened.cgroups.delete_parent()


def _read_only_overlay(lowers: list[Path]) -> list[Mount]:
    return [Mount("overlay", "overlay",
                  options=("ro", "lowerdir=" + ":".join(str(p) for p in lowers)))]


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root`: what must survive a commit."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            relative = "/" + str(path.relative_to(root))
            kind = stat.S_IFMT(info.st_mode)
            if stat.S_ISREG(info.st_mode):
                detail: object = hashlib.sha256(path.read_bytes()).hexdigest()
                if info.st_nlink > 1:  # hard links: the same first name in both trees
                    detail = (detail, inodes.setdefault(info.st_ino, relative))
            elif stat.S_ISLNK(info.st_mode):
                detail = os.readlink(path)
            else:
                detail = None
            xattrs = {} if stat.S_ISLNK(info.st_mode) else {
                k: os.getxattr(path, k) for k in os.listxattr(path) if k.startswith("user.")}
            found[relative] = (kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
                               info.st_size if not stat.S_ISDIR(info.st_mode) else 0,
                               detail, tuple(sorted(xattrs.items())))
    return found


def test_the_committed_image_reproduces_the_containers_tree(node: Node,
                                                             tmp_path: Path) -> None:
    runtime = node.runtime
    record = runtime.run(ContainerConfig(image="busybox", command=("sh", "-c", CHANGES),
                                         network="none"))
    assert runtime.wait(record.id, timeout=30).exit_code == 0
    upper, lowers = node.snapshots.layers(record.id)
    os.setxattr(upper / "data" / "sub" / "file", "user.note", b"kept")
    committed = commit_container(runtime, node.images, record.id,
                                 name=parse_reference("committed:1"), comment="all kinds")
    chain = node.images.unpack(committed.id)
    assert chain is not None
    image_lowers = lowers[1:]  # below the runtime's init layer: the image's own layers
    view = node.snapshots.view("committed-view", chain)
    (tmp_path / "container").mkdir()
    (tmp_path / "image").mkdir()
    try:
        with mounted(_read_only_overlay([upper, *image_lowers]), tmp_path / "container") \
                as ours, mounted(view, tmp_path / "image") as theirs:
            want, got = _tree(ours), _tree(theirs)
    finally:
        node.snapshots.remove("committed-view")
    assert {"/root/new", "/data/fifo", "/data/link", "/data/hardlink"} <= set(got)
    assert "/root/old" not in got  # deletions carried over
    assert "/etc/group" not in got
    assert got["/data/sub/file"][-1] == (("user.note", b"kept"),)
    assert got == want


def test_commit_records_history_and_applies_changes(node: Node) -> None:
    runtime = node.runtime
    record = runtime.run(ContainerConfig(image="busybox", command=("touch", "/made"),
                                         env=("MODE=test",), network="none"))
    runtime.wait(record.id, timeout=30)
    committed = commit_container(
        runtime, node.images, record.id, name=parse_reference("team/app:2"),
        comment="first", author="Ann", changes=['CMD ["cat", "/made"]', "ENV LEVEL=3",
                                               "WORKDIR /data", "LABEL tier=web"])
    config = node.images.config(committed.id)
    assert committed.names == ("docker.io/team/app:2",)
    assert config.cmd == ("cat", "/made")
    assert {"MODE=test", "LEVEL=3"} <= set(config.env)
    assert (config.working_dir, dict(config.labels)) == ("/data", {"tier": "web"})
    document = json.loads(node.images.content.read(committed.id, 1 << 20))
    assert document["history"][-1]["comment"] == "first"
    assert document["author"] == "Ann"
    assert len(config.diff_ids) == 2  # the image's layer and the container's


def test_an_unknown_change_instruction_is_refused_and_adds_no_image(node: Node) -> None:
    runtime = node.runtime
    record = runtime.run(ContainerConfig(image="busybox", command=("true",),
                                         network="none"))
    runtime.wait(record.id, timeout=30)
    before = node.images.list()
    with pytest.raises(Exception, match="supported: CMD, ENTRYPOINT"):
        commit_container(runtime, node.images, record.id, changes=["RUN rm -rf /"])
    assert node.images.list() == before


def test_a_committed_image_pushes_and_pulls_back_the_same(node: Node, tmp_path: Path) -> None:
    runtime = node.runtime
    record = runtime.run(ContainerConfig(image="busybox", command=("touch", "/pushed"),
                                         network="none"))
    runtime.wait(record.id, timeout=30)
    with running_registry(tmp_path / "registry") as registry:
        name = parse_reference(f"{registry.host}/team/committed:1")
        committed = commit_container(runtime, node.images, record.id, name=name)
        push(node.images, str(name))
        snapshots, other = open_images(tmp_path / "other-node")
        with snapshots, other:
            back = pull(other, str(name))
    # The same image (its config, so its layers' diff ids); the manifest differs, as with
    # docker push: the uncompressed layer a commit stores travels gzip-compressed.
    assert back.id == committed.id


def test_a_running_container_is_frozen_for_its_commit_and_runs_on(node: Node) -> None:
    runtime = node.runtime
    record = runtime.run(ContainerConfig(
        image="busybox", command=("sh", "-c", "echo ready > /state; exec sleep 60"),
        network="none"))
    deadline = time.monotonic() + 10
    upper, _ = node.snapshots.layers(record.id)
    while not (upper / "state").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    frozen_during: list[bool] = []
    cgroup = runtime.cgroup_of(record)
    assert cgroup is not None
    original = runtime._snapshots.layers

    def layers_while_frozen(key: str) -> tuple[Path, list[Path]]:
        frozen_during.append(cgroup.is_frozen())
        return original(key)

    runtime._snapshots.layers = layers_while_frozen  # type: ignore[method-assign]
    committed = commit_container(runtime, node.images, record.id)
    assert frozen_during == [True]
    assert runtime.observe(runtime.store.get(record.id)).status.value == "running"
    assert not cgroup.is_frozen()
    config = node.images.config(committed.id)
    assert config.cmd == ("sh", "-c", "echo ready > /state; exec sleep 60")
