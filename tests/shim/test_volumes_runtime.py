"""Volumes in containers, on the real kernel: named, anonymous, hostPath, tmpfs, sharing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError
from dockyard_shim.runtime.config import Bind, TmpfsMount, VolumeUse
from dockyard_shim.runtime.process import StartError
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.volumes import Kind, VolumeRecord
from tests.shim.runtimes import busybox_runtime, config

pytestmark = pytest.mark.root


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with busybox_runtime(tmp_path / "node") as opened:
        yield opened


def _run(runtime: Runtime, script: str, **options: object) -> tuple[int | None, str]:
    record = runtime.run(config("sh", "-c", script, **options))
    final = runtime.wait(record.id, timeout=10)
    return final.exit_code, runtime.log_path(record.id).read_text()


def test_a_named_volume_is_made_on_first_use_and_keeps_data_after_removal(
        runtime: Runtime) -> None:
    code, _ = _run(runtime, "echo kept > /data/file", name="writer",
                   volumes=(VolumeUse("db", "/data"),))
    assert code == 0
    runtime.delete("writer", volumes=True)  # -v takes anonymous volumes only
    assert runtime.volumes.get("db").kind is Kind.LOCAL
    code, out = _run(runtime, "cat /data/file", volumes=(VolumeUse("db", "/data"),))
    assert (code, out) == (0, "kept\n")


def test_two_containers_on_one_volume_see_each_others_writes(runtime: Runtime) -> None:
    shared = (VolumeUse("shared", "/v"),)
    reader = runtime.run(config("sh", "-c", "while [ ! -f /v/ping ]; do sleep 0.05; done; "
                                "cat /v/ping; echo pong > /v/pong", volumes=shared))
    code, _ = _run(runtime, "echo ping > /v/ping; while [ ! -f /v/pong ]; do sleep 0.05; "
                   "done", volumes=shared)
    assert code == 0
    assert runtime.wait(reader.id, timeout=10).exit_code == 0
    assert runtime.log_path(reader.id).read_text() == "ping\n"


def test_a_read_only_volume_refuses_writes(runtime: Runtime) -> None:
    code, out = _run(runtime, "touch /v/x 2>&1; exit 0",
                     volumes=(VolumeUse("ro", "/v", readonly=True),))
    assert code == 0
    assert "Read-only file system" in out
    assert list(runtime.volumes.source(runtime.volumes.get("ro")).iterdir()) == []


def test_an_anonymous_volume_is_named_at_create_and_removed_with_rm_v(
        runtime: Runtime) -> None:
    record = runtime.create(config("sh", "-c", "echo x > /scratch/x",
                                   volumes=(VolumeUse("", "/scratch"),)))
    (name,) = [use["name"] for use in record.config["volumes"]]
    volume = runtime.volumes.get(name)
    assert volume.anonymous
    assert volume.labels == {"dockyard.dev/container": record.id}
    runtime.start(record.id)
    runtime.wait(record.id, timeout=10)
    assert (runtime.volumes.source(volume) / "x").read_text() == "x\n"
    runtime.delete(record.id, volumes=True)
    assert name not in {v.name for v in runtime.volumes.all()}


def test_rm_without_v_keeps_anonymous_volumes_and_run_rm_removes_them(
        runtime: Runtime) -> None:
    kept = runtime.create(config("true", volumes=(VolumeUse("", "/a"),)))
    runtime.delete(kept.id)
    assert len(runtime.volumes.all()) == 1
    gone = runtime.create(config("true", volumes=(VolumeUse("", "/b"),), auto_remove=True))
    runtime.delete(gone.id)
    assert len(runtime.volumes.all()) == 1


def test_a_volume_in_use_cannot_be_removed_even_by_a_stopped_container(
        runtime: Runtime) -> None:
    _run(runtime, "true", name="user", volumes=(VolumeUse("busy", "/v"),))
    with pytest.raises(FailedPreconditionError, match="in use"):
        runtime.volumes.remove("busy", in_use=runtime.volumes_in_use())
    runtime.delete("user")
    runtime.volumes.remove("busy", in_use=runtime.volumes_in_use())


def test_a_subpath_mounts_one_directory_of_the_volume(runtime: Runtime) -> None:
    _run(runtime, "mkdir -p /v/a /v/b; echo in-a > /v/a/f; echo in-b > /v/b/f",
         volumes=(VolumeUse("tree", "/v"),))
    code, out = _run(runtime, "cat /only/f; ls /only",
                     volumes=(VolumeUse("tree", "/only", subpath="b"),))
    assert (code, out.split()) == (0, ["in-b", "f"])


def test_a_subpath_link_cannot_lead_out_of_its_volume(runtime: Runtime,
                                                      tmp_path: Path) -> None:
    """The container plants a symlink in the volume; a later mount of that subpath stays
    inside the volume instead of following the link to the host."""
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "key").write_text("host only")
    _run(runtime, f"ln -s {secret} /v/escape", volumes=(VolumeUse("trap", "/v"),))
    code, out = _run(runtime, "ls -A /mnt", volumes=(VolumeUse("trap", "/mnt",
                                                               subpath="escape"),))
    assert code == 0
    assert "key" not in out


def test_a_hostpath_volume_binds_its_directory(runtime: Runtime, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "song").write_text("la\n")
    runtime.volumes.create(VolumeRecord(name="media", kind=Kind.HOST_PATH,
                                        host_path=str(media)))
    code, out = _run(runtime, "cat /m/song", volumes=(VolumeUse("media", "/m"),))
    assert (code, out) == (0, "la\n")


def test_binds_of_the_state_root_or_protected_paths_are_refused_before_create(
        runtime: Runtime) -> None:
    before = runtime.store.all()
    for source in (str(runtime.root), str(runtime.root / "volumes"), "/etc", "/proc/1"):
        with pytest.raises(InvalidArgumentError, match="refused"):
            runtime.create(config("true", binds=(Bind(source, "/x"),)))
    assert runtime.store.all() == before
    assert runtime.volumes.all() == []


def test_a_private_tmpfs_is_size_limited_and_gone_with_the_container(
        runtime: Runtime) -> None:
    code, out = _run(runtime, "grep ' /scratch ' /proc/self/mounts; "
                     "dd if=/dev/zero of=/scratch/big bs=1M count=2 2>&1; exit 0",
                     tmpfs=(TmpfsMount("/scratch", size_bytes=1 << 20, mode=0o1770),))
    assert code == 0
    mount_line = out.splitlines()[0].split()
    assert mount_line[2] == "tmpfs"
    assert "size=1024k" in mount_line[3]
    assert "mode=1770" in mount_line[3]
    assert "No space left on device" in out


def test_a_failed_create_takes_back_the_volumes_it_made(runtime: Runtime) -> None:
    runtime.create(config("true", name="taken"))
    with pytest.raises(Exception, match="already in use"):
        runtime.create(config("true", name="taken", volumes=(VolumeUse("", "/a"),
                                                             VolumeUse("fresh", "/b"))))
    assert runtime.volumes.all() == []


def test_a_container_racing_links_into_a_shared_volume_gains_nothing(
        runtime: Runtime, tmp_path: Path) -> None:
    """One container keeps swapping `sub` in a shared volume between a directory and a
    link to a host directory, while others start with that subpath mounted: none may ever
    see the host directory (the subpath is resolved by descriptor, inside the volume)."""
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "key").write_text("host only")
    shared = (VolumeUse("arena", "/v"),)
    racer = runtime.run(config("sh", "-c", f"mkdir -p /v/sub /v/real; ln -s {secret} /v/link; "
                               "while true; do mv /v/sub /v/real2; mv /v/link /v/sub; "
                               "mv /v/sub /v/link; mv /v/real2 /v/sub; done", volumes=shared))
    seen = []
    for _ in range(25):
        try:  # the racer may make a start fail (it could as well delete the directory)
            _, out = _run(runtime, "ls -A /m", volumes=(VolumeUse("arena", "/m",
                                                                  subpath="sub"),))
        except StartError:
            continue
        seen.append(out)
    runtime.kill(racer.id)
    assert len(seen) >= 10
    assert not any("key" in out for out in seen)


def test_a_tmpfs_volume_is_shared_while_used_and_emptied_when_the_last_user_stops(
        runtime: Runtime) -> None:
    runtime.volumes.create(VolumeRecord(name="mem", kind=Kind.TMPFS, size_bytes=1 << 20,
                                        mode=0o700))
    data = runtime.volumes.data_dir("mem")
    holder = runtime.run(config("sh", "-c", "echo held > /m/f; sleep 30",
                                volumes=(VolumeUse("mem", "/m"),)))
    code, out = _run(runtime, "while [ ! -f /m/f ]; do sleep 0.05; done; cat /m/f; "
                     "stat -c %a /m; dd if=/dev/zero of=/m/big bs=1M count=2 2>&1; exit 0",
                     volumes=(VolumeUse("mem", "/m"),))
    assert code == 0
    assert out.split()[:2] == ["held", "700"]
    assert "No space left on device" in out
    assert os.path.ismount(data)  # the holder still runs
    runtime.kill(holder.id)
    runtime.wait(holder.id, timeout=10)
    assert not os.path.ismount(data)
    assert list(data.iterdir()) == []


def test_what_a_provider_mounts_later_reaches_its_running_consumers(runtime: Runtime) -> None:
    """The storage-provider idea: a container exports a directory; a filesystem it mounts
    there after consumers started (a tmpfs standing in for a Ceph client) appears in each
    of them, through mount propagation, without restarting them."""
    runtime.volumes.create(VolumeRecord(name="cephfs", kind=Kind.PROVIDER,
                                        provider="storage", provider_path="/export"))
    uses = (VolumeUse("cephfs", "/data"),)
    early = runtime.create(config("true", volumes=uses))
    with pytest.raises(FailedPreconditionError, match="waits for its provider"):
        runtime.start(early.id)
    provider = runtime.run(config("sleep", "60", name="storage", cap_add=("SYS_ADMIN",)))
    consumer = runtime.run(config("sh", "-c", "while [ ! -f /data/fs/hello ]; do sleep 0.05; "
                                  "done; cat /data/fs/hello; grep ' /data/fs ' "
                                  "/proc/self/mounts", volumes=uses))
    mounted = runtime.execs.start(provider.id, (
        "sh", "-c", "mkdir -p /export/fs && mount -t tmpfs -o size=1m ceph /export/fs && "
        "echo from the provider > /export/fs/hello"))
    assert runtime.execs.wait(mounted, timeout=10) == 0
    assert runtime.wait(consumer.id, timeout=10).exit_code == 0
    lines = runtime.log_path(consumer.id).read_text().splitlines()
    assert lines[0] == "from the provider"
    assert lines[1].startswith("ceph /data/fs tmpfs")
    hub = runtime.volumes.data_dir("cephfs")
    assert os.path.ismount(hub / "fs")  # and so on the node
    runtime.kill(provider.id)
    runtime.wait(provider.id, timeout=10)
    assert not os.path.ismount(hub / "fs")  # withdrawn with its provider
    with pytest.raises(FailedPreconditionError, match="provides volume"):
        runtime.delete("storage")
    runtime.delete(consumer.id)
    runtime.delete(early.id)
    runtime.delete("storage")


def test_a_new_volume_starts_with_what_the_image_holds_there_as_with_docker(
        runtime: Runtime, tmp_path: Path) -> None:
    code, out = _run(runtime, "cat /etc/group; echo mine > /etc/added",
                     volumes=(VolumeUse("conf", "/etc"),))
    assert code == 0
    assert out.startswith("root:x:0:")
    data = runtime.volumes.source(runtime.volumes.get("conf"))
    # The container's /etc: the image's files, and the runtime's mount points, as Docker's
    assert {p.name for p in data.iterdir()} == {"added", "group", "passwd", "hostname",
                                                "hosts", "resolv.conf"}
    (data / "passwd").unlink()  # the volume has data now: the image's is not copied again
    code, out = _run(runtime, "ls /etc", volumes=(VolumeUse("conf", "/etc"),))
    assert "passwd" not in out.split()
    assert "added" in out.split()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out = _run(runtime, "ls -A /etc", binds=(Bind(str(empty), "/etc"),))
    # A host directory is never filled from the image; the runtime's mount points for
    # /etc/hostname and the like are made in it, as runc makes them under Docker.
    assert (code, out.split()) == (0, ["hostname", "hosts", "resolv.conf"])
    assert {p.name for p in empty.iterdir()} == {"hostname", "hosts", "resolv.conf"}


def test_a_path_the_image_declares_a_volume_gets_one_unless_something_is_mounted_there(
        tmp_path: Path) -> None:
    with busybox_runtime(tmp_path / "node", image_volumes=("/etc", "/cache")) as runtime:
        record = runtime.create(config("sh", "-c", "ls /etc; echo x > /cache/x",
                                       volumes=(VolumeUse("mine", "/cache"),)))
        uses = {use["target"]: use["name"] for use in record.config["volumes"]}
        assert uses["/cache"] == "mine"  # mounted there: the image's volume is not made
        etc = runtime.volumes.get(uses["/etc"])
        assert etc.anonymous
        runtime.start(record.id)
        runtime.wait(record.id, timeout=10)
        assert "passwd" in runtime.log_path(record.id).read_text().split()
        assert (runtime.volumes.source(etc) / "passwd").exists()  # filled from the image
        runtime.delete(record.id, volumes=True)
        assert [v.name for v in runtime.volumes.all()] == ["mine"]
