"""`--userns auto`: root in the container is a block of the node's subordinate ids, and
holds no capability over anything of the node, whatever it holds inside.

The subordinate ids come from subuid(5) files of the test's own: the node's /etc/subuid
is not touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.errors import FailedPreconditionError
from dockyard_shim.runtime.config import VolumeUse
from dockyard_shim.runtime.forkserver import ForkServer
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.runtime.userns import BLOCK, SubordinateIds
from tests.security.harness import Containers, security_runtime, status_fields
from tests.shim.nodes import busybox_node
from tests.shim.runtimes import busybox_runtime, config

BASE = 200000
USERNS = {"userns": "auto"}


def _subordinate_ids(where: Path) -> SubordinateIds:
    """Two blocks of ids for user dockyard (and a range of another user's before them)."""
    for name in ("subuid", "subgid"):
        (where / name).write_text(f"root:100000:65536\ndockyard:{BASE}:{2 * BLOCK}\n")
    return SubordinateIds(where / "subuid", where / "subgid")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """The attack runtime, with two blocks of subordinate ids for user dockyard."""
    with security_runtime(tmp_path / "node", subordinate_ids=_subordinate_ids(tmp_path)) \
            as made:
        yield made


def _host_status(pid: int) -> dict[str, str]:
    return status_fields(Path(f"/proc/{pid}/status").read_text())


def test_root_inside_is_a_subordinate_id_on_the_node(containers: Containers) -> None:
    record = containers.start("sleep 60", **USERNS)
    assert record.id_map == {"uid": BASE, "gid": BASE, "size": BLOCK}
    host = _host_status(record.pid)
    assert host["Uid"].split() == [str(BASE)] * 4
    assert host["Gid"].split() == [str(BASE)] * 4
    code, out = containers.exec(record, "id -u; id -g; cat /proc/self/uid_map "
                                        "/proc/self/gid_map; grep CapEff /proc/self/status")
    assert code == 0, out
    lines = out.split("\n")
    assert lines[:2] == ["0", "0"]
    assert lines[2].split() == ["0", str(BASE), str(BLOCK)]
    assert lines[3].split() == ["0", str(BASE), str(BLOCK)]
    assert lines[4].split() == ["CapEff:", "00000000a80425fb"]  # Docker's 14, inside


def test_the_images_files_are_roots_inside_and_writes_land_unshifted_on_disk(
        containers: Containers, runtime: Runtime) -> None:
    code, out = containers.run(
        "stat -c '%u:%g %n' /etc/passwd /bin/sh /dev/null /etc/hosts; "
        "echo changed >> /etc/passwd && touch /made-by-root && "
        "mkdir /home-1000 && chown 1000:1000 /home-1000 && su -s /bin/sh nobody -c true; "
        "echo done", **USERNS)
    assert code == 0, out
    assert out.splitlines()[:4] == ["0:0 /etc/passwd", "0:0 /bin/sh", "0:0 /dev/null",
                                    "0:0 /etc/hosts"]
    assert out.strip().endswith("done")
    (record,) = runtime.store.all()
    changes = {c.path: c.kind for c in runtime.diff(record.id)}
    assert {"/made-by-root", "/home-1000", "/etc/passwd"} <= set(changes)
    upper = runtime._snapshots.upper_dir(record.id)  # the bytes on disk
    assert (os.stat(upper / "made-by-root").st_uid, os.stat(upper / "etc/passwd").st_uid) \
        == (0, 0)
    assert (os.stat(upper / "home-1000").st_uid, os.stat(upper / "home-1000").st_gid) \
        == (1000, 1000)


def test_a_volume_written_by_roots_inside_holds_the_containers_own_ids_on_disk(
        containers: Containers, runtime: Runtime) -> None:
    code, out = containers.run("touch /data/by-root && stat -c %u /data/by-root",
                               volumes=(VolumeUse("shared", "/data"),), **USERNS)
    assert (code, out.strip()) == (0, "0")
    assert os.stat(runtime.volumes.data_dir("shared") / "by-root").st_uid == 0


def test_the_daemons_fork_server_starts_it_and_fills_an_image_volume_with_its_ids(
        tmp_path: Path) -> None:
    """The daemon's way to start (the user namespace handed to the fork server as a
    descriptor), and a new volume filled from the image through the mapped mount: the
    image's root-owned files stay uid 0 on disk and are root's inside."""
    server = ForkServer()
    try:
        with busybox_runtime(tmp_path / "node", image_volumes=("/etc",), fork=server,
                             subordinate_ids=_subordinate_ids(tmp_path)) as runtime:
            record = runtime.run(config(
                "sh", "-c", "stat -c %u /etc/passwd; touch /etc/new; stat -c %u /etc/new; "
                "cat /proc/self/uid_map", **USERNS))
            runtime.wait(record.id, timeout=10)
            out = runtime.log_path(record.id).read_text().split()
            assert out == ["0", "0", "0", str(BASE), str(BLOCK)]
            (use,) = runtime.store.get(record.id).config["volumes"]
            etc = runtime.volumes.source(runtime.volumes.get(use["name"]))
            assert (os.stat(etc / "passwd").st_uid, os.stat(etc / "new").st_uid) == (0, 0)
    finally:
        server.close()


def test_every_capability_inside_is_nothing_on_the_node(containers: Containers) -> None:
    """--cap-add ALL without a seccomp filter: inside it may do anything to what its user
    namespace owns, which is nothing of the node's: /proc/sys stays read-only, no mount,
    no device. The control run without a user namespace remounts /proc/sys read-write."""
    attack = ("mount -o remount,rw /proc/sys && echo REMOUNTED; "
              "mount -t tmpfs none /mnt && echo MOUNTED; "
              "mknod /tmp/mem c 1 1 && head -c1 /tmp/mem >/dev/null && echo READ_MEM; "
              "echo tried")
    options = {"cap_add": ("ALL",), "seccomp": "unconfined"}
    code, out = containers.run(attack, **options, **USERNS)
    assert (code, out.split()[-1]) == (0, "tried")
    assert not {"REMOUNTED", "MOUNTED", "READ_MEM"} & set(out.split()), out
    code, out = containers.run("mount -o remount,rw /proc/sys && echo REMOUNTED", **options)
    assert "REMOUNTED" in out, out  # the defence is the user namespace, not the rest


def test_an_execd_process_joins_the_user_namespace(containers: Containers) -> None:
    record = containers.start("sleep 60", **USERNS)
    code, out = containers.exec(record, "cat /proc/self/uid_map; sleep 0.5 & "
                                        "echo $!; wait")
    assert code == 0, out
    assert out.split()[:3] == ["0", str(BASE), str(BLOCK)]


def test_each_container_gets_its_own_block_and_removal_frees_it(
        containers: Containers, runtime: Runtime) -> None:
    first = runtime.create(containers.config("true", **USERNS))
    second = runtime.create(containers.config("true", **USERNS))
    assert (first.id_map or {})["uid"] == BASE
    assert (second.id_map or {})["uid"] == BASE + BLOCK
    with pytest.raises(FailedPreconditionError, match="no free block"):
        runtime.create(containers.config("true", name="third", **USERNS))
    assert {r.name for r in runtime.store.all()} == {first.name, second.name}
    runtime.delete(first.id)
    third = runtime.create(containers.config("true", **USERNS))
    assert (third.id_map or {})["uid"] == BASE


def test_without_subordinate_ids_the_create_says_how_to_add_them_and_leaves_nothing(
        tmp_path: Path) -> None:
    ids = SubordinateIds(tmp_path / "none", tmp_path / "none")
    with security_runtime(tmp_path / "node", subordinate_ids=ids) as runtime:
        with pytest.raises(FailedPreconditionError, match="no subordinate ids: add a line"):
            runtime.create(Containers(runtime).config("true", **USERNS))
        assert runtime.store.all() == []
        assert not list((tmp_path / "node" / "containers").glob("*"))


def test_the_cli_runs_with_userns_auto_through_the_daemon(tmp_path: Path) -> None:
    """Through the daemon, whose ids come from $DOCKYARD_SUBUID and $DOCKYARD_SUBGID (as
    the Helm chart points them at the node's files), and a daemon without any refusing
    with the line to add, making nothing."""
    ids = _subordinate_ids(tmp_path)
    with busybox_node(tmp_path / "given", DOCKYARD_SUBUID=str(ids.subuid),
                      DOCKYARD_SUBGID=str(ids.subgid)) as node:
        result = node.dockyard("run", "--userns", "auto", "busybox", "cat",
                               "/proc/self/uid_map")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["0", str(BASE), str(BLOCK)]
        assert "--userns" in node.dockyard("run", "--help").stdout
    none = tmp_path / "none"
    with busybox_node(tmp_path / "without", DOCKYARD_SUBUID=str(none),
                      DOCKYARD_SUBGID=str(none)) as node:
        result = node.dockyard("run", "--userns", "auto", "busybox", "true")
        assert result.returncode == 1, result.stdout
        assert f"--userns auto: {none} gives user dockyard no subordinate ids: add a line " \
               "`dockyard:100000:6553600`" in result.stderr
        assert node.dockyard("ps", "-a", "-q").stdout == ""
