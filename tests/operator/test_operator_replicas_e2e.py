"""The operator as processes, on three real nodes: killed in the middle of a burst of
creates, and run as two replicas of which only one may act.

Root: real daemons and agents (see `cluster.py`); the replicas are `kopf run` processes
with peering on, as the chart runs them.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import re
import signal
from pathlib import Path

import pytest

from tests.operator.cluster import Cluster, container, eventually, running_cluster

LOADED_GRACE = datetime.timedelta(seconds=40)  # the default: no node is lost here
pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio]


def _bound(cluster: Cluster) -> int:
    return sum(1 for c in cluster.server.all("containers") if (c.get("status") or {}).get("node"))


def _all_running(cluster: Cluster, count: int) -> bool:
    objects = cluster.server.all("containers")
    return len(objects) == count and all(
        (c.get("status") or {}).get("phase") == "Running" for c in objects)


def _local(cluster: Cluster) -> list[tuple[str, str]]:
    """(node, container name) of every container the agents made, on every node."""
    return [(node.name, name) for node in cluster.nodes.values()
            for name, record in node.containers().items()
            if (record.get("labels") or {}).get("dockyard.dev/managed-by") == "dockyard-agent"]


def _assert_one_container_per_object(cluster: Cluster) -> None:
    """No duplicates (an object run twice) and no orphans (a container without its
    object, or away from the object's node)."""
    local = _local(cluster)
    counts = collections.Counter(name for _, name in local)
    assert [name for name, n in counts.items() if n > 1] == []
    bound = {f"default.{c['metadata']['name']}": c["status"]["node"]
             for c in cluster.server.all("containers")}
    assert {name: node for node, name in local} == bound


def _schedulings(log: str, prefix: str = "") -> int:
    """How many times a replica's log shows the scheduling handler done, for the
    containers whose names start with `prefix`."""
    return len(re.findall(rf"\[default/{prefix}[^]]*\] Handler 'schedule' succeeded", log))


async def test_an_operator_killed_in_a_burst_of_200_creates_converges_without_duplicates(
        tmp_path: Path) -> None:
    async with running_cluster(tmp_path, operator=False, grace=LOADED_GRACE) as cluster:
        first = cluster.start_operator("operator-1")
        names = [f"burst-{i}" for i in range(200)]

        async def create(batch: list[str]) -> None:
            for name in batch:
                await cluster.apply(container(name, cluster.image, args=["sleep", "600"]))

        await create(names[:100])
        while _bound(cluster) < 10:  # the first replica is binding the first hundred
            await asyncio.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert _bound(cluster) < 100  # killed in the middle of it
        await create(names[100:])
        cluster.start_operator("operator-2")
        await eventually(cluster, lambda: _all_running(cluster, 200), timeout=180)
        _assert_one_container_per_object(cluster)
        # Each container bound once: an object bound by the killed replica was not bound
        # again by the next one (a replica killed after deciding but before its write
        # landed may have posted a Scheduled event for it, and the next one decides anew).
        for name in names:
            nodes = {(v.get("status") or {}).get("node")
                     for v in cluster.server.versions("containers", name, "default")}
            assert len(nodes - {None}) == 1, (name, nodes)
        scheduled = {e["involvedObject"]["name"] for e in cluster.server.all("events", group="")
                     if e.get("reason") == "Scheduled"}
        assert scheduled == set(names)


async def test_of_two_operator_replicas_one_acts_and_the_other_takes_over_when_it_dies(
        tmp_path: Path) -> None:
    async with running_cluster(tmp_path, operator=False) as cluster:
        for name in ("replica-a", "replica-b"):
            cluster.start_operator(name)

        def peers() -> int:
            peering = cluster.server.get("clusterkopfpeerings", "dockyard", group="kopf.dev")
            return len((peering or {}).get("status") or {})

        # Both have met; the one of lower priority pauses as soon as it sees the other's
        # record (until then, both may act: kopf peering's own window).
        await eventually(cluster, lambda: peers() == 2)
        await asyncio.sleep(2)  # that watch event takes milliseconds; allow a loaded CI
        for i in range(10):
            await cluster.apply(container(f"first-{i}", cluster.image, args=["sleep", "600"]))
        await eventually(cluster, lambda: _all_running(cluster, 10), timeout=60)
        acted = {name: _schedulings(cluster.operator_log(name), "first-")
                 for name in cluster.operators}
        leader = max(acted, key=lambda name: acted[name])
        other = next(name for name in acted if name != leader)
        assert acted == {leader: 10, other: 0}, cluster.logs()

        cluster.operators[leader].send_signal(signal.SIGKILL)
        cluster.operators[leader].wait(timeout=10)
        for i in range(5):
            await cluster.apply(container(f"later-{i}", cluster.image, args=["sleep", "600"]))
        await eventually(cluster, lambda: _all_running(cluster, 15), timeout=60)
        # The survivor bound the new ones (and only looked at the old ones, bound already).
        assert _schedulings(cluster.operator_log(other), "later-") == 5
        assert all(len({(v.get("status") or {}).get("node") for v in
                        cluster.server.versions("containers", f"first-{i}", "default")}
                       - {None}) == 1 for i in range(10))
        _assert_one_container_per_object(cluster)
