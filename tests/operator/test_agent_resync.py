"""The node agent's view of its bound Containers, refreshed from a list (no daemon needed:
`Agent.resync` reads the API server only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from dockyard_api.kube import KubeClient
from dockyard_shim.agent import metrics
from dockyard_shim.agent.converging import Agent, AgentConfig
from tests.kube.kopfrun import MERGE


async def _bind(http: Any, name: str, node: str) -> dict[str, Any]:
    body = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": name, "labels": {"dockyard.dev/node": node}},
            "spec": {"image": "busybox:1"}}
    async with http.client.post("/apis/dockyard.dev/v1alpha1/namespaces/default/"
                                "containers", json=body) as response:
        assert response.status == 200, await response.text()
        created: dict[str, Any] = await response.json()
        return created


@contextlib.asynccontextmanager
async def _agent(http: Any, tmp_path: Path) -> AsyncIterator[Agent]:
    """An agent of node n1 (no daemon: resyncs read the API server only)."""
    kube = KubeClient(kopf.ConnectionInfo(server=str(http.url), insecure=True))
    agent = Agent(AgentConfig(node="n1", root=tmp_path, socket=str(tmp_path / "sock")), kube)
    try:
        yield agent
    finally:
        agent.close()
        await kube.close()


@pytest.mark.asyncio
async def test_a_resync_replaces_what_the_watch_showed_with_what_is_bound_now(
        cluster: Any, tmp_path: Path) -> None:
    _, http = cluster
    for name, node in (("a", "n1"), ("b", "n1"), ("c", "n2")):
        await _bind(http, name, node)
    async with http.client.patch("/apis/dockyard.dev/v1alpha1/namespaces/default/"
                                 "containers/b", json={"metadata": {"annotations": {"x": "1"}}},
                                 headers=MERGE) as response:
        assert response.status == 200
    async with _agent(http, tmp_path) as agent:
        # What a stalled watch left: a container since moved away, and none of the new.
        agent.saw("ADDED", {"metadata": {"namespace": "default", "name": "gone"}})
        await agent.resync()
        assert sorted(agent.bound) == ["default/a", "default/b"]
        assert agent.bound["default/b"]["metadata"]["annotations"] == {"x": "1"}


@pytest.mark.asyncio
async def test_what_the_watch_shows_during_the_list_wins_over_the_list(
        cluster: Any, tmp_path: Path) -> None:
    _, http = cluster
    a, b = await _bind(http, "a", "n1"), await _bind(http, "b", "n1")
    async with _agent(http, tmp_path) as agent:
        listing = agent.kube.list

        async def slow_list(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
            listed = await listing(*args, **kwargs)
            # Events the watch brings while the list's answer is on its way: `a` moved
            # away, `b` changed again.
            agent.saw("DELETED", a)
            agent.saw("MODIFIED", {**b, "metadata": {**b["metadata"], "annotations": {"y": "2"}}})
            return listed

        agent.kube.list = slow_list  # type: ignore[method-assign]
        await agent.resync()
        assert sorted(agent.bound) == ["default/b"]
        assert agent.bound["default/b"]["metadata"]["annotations"] == {"y": "2"}


@pytest.mark.asyncio
async def test_a_container_is_counted_missed_only_when_the_watch_never_showed_it(
        cluster: Any, tmp_path: Path) -> None:
    _, http = cluster
    async with _agent(http, tmp_path) as agent:
        late = await _bind(http, "late", "n1")
        await _bind(http, "lost", "n1")
        assert await agent.resync() == set()  # their events may still be on their way
        agent.saw("ADDED", late)  # the watch shows one of them, late
        assert await agent.resync() == {"default/lost"}
        assert await agent.resync() == set()  # counted once
        assert sorted(agent.bound) == ["default/late", "default/lost"]


def test_only_a_change_the_agent_acts_on_wakes_a_pass(tmp_path: Path) -> None:
    kube = KubeClient(kopf.ConnectionInfo(server="http://127.0.0.1:1", insecure=True))
    agent = Agent(AgentConfig(node="n1", root=tmp_path, socket=str(tmp_path / "sock")), kube)
    body: dict[str, Any] = {
        "metadata": {"namespace": "default", "name": "a", "uid": "u1", "generation": 1},
        "status": {"node": "n1", "imageDigest": "sha256:" + "a" * 64}}

    def wakes(event: str, changed: dict[str, Any]) -> bool:
        agent._wake.clear()
        agent.saw(event, changed)
        return agent._wake.is_set()

    try:
        assert wakes("ADDED", body)
        reported = {**body, "status": {**body["status"], "phase": "Running", "pid": 7}}
        assert not wakes("MODIFIED", reported)  # the agent's own report
        assert agent.bound["default/a"]["status"]["pid"] == 7  # kept, all the same
        assert wakes("MODIFIED", {**reported, "metadata": {**body["metadata"], "generation": 2}})
        assert wakes("DELETED", reported)
    finally:
        agent.close()


@pytest.mark.asyncio
async def test_a_pass_that_fails_on_a_bug_does_not_end_the_loop(tmp_path: Path) -> None:
    kube = KubeClient(kopf.ConnectionInfo(server="http://127.0.0.1:1", insecure=True))
    config = AgentConfig(node="n1", root=tmp_path, socket=str(tmp_path / "sock"),
                         poll_every=0.01)
    agent = Agent(config, kube)
    passes = 0

    async def converge() -> None:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise KeyError("a bug")

    agent.converge = converge  # type: ignore[method-assign]
    bugs = metrics.FAILED_PASSES.labels("bug")
    before = bugs._value.get()
    loop = asyncio.create_task(agent.run())
    try:
        for _ in range(200):
            if passes >= 3:
                break
            await asyncio.sleep(0.01)
        assert passes >= 3  # the loop went on after the failed pass
        assert bugs._value.get() == before + 1
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        agent.close()
