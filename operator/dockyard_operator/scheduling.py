"""Where a Container runs: nodes and what is already placed on them -> a node, or why none.

As kube-scheduler does it, in two steps:
- **filter**: a node is a candidate when it is ready and schedulable, is the container's
  `nodeName` if it has one, carries every label of its `nodeSelector`, holds its `local`
  volumes that may not move (`migration: Never`), and has room for its cpu, memory and
  pids limits beside what is placed there already (a node that reports no capacity for a
  resource is not limited in it);
- **score**: among the candidates, the least loaded after placing it (the largest share of
  cpu or memory it would have in use), then the one with fewer containers, then the name,
  so that a burst of creates spreads over the nodes and every decision is reproducible.

When no node is a candidate, the reason counts the nodes by what excluded each, as
kube-scheduler's event does: `0/3 nodes are available: 1 not ready, 2 insufficient
memory`. `place_all` places a burst in order, each decision counting the ones before.

Pure computation: the operator reads the objects and writes the binding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dockyard_api import Container
from dockyard_api.container import ContainerSpec
from dockyard_api.node import DockyardNode, NodePhase
from dockyard_api.quantity import cpu_millis, memory_bytes


@dataclass(frozen=True)
class Demand:
    """Resources a container is limited to, or a node has or has given out; 0: none."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    pids: int = 0
    containers: int = 0

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.cpu_millis + other.cpu_millis,
                      self.memory_bytes + other.memory_bytes,
                      self.pids + other.pids, self.containers + other.containers)


@dataclass(frozen=True)
class Node:
    """A node as the scheduler sees it."""

    name: str
    ready: bool = True
    unschedulable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Demand = Demand()
    """0 for a resource: the node reports no limit in it."""

    @classmethod
    def of(cls, node: DockyardNode) -> Node:
        status = node.status
        capacity = status.capacity if status else None
        return cls(
            name=node.metadata.name or "",
            ready=status is not None and status.phase is NodePhase.READY,
            unschedulable=node.spec.unschedulable,
            labels=dict(node.metadata.labels or {}),
            capacity=Demand(
                cpu_millis(capacity.cpu) if capacity and capacity.cpu else 0,
                memory_bytes(capacity.memory) if capacity and capacity.memory else 0,
                (capacity.pids or 0) if capacity else 0))


@dataclass(frozen=True)
class Request:
    """A container to place."""

    name: str
    demand: Demand = Demand(containers=1)
    node_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    volume_nodes: frozenset[str] = frozenset()
    """Nodes holding `local` volumes of the container that may not move: it must run on
    the one node in here (none or several: it cannot be placed)."""
    pinned_volumes: int = 0
    """How many such volumes it mounts (0: volumes do not constrain it)."""

    @classmethod
    def of(cls, container: Container, volume_nodes: Iterable[str] = (),
           pinned_volumes: int = 0) -> Request:
        spec: ContainerSpec = container.spec
        limits = spec.resources
        return cls(
            name=f"{container.metadata.namespace}/{container.metadata.name}",
            demand=Demand(cpu_millis(limits.cpu) if limits.cpu else 0,
                          memory_bytes(limits.memory) if limits.memory else 0,
                          limits.pids or 0, 1),
            node_name=spec.node_name,
            node_selector=dict(spec.node_selector or {}),
            volume_nodes=frozenset(volume_nodes), pinned_volumes=pinned_volumes)


@dataclass(frozen=True)
class Placement:
    node: str | None
    """The chosen node; None when there is none."""
    reason: str = ""
    """Why none (kube-scheduler's wording), or empty."""


def place(request: Request, nodes: Iterable[Node], placed: Mapping[str, Demand]) -> Placement:
    """The node for `request`, given what each node has placed already."""
    candidates: list[Node] = []
    excluded: Counter[str] = Counter()
    nodes = list(nodes)
    for node in nodes:
        why = _excluded(request, node, placed.get(node.name, Demand()))
        if why:
            excluded[why] += 1
        else:
            candidates.append(node)
    if not candidates:
        detail = ", ".join(f"{count} {why}" for why, count in sorted(excluded.items()))
        return Placement(None, f"0/{len(nodes)} nodes are available"
                               + (f": {detail}" if detail else ""))
    best = min(candidates, key=lambda node: _score(request, node, placed.get(node.name,
                                                                              Demand())))
    return Placement(best.name)


def place_all(requests: Iterable[Request], nodes: Iterable[Node],
              placed: Mapping[str, Demand]) -> dict[str, Placement]:
    """Place a burst in order; each placement counts on its node for the next ones."""
    nodes = list(nodes)
    load = dict(placed)
    decisions = {}
    for request in requests:
        decision = place(request, nodes, load)
        decisions[request.name] = decision
        if decision.node is not None:
            load[decision.node] = load.get(decision.node, Demand()) + request.demand
    return decisions


def _excluded(request: Request, node: Node, used: Demand) -> str:
    """Why `node` cannot take `request` ("" if it can), in kube-scheduler's words."""
    after = used + request.demand
    checks = (
        (request.node_name is None or node.name == request.node_name,
         "not the requested node (nodeName)"),
        (node.ready, "not ready"),
        (not node.unschedulable, "unschedulable"),
        (all(node.labels.get(k) == v for k, v in request.node_selector.items()),
         "do not match the nodeSelector"),
        (not request.pinned_volumes or request.volume_nodes == {node.name},
         "do not hold its volumes (migration: Never)"),
        (not node.capacity.cpu_millis or after.cpu_millis <= node.capacity.cpu_millis,
         "insufficient cpu"),
        (not node.capacity.memory_bytes or after.memory_bytes <= node.capacity.memory_bytes,
         "insufficient memory"),
        (not node.capacity.pids or after.pids <= node.capacity.pids, "insufficient pids"),
    )
    return next((why for holds, why in checks if not holds), "")


def _score(request: Request, node: Node, used: Demand) -> tuple[float, int, str]:
    after = used + request.demand
    shares = [need / have for need, have in ((after.cpu_millis, node.capacity.cpu_millis),
                                             (after.memory_bytes, node.capacity.memory_bytes))
              if have]
    return (max(shares, default=0.0), after.containers, node.name)

