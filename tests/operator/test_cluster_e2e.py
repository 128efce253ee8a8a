"""Three nodes on one machine, end to end: the operator schedules, the node agents run
real containers, and a node that loses its agent has its containers moved and, when the
agent returns, fenced.

Root: every node runs a real daemon (overlayfs, namespaces, cgroups); images come from
a real registry on 127.0.0.1 (Debian's docker-registry), pinned by the operator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockyard_api.registries import pinned_reference
from tests.operator.cluster import (
    GRACE,
    Cluster,
    container,
    eventually,
    running_cluster,
)

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio]


def _running(cluster: Cluster, name: str) -> bool:
    status = cluster.status(name)
    return status.get("phase") == "Running" and bool(status.get("pid"))


def _local(cluster: Cluster, name: str) -> dict[str, dict[str, Any]]:
    """Where the node daemons run a container for Container `name`: node -> record."""
    found = {}
    for node in cluster.nodes.values():
        record = node.containers().get(f"default.{name}")
        if record is not None:
            found[node.name] = record
    return found


async def test_containers_run_where_bound_change_go_and_move_off_a_lost_node(
        tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        # Apply: two sleepers spread over the nodes (the first keeps data in a volume that
        # may move with it), one pinned to n3, a job that fails.
        await cluster.apply({"apiVersion": "dockyard.dev/v1alpha1", "kind": "Volume",
                             "metadata": {"name": "data", "namespace": "default"},
                             "spec": {"local": {}, "migration": "Transfer"}}, "volumes")
        await cluster.apply(container(
            "sleeper-1", cluster.image, restartPolicy="Always", resources={"cpu": "1500m"},
            args=["sh", "-c", "[ -f /data/born ] || hostname > /data/born; exec sleep 600"],
            volumeMounts=[{"name": "data", "mountPath": "/data"}]))
        await cluster.apply(container("sleeper-2", cluster.image, args=["sleep", "600"],
                                      restartPolicy="Always", resources={"cpu": "1500m"}))
        await cluster.apply(container("pinned", cluster.image, args=["sleep", "600"],
                                      nodeName="n3"))
        await cluster.apply(container("job", cluster.image, args=["sh", "-c", "exit 3"]))
        names = ("sleeper-1", "sleeper-2", "pinned")
        await eventually(cluster, lambda: all(_running(cluster, n) for n in names))
        await eventually(cluster, lambda: cluster.status("job").get("phase") == "Failed")
        assert cluster.status("job")["exitCode"] == 3
        assert cluster.status("pinned")["node"] == "n3"
        # 1.5 CPUs each on 2-CPU nodes: the sleepers cannot share one.
        assert cluster.status("sleeper-1")["node"] != cluster.status("sleeper-2")["node"]
        for name in names:
            status = cluster.status(name)
            local = _local(cluster, name)
            assert list(local) == [status["node"]], local  # on its node, and only there
            record = local[status["node"]]
            assert record["id"] == status["containerID"]
            assert record["pid"] == status["pid"]
            # The pinned bytes: the node ran the digest the operator resolved the tag to.
            assert record["config"]["image"] == pinned_reference(cluster.image,
                                                                 status["imageDigest"])
            assert status["observedGeneration"] == 1

        # A spec change replaces the container, on the same node.
        before = cluster.status("pinned")
        await cluster.patch("pinned", {"spec": {"args": ["sleep", "700"]}})
        await eventually(cluster, lambda: cluster.status("pinned").get("observedGeneration")
                         == 2 and _running(cluster, "pinned"))
        after = cluster.status("pinned")
        assert after["containerID"] != before["containerID"]
        record = _local(cluster, "pinned")["n3"]
        assert record["config"]["command"] == ["sleep", "700"]

        # A delete removes the container from its node, then the object goes.
        node = cluster.status("job")["node"]
        await cluster.delete("job")
        await eventually(cluster, lambda: cluster.container("job") is None)
        assert "default.job" not in cluster.nodes[node].containers()

        # The node of sleeper-1 loses its agent: after the grace the container runs
        # elsewhere (the old one still runs on the lost node: nothing there can stop it),
        # with its volume's data, moved from the lost node's shim.
        lost = cluster.status("sleeper-1")["node"]
        assert _volume(cluster)["status"] == {"node": lost, "phase": "Ready"}
        born = _born(cluster, lost)
        old_id = cluster.status("sleeper-1")["containerID"]
        cluster.nodes[lost].kill_agent()
        killed_at = asyncio_time()
        await eventually(cluster, lambda: cluster.status("sleeper-1").get("node")
                         not in (None, lost) and _running(cluster, "sleeper-1"),
                         timeout=GRACE.total_seconds() + 20)
        moved_in = asyncio_time() - killed_at
        assert moved_in >= GRACE.total_seconds()  # not before the grace
        node_object = cluster.server.get("dockyardnodes", lost)
        assert node_object is not None
        assert node_object["status"]["phase"] == "NotReady"
        assert [(c["type"], c["status"], c["reason"]) for c in
                node_object["status"]["conditions"]] == [("Ready", "False", "NodeLost")]
        new_node = cluster.status("sleeper-1")["node"]
        assert set(_local(cluster, "sleeper-1")) == {lost, new_node}
        assert _local(cluster, "sleeper-1")[lost]["id"] == old_id
        reasons = {e.get("reason") for e in cluster.server.all("events", group="")}
        assert {"NodeNotReady", "NodeLost", "Scheduled", "MigratingVolume"} <= reasons
        assert _volume(cluster)["status"] == {"node": new_node, "phase": "Ready"}
        assert _born(cluster, new_node) == born  # the data came along, not made anew

        # The agent returns: before anything else it kills what was moved away.
        cluster.nodes[lost].start_agent()
        await eventually(cluster, lambda: lost not in _local(cluster, "sleeper-1"))
        await eventually(cluster, lambda: (cluster.server.get("dockyardnodes", lost) or {})
                         .get("status", {}).get("phase") == "Ready")
        assert list(_local(cluster, "sleeper-1")) == [new_node]
        assert _running(cluster, "sleeper-1")
        node_object = cluster.server.get("dockyardnodes", lost) or {}
        assert [(c["type"], c["status"]) for c in node_object["status"]["conditions"]] == \
            [("Ready", "True")]
        assert await cluster.nodes[lost].metric("dockyard_agent_fenced_total") == 1
        running_there = sum(1 for c in cluster.server.all("containers")
                            if c["status"].get("node") == new_node and _running(
                                cluster, c["metadata"]["name"]))
        assert await cluster.nodes[new_node].metric("dockyard_agent_containers",
                                                    phase="Running") == running_there


def _volume(cluster: Cluster) -> dict[str, Any]:
    found = cluster.server.get("volumes", "data", "default")
    assert found is not None
    return found


def _born(cluster: Cluster, node: str) -> str:
    """What sleeper-1 wrote the first time it ran, as the volume holds it on `node`."""
    data = cluster.nodes[node].node.root / "root" / "volumes" / "default.data" / "_data"
    return (data / "born").read_text()


def asyncio_time() -> float:
    import asyncio  # noqa: PLC0415

    return asyncio.get_running_loop().time()


async def test_a_commit_runs_on_its_containers_node_and_the_image_runs_on_another(
        tmp_path: Path) -> None:
    async with running_cluster(tmp_path, ("n1", "n2")) as cluster:
        await cluster.apply(container(
            "app", cluster.image, nodeName="n1",
            args=["sh", "-c", "echo v2 > /version && mkdir /new && exec sleep 600"]))
        await eventually(cluster, lambda: _running(cluster, "app"))
        reference = f"{cluster.registry.host}/team/app:debug-1"
        await cluster.apply({
            "apiVersion": "dockyard.dev/v1alpha1", "kind": "Commit",
            "metadata": {"name": "snap", "namespace": "default"},
            "spec": {"container": "app", "image": "app-debug", "reference": reference,
                     "message": "what the debug session changed"}}, "commits")

        def commit_status() -> dict[str, Any]:
            return dict((cluster.server.get("commits", "snap", "default") or {})
                        .get("status") or {})

        await eventually(cluster, lambda: commit_status().get("phase") in ("Succeeded",
                                                                             "Failed"))
        status = commit_status()
        assert status["phase"] == "Succeeded", status
        assert status["node"] == "n1"
        assert status["added"] >= 2  # /version and /new (docker diff's A lines)
        image = cluster.server.get("images", "app-debug", "default")
        assert image is not None
        assert image["spec"]["fromCommit"] == "snap"
        assert image["status"]["digest"] == status["digest"]
        assert image["status"]["resolvedReference"] == pinned_reference(reference,
                                                                        status["digest"])

        # The pushed image, pinned, runs on the other node with the container's changes.
        await cluster.apply(container(
            "replay", image["status"]["resolvedReference"], nodeName="n2",
            args=["sh", "-c", "test -d /new && grep -q v2 /version && exec sleep 600"]))
        await eventually(cluster, lambda: _running(cluster, "replay"), timeout=60)
