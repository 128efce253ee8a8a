"""Real kopf against the test API server: discovery, list and watch, patches of status and
metadata, finalizers and Events work as kopf expects them to on a real cluster."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from tests.kube.kopfrun import eventually, running

VOLUMES = "/apis/dockyard.dev/v1alpha1/namespaces/ns/volumes"



@pytest.mark.asyncio
async def test_kopf_creates_reports_and_finalizes_through_the_server(cluster: Any) -> None:
    server, http = cluster
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []

    @kopf.on.create("dockyard.dev", "v1alpha1", "volumes", registry=registry)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Ready"
        patch.status["node"] = "node-1"
        kopf.info(body, reason="Placed", message="placed on node-1")

    @kopf.on.delete("dockyard.dev", "v1alpha1", "volumes", registry=registry)
    def gone(name: str, **_: Any) -> None:
        deleted.append(name)

    async with running(registry, str(http.url)):
        async with http.client.post(VOLUMES, json={
                "apiVersion": "dockyard.dev/v1alpha1", "kind": "Volume",
                "metadata": {"name": "data"}, "spec": {"local": {}}}) as response:
            assert response.status == 200
        await eventually(lambda: (server.get("volumes", "data", "ns") or {})
                          .get("status", {}).get("phase") == "Ready")
        volume = server.get("volumes", "data", "ns")
        assert volume is not None
        assert volume["status"]["node"] == "node-1"
        assert volume["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert volume["metadata"]["generation"] == 1  # kopf's writes are not spec changes

        async with http.client.delete(f"{VOLUMES}/data") as response:
            assert response.status == 200
        await eventually(lambda: server.get("volumes", "data", "ns") is None)
        assert deleted == ["data"]
        await eventually(lambda: [  # kopf posts Events in the background
            (e["reason"], e["message"], e["involvedObject"]["name"])
            for e in server.all("events", group="")] == [("Placed", "placed on node-1", "data")])
