"""The `dockyard` CLI against a real node daemon: Docker's verbs end to end.

Each test gets its own state root, socket and daemon, and removes every container it
made. The daemon is started by the test (not by the CLI's autostart) so the test can end
it by pid; one test checks the autostart message separately.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard_shim.daemon.client import Client
from tests.shim.nodes import Node, busybox_node, end_orphan

pytestmark = [pytest.mark.root, pytest.mark.e2e]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with busybox_node(tmp_path) as running:
        yield running


def test_run_streams_output_and_exits_with_the_containers_code(node: Node) -> None:
    result = node.dockyard("run", "--rm", "busybox", "sh", "-c", "echo hello; exit 7")
    assert (result.stdout, result.returncode) == ("hello\n", 7)
    assert node.dockyard("ps", "-a", "-q").stdout == ""  # --rm removed it


def test_a_missing_command_exits_127_with_dockers_message(node: Node) -> None:
    result = node.dockyard("run", "--rm", "busybox", "no-such-command")
    assert result.returncode == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in result.stderr


def test_an_unknown_image_is_a_clear_error_and_leaves_nothing(node: Node) -> None:
    result = node.dockyard("run", "nginx")
    assert result.returncode == 1
    assert "no such image: nginx" in result.stderr
    assert "dockyard load -i FILE" in result.stderr  # and how to get one
    assert node.dockyard("ps", "-a", "-q").stdout == ""


def test_malformed_limits_are_refused_before_anything_is_made(node: Node) -> None:
    result = node.dockyard("run", "-m", "lots", "busybox", "true")
    assert result.returncode == 2
    assert "Invalid value for '-m'" in result.stderr
    result = node.dockyard("run", "-v", "/no/such/dir:/data", "busybox", "true")
    assert result.returncode == 1
    assert "bind source path does not exist" in result.stderr
    result = node.dockyard("run", "-v", "/tmp:data", "busybox", "true")
    assert "must be an absolute path" in result.stderr
    assert node.dockyard("ps", "-a", "-q").stdout == ""


def test_detach_ps_stop_and_rm(node: Node) -> None:
    cid = node.dockyard("run", "-d", "--name", "sleeper", "busybox", "sleep", "60",
                        check=True).stdout.strip()
    assert len(cid) == 64
    assert "sleeper" in node.dockyard("ps").stdout
    refused = node.dockyard("rm", "sleeper")
    assert refused.returncode == 1
    assert "stop it first or force the removal" in refused.stderr
    node.dockyard("stop", "-t", "1", "sleeper", check=True)
    assert "Exited (137)" in node.dockyard("ps", "-a").stdout
    node.dockyard("rm", "sleeper", check=True)
    assert node.dockyard("ps", "-a", "-q").stdout == ""


def test_a_name_in_use_is_refused(node: Node) -> None:
    node.dockyard("create", "--name", "twin", "busybox", "true", check=True)
    result = node.dockyard("create", "--name", "twin", "busybox", "true")
    assert result.returncode == 1
    assert "already in use" in result.stderr


def test_logs_wait_inspect_and_limits(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "job", "-m", "32m", "--pids-limit", "20",
                  "busybox", "sh", "-c", "echo working; sleep 0.3; echo done; exit 3",
                  check=True)
    assert node.dockyard("wait", "job", check=True).stdout.strip() == "3"
    assert node.dockyard("logs", "job", check=True).stdout == "working\ndone\n"
    (record,) = json.loads(node.dockyard("inspect", "job", check=True).stdout)
    assert (record["status"], record["exit_code"]) == ("stopped", 3)
    assert record["config"]["memory_bytes"] == 32 << 20


def test_the_cli_starts_a_daemon_when_none_listens_and_says_so(node: Node) -> None:
    node.stop_daemon()
    result = node.dockyard("ps")
    assert result.returncode == 0
    assert "no daemon was listening" in result.stderr
    pid = int(result.stderr.split("(pid ")[1].split(",")[0])
    os.kill(pid, signal.SIGTERM)  # the daemon the CLI started for this test
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # reparented to us (a subreaper) when the CLI exited
    deadline = time.monotonic() + 10
    while Path(node.env["DOCKYARD_HOST"]).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_second_daemon_on_the_same_root_is_refused(node: Node) -> None:
    result = node.dockyard("shim", timeout=15)
    assert result.returncode == 1
    assert "another dockyard daemon" in result.stderr
    assert node.dockyard("ps").returncode == 0  # the first one still serves


def _await_api(node: Node) -> None:
    client = Client(Path(node.env["DOCKYARD_HOST"]))
    deadline = time.monotonic() + 15
    while not client.ping():
        assert time.monotonic() < deadline, "the API did not come back"
        time.sleep(0.05)


def test_killing_the_server_loses_no_container_and_no_exit_code(node: Node) -> None:
    for index in range(50):
        node.dockyard("run", "-d", "--name", f"c{index}", "busybox", "sleep", "300",
                      check=True)
    node.dockyard("run", "-d", "--name", "quick", "busybox", "sh", "-c",
                  "sleep 1; exit 42", check=True)
    server = node.server_pid()
    os.kill(server, signal.SIGKILL)
    time.sleep(1.5)  # `quick` exits while no server runs: the keeper records it
    _await_api(node)
    assert node.server_pid() != server  # the keeper started a new one
    table = node.dockyard("ps", "-a", check=True).stdout
    assert sum("Up " in line for line in table.splitlines()) == 50
    assert "Exited (42)" in table
    assert node.dockyard("wait", "quick", check=True).stdout.strip() == "42"


def test_killing_the_keeper_leaves_the_server_serving(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "survivor", "busybox", "sleep", "300", check=True)
    server = node.server_pid()
    assert node.daemon is not None
    node.daemon.kill()
    node.daemon.wait()
    node.daemon = None
    result = node.dockyard("run", "--rm", "busybox", "echo", "still here")
    assert (result.returncode, result.stdout) == (0, "still here\n")
    assert "survivor" in node.dockyard("ps", check=True).stdout
    node.dockyard("rm", "-f", "survivor", check=True)
    end_orphan(server, signal.SIGTERM)  # orphaned now: end it ourselves


def test_exec_runs_in_a_running_container_with_its_exit_code(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "host", "busybox", "sleep", "60", check=True)
    result = node.dockyard("exec", "-e", "GREETING=hi", "host", "sh", "-c",
                           "echo $GREETING from $(hostname); exit 4")
    assert result.returncode == 4
    assert result.stdout.startswith("hi from ")
    missing = node.dockyard("exec", "host", "no-such-command")
    assert missing.returncode == 127
    assert "executable file not found" in missing.stderr


def _await_record(node: Node, name: str, done: Callable[[dict[str, Any]], bool],
                  timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        result = node.dockyard("inspect", name)
        if result.returncode == 0:
            (record,) = json.loads(result.stdout)
            if done(record):
                return record
        assert time.monotonic() < deadline, f"{name} never got there: {result.stdout}"
        time.sleep(0.2)


def test_on_failure_restarts_up_to_its_count_then_stays_stopped(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox",
                  "sh", "-c", "exit 3", check=True)
    record = _await_record(node, "flaky", lambda r: r["restart_count"] == 2
                           and r["status"] == "stopped")
    assert record["exit_code"] == 3
    time.sleep(1.0)
    (again,) = json.loads(node.dockyard("inspect", "flaky", check=True).stdout)
    assert again["restart_count"] == 2  # no third restart


def test_always_restarts_until_the_user_stops_it(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "phoenix", "--restart", "always", "busybox",
                  "sh", "-c", "sleep 0.2", check=True)
    _await_record(node, "phoenix", lambda r: r["restart_count"] >= 2)
    node.dockyard("stop", "-t", "1", "phoenix", check=True)
    stopped = _await_record(node, "phoenix", lambda r: r["status"] == "stopped")
    time.sleep(1.5)
    (after,) = json.loads(node.dockyard("inspect", "phoenix", check=True).stdout)
    assert (after["status"], after["restart_count"]) == ("stopped", stopped["restart_count"])


def test_a_detached_rm_container_is_removed_when_it_exits(node: Node) -> None:
    node.dockyard("run", "-d", "--rm", "--name", "ephemeral", "busybox", "true", check=True)
    deadline = time.monotonic() + 10
    while node.dockyard("ps", "-a", "-q").stdout:
        assert time.monotonic() < deadline, "the container was not removed"
        time.sleep(0.1)


def test_diff_shows_the_containers_changes_and_not_the_runtimes_mount_points(
        node: Node) -> None:
    node.dockyard("run", "--name", "changer", "busybox", "sh", "-c",
                  "echo hi > /hello; rm /bin/true", check=True)
    assert node.dockyard("diff", "changer", check=True).stdout.splitlines() == [
        "C /bin", "D /bin/true", "A /hello"]
    node.dockyard("rm", "changer", check=True)


def test_removing_the_image_also_collects_the_runtimes_init_layer(node: Node) -> None:
    node.dockyard("run", "--rm", "busybox", "true", check=True)
    snapshots = node.root / "root" / "overlay" / "snapshots"
    kept = [p for p in snapshots.iterdir() if not p.name.startswith("trash-")]  # swept soon
    assert len(kept) == 2  # the image's layer and the init layer
    node.dockyard("rmi", "busybox", check=True)
    assert list(snapshots.iterdir()) == []


def test_commit_makes_an_image_that_runs_with_the_containers_changes(node: Node) -> None:
    node.dockyard("run", "--name", "maker", "busybox", "sh", "-c",
                  "echo made > /made.txt", check=True)
    made = node.dockyard("commit", "-m", "made a file", "-c", 'CMD ["cat", "/made.txt"]',
                         "maker", "made:1", check=True)
    assert made.stdout.startswith("sha256:")
    assert node.dockyard("run", "--rm", "made:1", check=True).stdout == "made\n"
    assert "made " in node.dockyard("images", check=True).stdout
    node.dockyard("rm", "maker", check=True)


def test_commit_of_a_missing_container_says_so(node: Node) -> None:
    result = node.dockyard("commit", "ghost", "x:1")
    assert result.returncode == 1
    assert "no such container: ghost" in result.stderr


def test_image_prune_keeps_what_containers_use_and_frees_the_rest(node: Node) -> None:
    node.dockyard("run", "--name", "user", "busybox", "sh", "-c", "echo x > /x", check=True)
    dangling = node.dockyard("commit", "user", check=True).stdout.strip()  # no name
    pruned = node.dockyard("image", "prune", "-f", check=True).stdout
    assert f"Deleted: {dangling}" in pruned
    kept = node.dockyard("image", "prune", "-a", "-f", check=True).stdout
    assert "Deleted:" not in kept  # busybox: the container "user" was created from it
    node.dockyard("rm", "user", check=True)
    assert "Deleted: sha256:" in node.dockyard("image", "prune", "-a", "-f", check=True).stdout
    root = node.root / "root"
    assert node.dockyard("images", "-q", check=True).stdout == ""
    assert [p for p in (root / "overlay" / "snapshots").iterdir()
            if not p.name.startswith("trash-")] == []
    assert list((root / "images" / "content" / "blobs" / "sha256").iterdir()) == []


def test_rmi_of_an_image_a_container_uses_is_refused_unless_forced(node: Node) -> None:
    node.dockyard("create", "--name", "holder", "busybox", "true", check=True)
    refused = node.dockyard("rmi", "busybox")
    assert refused.returncode == 1
    assert "used by a container: remove the container first" in refused.stderr
    forced = node.dockyard("rmi", "-f", "busybox", check=True)
    assert "Untagged: busybox:latest" in forced.stdout
    assert "Deleted" not in forced.stdout
    assert node.dockyard("start", "holder", check=True).returncode == 0  # still runs
    node.dockyard("rm", "holder", check=True)


def test_an_image_removed_and_loaded_again_runs_again(node: Node) -> None:
    node.dockyard("run", "--rm", "busybox", "true", check=True)  # the daemon knows it now
    archive = node.root / "busybox-saved.tar"
    node.dockyard("save", "-o", str(archive), "busybox", check=True)
    node.dockyard("rmi", "busybox", check=True)  # its layers are collected
    node.dockyard("load", "--no-unpack", "-i", str(archive), check=True)
    assert node.dockyard("run", "--rm", "busybox", "echo", "back", check=True).stdout == "back\n"


def test_a_kept_alive_client_carries_on_after_the_daemon_restarts(node: Node) -> None:
    client = Client(Path(node.env["DOCKYARD_HOST"]))
    try:
        assert client.call("GET", "/containers/json?all=1") == []
        node.stop_daemon()  # closes the connection the client keeps
        node.start_daemon()
        assert client.call("GET", "/containers/json?all=1") == []  # sent again, once
    finally:
        client.close()
