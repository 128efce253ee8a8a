"""The node agent's view of its bound Containers, refreshed from a list (no daemon needed:
`Agent.resync` reads the API server only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest

from dockyard_api.kube import KubeClient
from dockyard_shim.agent.converging import Agent, AgentConfig
from tests.kube.kopfrun import MERGE


@pytest.mark.asyncio
async def test_a_resync_replaces_what_the_watch_showed_with_what_is_bound_now(
        cluster: Any, tmp_path: Path) -> None:
    _, http = cluster
    for name, node in (("a", "n1"), ("b", "n1"), ("c", "n2")):
        body = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
                "metadata": {"name": name, "labels": {"dockyard.dev/node": node}},
                "spec": {"image": "busybox:1"}}
        async with http.client.post("/apis/dockyard.dev/v1alpha1/namespaces/default/"
                                    "containers", json=body) as response:
            assert response.status == 200, await response.text()
    async with http.client.patch("/apis/dockyard.dev/v1alpha1/namespaces/default/"
                                 "containers/b", json={"metadata": {"annotations": {"x": "1"}}},
                                 headers=MERGE) as response:
        assert response.status == 200
    kube = KubeClient(kopf.ConnectionInfo(server=str(http.url), insecure=True))
    agent = Agent(AgentConfig(node="n1", root=tmp_path, socket=str(tmp_path / "sock")), kube)
    try:
        # What a stalled watch left: a container since moved away, and none of the new.
        agent.saw("ADDED", {"metadata": {"namespace": "default", "name": "gone"}})
        await agent.resync()
        assert sorted(agent.bound) == ["default/a", "default/b"]
        assert agent.bound["default/b"]["metadata"]["annotations"] == {"x": "1"}
    finally:
        agent.close()
        await kube.close()
