"""Resource exhaustion from inside stays inside: pids, memory and CPU limits hold.

Canaries on the host: the node can still fork during a fork bomb, a neighbour container
keeps running (and is never OOM-killed) while another exhausts its memory, and a busy
container gets no more CPU time than its quota.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.harness import Containers
from tests.shim.nodes import Node, busybox_node

pytestmark = pytest.mark.root


def test_a_fork_bomb_is_contained_and_the_container_can_still_be_removed(
        containers: Containers) -> None:
    runtime = containers.runtime
    record = containers.start("b() { b | b & }; b; sleep 60", pids_limit=32)
    deadline = time.monotonic() + 5
    peak = 0
    while time.monotonic() < deadline and peak < 32:
        peak = max(peak, runtime.stats(record.id).pids_current)
        time.sleep(0.05)
    assert 16 <= peak <= 32  # it ran, and never beyond the limit...
    assert subprocess.run(["true"], check=False).returncode == 0  # ...and the node forks
    cgroup = runtime.cgroup_of(record)
    assert cgroup is not None
    assert len(cgroup.pids()) <= 32
    assert "can't fork" in runtime.log_path(record.id).read_text()
    started = time.monotonic()
    runtime.delete(record.id, force=True)
    assert time.monotonic() - started < 10
    assert not runtime.cgroups.exists(record.id)  # every process of the bomb is gone


def test_a_cpu_quota_of_half_a_cpu_is_enforced_within_ten_percent(
        containers: Containers) -> None:
    """Two busy loops would use two CPUs; the quota allows 0.5 of one."""
    runtime = containers.runtime
    record = containers.start("while :; do :; done & while :; do :; done", cpu_millis=500)
    time.sleep(0.3)  # past the first period
    used, began = runtime.stats(record.id).cpu_usage_ns or 0, time.monotonic()
    time.sleep(2.0)
    used = (runtime.stats(record.id).cpu_usage_ns or 0) - used
    share = used / 1e9 / (time.monotonic() - began)
    assert 0.45 <= share <= 0.55, f"{share:.3f} CPUs used under --cpus 0.5"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with busybox_node(tmp_path) as made:
        yield made


def test_a_memory_hog_is_oom_killed_reported_and_its_neighbour_is_unaffected(
        node: Node) -> None:
    node.dockyard("run", "-d", "--name", "neighbour", "-m", "32m", "--network", "none",
                  "busybox", "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/beat;"
                  " sleep 0.05; done", check=True)
    hog = "x=$(head -c 134217728 /dev/zero | tr '\\0' a); echo survived"
    node.dockyard("run", "-d", "--name", "hog", "-m", "16m", "--network", "none", "busybox",
                  "sh", "-c", hog, check=True)
    assert node.dockyard("wait", "hog", check=True).stdout.strip() == "137"
    (hog_state,) = json.loads(node.dockyard("inspect", "hog", check=True).stdout)
    assert _oom_killed(hog_state) is True
    assert "survived" not in node.dockyard("logs", "hog").stdout
    (neighbour,) = json.loads(node.dockyard("inspect", "neighbour", check=True).stdout)
    assert _status(neighbour) == "running"  # the canary: still up, never OOM-killed
    assert _oom_killed(neighbour) is False
    first = node.dockyard("exec", "neighbour", "cat", "/tmp/beat", check=True).stdout
    time.sleep(0.2)
    assert node.dockyard("exec", "neighbour", "cat", "/tmp/beat", check=True).stdout != first


def _oom_killed(state: dict[str, object]) -> object:
    inner = state.get("State")
    if isinstance(inner, dict):
        return inner.get("OOMKilled")
    return state.get("oom_killed")


def _status(state: dict[str, object]) -> object:
    inner = state.get("State")
    if isinstance(inner, dict):
        return inner.get("Status")
    return state.get("status")
