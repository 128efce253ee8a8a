"""The scheduler's decisions: filters, spreading, reasons, and a burst placed in order."""

from __future__ import annotations

from collections import Counter

from dockyard_api import Container, DockyardNode
from dockyard_api.manifests import parse
from dockyard_operator.scheduling import Demand, Node, Placement, Request, place, place_all

GIB = 1 << 30
NODES = [Node("n1", labels={"disk": "ssd"}, capacity=Demand(2000, 4 * GIB, 1000)),
         Node("n2", labels={"disk": "hdd"}, capacity=Demand(2000, 4 * GIB, 1000)),
         Node("n3", labels={"disk": "ssd"}, capacity=Demand(4000, 8 * GIB, 1000))]


def _request(name: str = "ns/c", cpu: int = 0, memory: int = 0, **extra: object) -> Request:
    return Request(name, Demand(cpu, memory, 0, 1), **extra)  # type: ignore[arg-type]


def test_the_least_loaded_node_wins() -> None:
    placed = {"n1": Demand(1000, GIB, 0, 1), "n3": Demand(3000, GIB, 0, 1)}
    assert place(_request(cpu=500), NODES, placed) == Placement("n2")


def test_node_name_and_node_selector_filter() -> None:
    assert place(_request(node_name="n3"), NODES, {}).node == "n3"
    assert place(_request(node_selector={"disk": "hdd"}), NODES, {}).node == "n2"
    none = place(_request(node_selector={"disk": "nvme"}), NODES, {})
    assert none == Placement(None, "0/3 nodes are available: 3 do not match the nodeSelector")


def test_capacity_counts_what_is_placed_and_the_reason_counts_each_cause() -> None:
    nodes = [*NODES, Node("n4", ready=False), Node("n5", unschedulable=True)]
    placed = {"n1": Demand(0, 4 * GIB, 0, 3), "n3": Demand(0, 7 * GIB, 0, 2)}
    decision = place(_request(memory=2 * GIB, node_selector={"disk": "ssd"}), nodes, placed)
    assert decision == Placement(None, "0/5 nodes are available: 1 do not match the "
                                       "nodeSelector, 2 insufficient memory, 1 not ready, "
                                       "1 unschedulable")


def test_a_node_without_reported_capacity_is_not_limited() -> None:
    assert place(_request(cpu=64000), [Node("big")], {"big": Demand(10**6, 0, 0, 9)}).node \
        == "big"


def test_a_container_follows_its_unmovable_volume() -> None:
    request = _request(volume_nodes=frozenset({"n2"}), pinned_volumes=1)
    assert place(request, NODES, {"n2": Demand(1900, 0, 0, 9)}).node == "n2"
    split = _request(volume_nodes=frozenset({"n1", "n2"}), pinned_volumes=2)
    assert place(split, NODES, {}).reason == \
        "0/3 nodes are available: 3 do not hold its volumes (migration: Never)"


def test_a_burst_spreads_over_the_nodes_by_their_size() -> None:
    burst = [_request(f"ns/c{i}", cpu=100, memory=128 << 20) for i in range(80)]
    decisions = place_all(burst, NODES, {})
    counts = Counter(d.node for d in decisions.values())
    assert counts == {"n1": 20, "n2": 20, "n3": 40}  # n3 is twice their size, all full
    assert place_all(burst, NODES, {}) == decisions  # the same input, the same decisions


def test_a_burst_stops_where_the_nodes_are_full() -> None:
    burst = [_request(f"ns/c{i}", cpu=1000) for i in range(10)]
    decisions = place_all(burst, NODES, {})
    assert sum(d.node is not None for d in decisions.values()) == 8
    assert decisions["ns/c9"].reason == "0/3 nodes are available: 3 insufficient cpu"


def test_requests_and_nodes_from_the_api_objects() -> None:
    container = parse({
        "apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"image": "busybox", "resources": {"cpu": "500m", "memory": "256Mi",
                                                   "pids": 64},
                 "nodeSelector": {"disk": "ssd"}}})
    assert isinstance(container, Container)
    request = Request.of(container)
    assert request == Request("shop/web", Demand(500, 256 << 20, 64, 1),
                              node_selector={"disk": "ssd"})
    node = parse({
        "apiVersion": "dockyard.dev/v1alpha1", "kind": "DockyardNode",
        "metadata": {"name": "n1", "labels": {"disk": "ssd"}},
        "status": {"phase": "Ready", "capacity": {"cpu": 2, "memory": "4Gi"}}})
    assert isinstance(node, DockyardNode)
    assert Node.of(node) == Node("n1", labels={"disk": "ssd"}, capacity=Demand(2000, 4 * GIB))
