"""The operator binds Containers to nodes through the test API server, with real kopf."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from dockyard_operator.app import registry
from dockyard_operator.binding import NODE_LABEL
from tests.kube.apiserver import ApiServer
from tests.kube.kopfrun import MERGE, eventually, running

API = "/apis/dockyard.dev/v1alpha1"
DIGEST = "sha256:" + "c" * 64
BUSYBOX = f"busybox@{DIGEST}"  # written with its digest: no registry is asked



async def _node(client: aiohttp.ClientSession, name: str, cpu: str, **labels: str) -> None:
    body = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "DockyardNode",
            "metadata": {"name": name, "labels": labels}}
    async with client.post(f"{API}/dockyardnodes", json=body) as response:
        assert response.status == 200, await response.text()
    status = {"status": {"phase": "Ready", "capacity": {"cpu": cpu, "memory": "8Gi"}}}
    async with client.patch(f"{API}/dockyardnodes/{name}/status", json=status,
                            headers=MERGE) as response:
        assert response.status == 200, await response.text()


async def _container(client: aiohttp.ClientSession, name: str, **spec: Any) -> None:
    body = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": name},
            "spec": {"resources": {"cpu": "250m"},
                     **({} if "imageRef" in spec else {"image": BUSYBOX}), **spec}}
    async with client.post(f"{API}/namespaces/shop/containers", json=body) as response:
        assert response.status == 200, await response.text()


def _bound(server: ApiServer) -> dict[str, str | None]:
    return {c["metadata"]["name"]: (c.get("status") or {}).get("node")
            for c in server.all("containers")}


@pytest.mark.asyncio
async def test_a_burst_of_containers_is_bound_and_spread_by_node_size(cluster: Any) -> None:
    server, http = cluster
    client = http.client
    await _node(client, "n1", "2")
    await _node(client, "n2", "2")
    await _node(client, "n3", "4", disk="ssd")
    scheduled = REGISTRY.get_sample_value("dockyard_scheduling_attempts_total",
                                          {"result": "scheduled"}) or 0.0
    async with running(registry(metrics_listen="127.0.0.1:0"), str(http.url)) as memo:
        for i in range(32):
            await _container(client, f"c{i}")
        await eventually(lambda: all(_bound(server).values()) and len(_bound(server)) == 32,
                         timeout=30)
        # Each binding is counted, and its latency observed, on /metrics.
        port = memo["metrics"].server_port
        async with aiohttp.ClientSession() as scraper, \
                scraper.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        found = re.search(r'^dockyard_scheduling_attempts_total\{result="scheduled"\} (\S+)$',
                          text, re.M)
        assert found is not None
        assert float(found.group(1)) == scheduled + 32
        assert "dockyard_scheduling_latency_seconds_count" in text
        # 8 CPUs in all, 32 x 250m: every node full, none over.
        assert Counter(_bound(server).values()) == {"n1": 8, "n2": 8, "n3": 16}
        for container in server.all("containers"):
            assert container["metadata"]["labels"][NODE_LABEL] == container["status"]["node"]
            assert container["status"]["phase"] == "Pending"
            assert container["status"]["imageDigest"] == DIGEST


@pytest.mark.asyncio
async def test_a_container_that_fits_nowhere_waits_and_says_why(cluster: Any) -> None:
    server, http = cluster
    client = http.client
    await _node(client, "n1", "2")
    async with running(registry(), str(http.url)):
        await _container(client, "fast", nodeSelector={"disk": "ssd"})

        def warned() -> bool:
            return any(e["reason"] == "FailedScheduling" and e["message"] ==
                       "0/1 nodes are available: 1 do not match the nodeSelector"
                       for e in server.all("events", group=""))
        await eventually(warned)
        assert _bound(server) == {"fast": None}
        await _node(client, "n2", "2", disk="ssd")  # room appears: the retry binds it
        await eventually(lambda: _bound(server) == {"fast": "n2"}, timeout=20)


@pytest.mark.asyncio
async def test_a_container_of_an_image_waits_for_its_pin_and_records_it(cluster: Any) -> None:
    server, http = cluster
    client = http.client
    await _node(client, "n1", "2")
    pinned = "sha256:" + "d" * 64
    async with running(registry(), str(http.url)):
        await _container(client, "tool", imageRef="tools")

        def waiting() -> bool:
            return any(e["reason"] == "WaitingForImage" for e in server.all("events", group=""))
        await eventually(waiting)
        assert _bound(server) == {"tool": None}
        image = {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Image",
                 "metadata": {"name": "tools"},
                 "spec": {"reference": "registry.local:5000/tools:3", "digest": pinned}}
        async with client.post(f"{API}/namespaces/shop/images", json=image) as response:
            assert response.status == 200, await response.text()
        await eventually(lambda: _bound(server) == {"tool": "n1"})
        tool = server.get("containers", "tool", "shop")
        assert tool is not None
        assert tool["status"]["imageDigest"] == pinned
