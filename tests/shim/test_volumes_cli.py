"""`dockyard volume …` and `run -v/--mount/--tmpfs` against a real node daemon."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.shim.nodes import Node, busybox_node

pytestmark = [pytest.mark.root, pytest.mark.e2e]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with busybox_node(tmp_path) as running:
        yield running


def _volumes(node: Node) -> list[str]:
    return node.dockyard("volume", "ls", "-q", check=True).stdout.split()


def test_a_named_volume_outlives_its_containers(node: Node) -> None:
    node.dockyard("run", "--rm", "-v", "notes:/notes", "busybox", "sh", "-c",
                  "echo first > /notes/a", check=True)
    result = node.dockyard("run", "--rm", "--mount", "type=volume,source=notes,target=/n",
                           "busybox", "cat", "/n/a", check=True)
    assert result.stdout == "first\n"
    assert _volumes(node) == ["notes"]
    shown = json.loads(node.dockyard("volume", "inspect", "notes", check=True).stdout)[0]
    assert (shown["Name"], shown["Kind"], shown["UsageBytes"]) == ("notes", "local", 4096)
    assert Path(shown["Mountpoint"], "a").read_text() == "first\n"


def test_run_rm_removes_its_anonymous_volume_and_rm_v_does_too(node: Node) -> None:
    node.dockyard("run", "--rm", "-v", "/scratch", "busybox", "touch", "/scratch/x",
                  check=True)
    assert _volumes(node) == []
    node.dockyard("run", "--name", "keeper", "-v", "/scratch", "busybox", "true", check=True)
    assert len(_volumes(node)) == 1
    node.dockyard("rm", "keeper", check=True)
    assert len(_volumes(node)) == 1  # without -v it stays, as with Docker
    node.dockyard("run", "--name", "gone", "-v", "/scratch", "busybox", "true", check=True)
    node.dockyard("rm", "-v", "gone", check=True)
    assert len(_volumes(node)) == 1


def test_volume_rm_refuses_a_volume_a_container_uses_and_goes_on_with_the_rest(
        node: Node) -> None:
    node.dockyard("volume", "create", "free", check=True)
    node.dockyard("run", "--name", "user", "-v", "busy:/b", "busybox", "true", check=True)
    result = node.dockyard("volume", "rm", "busy", "free")
    assert result.returncode == 1
    assert "in use by a container" in result.stderr
    assert result.stdout.split() == ["free"]
    assert _volumes(node) == ["busy"]
    node.dockyard("rm", "user", check=True)
    node.dockyard("volume", "rm", "busy", check=True)


def test_prune_removes_unused_anonymous_volumes_then_with_a_every_unused_one(
        node: Node) -> None:
    node.dockyard("volume", "create", "named", check=True)
    anonymous = node.dockyard("volume", "create", check=True).stdout.strip()
    node.dockyard("run", "--name", "user", "-v", "/kept", "busybox", "true", check=True)
    used = [v for v in _volumes(node) if v not in ("named", anonymous)]
    assert node.dockyard("volume", "prune", "-f", check=True).stdout.split()[2:] == [anonymous]
    node.dockyard("volume", "prune", "-a", "-f", check=True)
    assert _volumes(node) == used


def test_tmpfs_mounts_are_private_and_size_limited(node: Node) -> None:
    result = node.dockyard("run", "--rm", "--tmpfs", "/run/cache:size=1m", "busybox", "sh",
                           "-c", "dd if=/dev/zero of=/run/cache/f bs=1M count=2 2>&1; "
                           "grep /run/cache /proc/self/mounts", check=True)
    assert "No space left on device" in result.stdout
    assert "tmpfs /run/cache tmpfs" in result.stdout


def test_a_bad_mount_is_refused_with_the_fix_before_anything_is_made(node: Node) -> None:
    for args, message in ((["-v", "/etc:/x"], "/etc is refused"),
                          (["-v", "bad name:/x"], "invalid volume name"),
                          (["--mount", "type=bind,target=/x"], "source=/HOST/PATH"),
                          (["-v", "a:/x", "-v", "b:/x"], "duplicate mount point /x")):
        result = node.dockyard("run", "--rm", *args, "busybox", "true")
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr
    assert node.dockyard("ps", "-a", "-q").stdout == ""
    assert _volumes(node) == []


def test_volume_data_survives_a_sigkill_of_the_daemon(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "counter", "-v", "count:/c", "busybox", "sh", "-c",
                  "i=0; while true; do i=$((i+1)); echo $i > /c/n.tmp; mv /c/n.tmp /c/n; "
                  "sleep 0.02; done", check=True)
    data = Path(json.loads(node.dockyard("volume", "inspect", "count",
                                         check=True).stdout)[0]["Mountpoint"])
    while not (data / "n").exists():
        time.sleep(0.02)
    node.kill_daemon()
    before = int((data / "n").read_text())
    time.sleep(0.3)  # the container writes on while no daemon runs
    assert int((data / "n").read_text()) > before
    node.start_daemon()
    assert _volumes(node) == ["count"]
    node.dockyard("rm", "-f", "counter", check=True)
    assert int((data / "n").read_text()) > before  # removing the container keeps the data


def test_export_and_import_carry_a_volume_to_a_new_one(node: Node, tmp_path: Path) -> None:
    node.dockyard("run", "--rm", "-v", "src:/d", "busybox", "sh", "-c",
                  "mkdir -p /d/a && echo payload > /d/a/f && ln -s /d/a /d/link", check=True)
    archive = tmp_path / "src.tar"
    exported = node.dockyard("volume", "export", "src", "-o", str(archive), check=True)
    assert "exported 1 files" in exported.stderr
    imported = node.dockyard("volume", "import", "dst", "-i", str(archive), check=True)
    assert exported.stderr.split("manifest ")[1] == imported.stderr.split("manifest ")[1]
    result = node.dockyard("run", "--rm", "-v", "dst:/d", "busybox", "cat", "/d/link/f",
                           check=True)
    assert result.stdout == "payload\n"
    again = node.dockyard("volume", "import", "dst", "-i", str(archive))
    assert again.returncode == 1
    assert "exists already" in again.stderr
