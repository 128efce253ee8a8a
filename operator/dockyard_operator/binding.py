"""The scheduling handlers: bind each new Container to a node (kopf, thin).

The decisions are `scheduling.place`'s. What the handlers add is the state it needs:
- the nodes, from a kopf index of DockyardNode objects;
- what each node holds, from the Containers bound so far (`Bindings`, in the operator's
  memo): filled from every Container event that shows a node, and updated at once when a
  handler binds one, so that a burst of creates handled concurrently counts each earlier
  decision before the API server has echoed it back. An event without a node does not
  unbind: it may be an echo of kopf's own write, older than the binding (the first run of
  the burst test put 9 containers of 250m on a 2-CPU node that way).

A container's `local` volumes hold it to their node unless they may migrate; binding it
elsewhere marks them `Migrating` there (`volumes`), and the new node's agent moves the
data before the container starts. A Container unbound because its node was lost
(`lifecycle`) is scheduled again, keeping its digest.

Binding writes `status.node`, `status.phase: Pending`, `status.imageDigest` (the digest
the container runs: its Image's pin, which it waits for, or its own reference's, resolved
once for the cluster) and the label `dockyard.dev/node`, which the node agents watch with
a server-side label selector. Every decision is an Event on the Container: `Scheduled`
(and `MigratingVolume`), or `FailedScheduling` with kube-scheduler's reason,
after which kopf retries (a node may join or free room).
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field, replace
from typing import Any

import kopf

from dockyard_api import Container, DockyardNode, Volume
from dockyard_api.kube import KubeClient, object_key, path
from dockyard_api.manifests import parse_as
from dockyard_operator import metrics
from dockyard_operator.pinning import ResolveError, resolve
from dockyard_operator.scheduling import Demand, Node, Request, place
from dockyard_operator.volumes import Placed, constraints, moves

GROUP, VERSION = "dockyard.dev", "v1alpha1"
NODE_LABEL = "dockyard.dev/node"
RETRY_UNSCHEDULABLE = 5.0  # seconds before kopf tries a container that fits nowhere again
RETRY_IMAGE = 2.0  # seconds before looking again for the digest a container is to run


@dataclass
class Bindings:
    """Which node each Container is bound to, with what it demands."""

    bound: dict[str, tuple[str, Demand]] = field(default_factory=dict)
    volumes: dict[str, Placed] = field(default_factory=dict)
    """Volumes this operator placed or moved, by `namespace/name`."""
    seen: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    """The node and generation each Container's entry in `bound` was read from."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def forget(self, key: str) -> None:
        """The Container `key` holds nothing any more (deleted, or unbound)."""
        self.bound.pop(key, None)
        self.seen.pop(key, None)

    def load(self) -> dict[str, Demand]:
        """What each node holds."""
        held: dict[str, Demand] = {}
        for node, demand in self.bound.values():
            held[node] = held.get(node, Demand()) + demand
        return held

    async def bind(self, container: Container, nodes: list[Node],
                   volumes: dict[str, Placed]
                   ) -> tuple[str, dict[str, dict[str, Any]]] | tuple[None, str]:
        """Place `container` among `nodes` and count it there at once: the node and the
        status its volumes get (`volumes.moves`), or None and why it fits nowhere.
        `volumes` is the index's view; this operator's own moves not yet echoed win."""
        async with self.lock:
            for key, mine in list(self.volumes.items()):
                if volumes.get(key, mine).node == mine.node:
                    self.volumes.pop(key)  # echoed (or gone): the index knows
                else:
                    volumes[key] = mine
            request = Request.of(container, *constraints(container, volumes))
            decision = place(request, nodes, self.load())
            if decision.node is None:
                return None, decision.reason
            self.bound[request.name] = (decision.node, request.demand)
            changes = moves(container, decision.node, volumes)
            for key in changes:
                self.volumes[key] = replace(volumes[key], node=decision.node)
            return decision.node, changes


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the scheduling handlers to `registry`."""

    @kopf.on.startup(id="bindings", registry=registry)
    def remember(memo: kopf.Memo, **_: Any) -> None:
        # Made here, in the operator's memo: each object's handlers see a shallow copy of
        # it, so what they add themselves is theirs alone.
        memo.setdefault("bindings", Bindings())
        memo.setdefault("resolved", {})  # reference -> digest, for the whole cluster
        memo.setdefault("resolving", asyncio.Lock())  # one resolution at a time
        memo.setdefault("lost", set())  # nodes found lost, before the index shows it

    @kopf.index(GROUP, VERSION, "images", id="pins", registry=registry)
    def pins(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, str]:
        digest = (body.get("status") or {}).get("digest")
        return {f"{namespace}/{name}": digest} if digest else {}

    @kopf.index(GROUP, VERSION, "volumes", id="volumes", registry=registry)
    def volumes(*, namespace: str | None, name: str, body: kopf.Body, **_: Any
                ) -> dict[str, Placed]:
        return {f"{namespace}/{name}": Placed.of(parse_as(Volume, dict(body), served=True))}

    @kopf.index(GROUP, VERSION, "dockyardnodes", id="nodes", registry=registry)
    def nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, Node]:
        return {name: Node.of(parse_as(DockyardNode, dict(body), served=True))}

    # async: kopf runs a plain function in a worker thread, and `Bindings` is the event
    # loop's (the scheduler walks it); a thread writing it raced with that walk.
    @kopf.on.event(GROUP, VERSION, "containers", id="observe", registry=registry)
    async def observe(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        body = event["object"]
        key = object_key(body)
        node = (body.get("status") or {}).get("node")
        bindings: Bindings = memo["bindings"]
        if event["type"] == "DELETED":
            bindings.forget(key)
        elif node:  # one without a node may be bound here already, its write not yet seen
            generation = body["metadata"].get("generation")
            seen = (str(node), generation if isinstance(generation, int) else None)
            if bindings.seen.get(key) != seen:  # a container's demand is in its spec
                container = parse_as(Container, dict(body), served=True)
                bindings.bound[key] = (node, Request.of(container).demand)
                bindings.seen[key] = seen

    @kopf.on.resume(GROUP, VERSION, "containers", id="schedule", registry=registry)
    @kopf.on.create(GROUP, VERSION, "containers", id="schedule", registry=registry)
    @kopf.on.update(GROUP, VERSION, "containers", id="schedule", registry=registry,
                    labels={NODE_LABEL: kopf.ABSENT})  # unbound: its node was lost
    async def schedule(*, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                       **kwargs: Any) -> None:
        nodes: kopf.Index[str, Node] = kwargs["nodes"]  # the indexes, passed by their ids
        container = parse_as(Container, dict(body), served=True)
        if container.status is not None and container.status.node:
            return  # bound already (a resumed operator)
        digest = await _digest(body, container, kwargs["pins"], memo)
        lost: set[str] = memo["lost"]
        known = [node for store in nodes.values() for node in store if node.name not in lost]
        placed = {key: volume for key, store in kwargs["volumes"].items() for volume in store}
        node, changes = await memo["bindings"].bind(container, known, placed)
        if node is None:
            metrics.SCHEDULING.labels("unschedulable").inc()
            kopf.warn(body, reason="FailedScheduling", message=changes)
            raise kopf.TemporaryError(changes, delay=RETRY_UNSCHEDULABLE)
        metrics.SCHEDULING.labels("scheduled").inc()
        created = container.metadata.creation_timestamp
        if created is not None:
            metrics.BINDING_LATENCY.observe(
                (datetime.datetime.now(datetime.UTC) - created).total_seconds())
        for key, status in changes.items():
            await _place_volume(memo["kube"], key, status)
            if status["phase"] == "Migrating":
                metrics.VOLUME_MOVES.inc()
                kopf.info(body, reason="MigratingVolume", message=f"volume {key} moves from "
                          f"node {status['sourceNode']} to node {node}")
        patch.status["node"] = node
        patch.status["phase"] = "Pending"
        patch.status["imageDigest"] = digest
        patch.metadata.labels[NODE_LABEL] = node
        kopf.info(body, reason="Scheduled", message=f"bound to node {node}")


async def _place_volume(kube: KubeClient, key: str, status: dict[str, Any]) -> None:
    namespace, name = key.split("/", 1)
    await kube.patch(path(GROUP, VERSION, "volumes", namespace=namespace, name=name,
                          subresource="status"), {"status": status})


async def _digest(body: kopf.Body, container: Container, pins: kopf.Index[str, str],
                  memo: kopf.Memo) -> str:
    """The digest `container` runs: its Image's pin, the digest written in its reference,
    or its reference's tag resolved once for the whole cluster (kept in the memo)."""
    spec, namespace = container.spec, container.metadata.namespace
    if container.status is not None and container.status.image_digest:
        return str(container.status.image_digest)  # rescheduled: the same bytes as before
    if spec.image_ref is not None:
        key = f"{namespace}/{spec.image_ref}"
        for digest in pins.get(key, []):
            return digest
        metrics.SCHEDULING.labels("waiting_for_image").inc()
        message = f"waiting for Image {spec.image_ref} to be pinned to a digest"
        kopf.info(body, reason="WaitingForImage", message=message)
        raise kopf.TemporaryError(message, delay=RETRY_IMAGE)
    reference = spec.image or ""
    written = reference.partition("@")[2]
    if written:
        return written
    resolved: dict[str, str] = memo["resolved"]
    async with memo["resolving"]:  # two containers of one new tag must get one answer
        if reference not in resolved:
            try:
                resolved[reference] = (await asyncio.to_thread(resolve, reference)).digest
            except ResolveError as e:
                kopf.warn(body, reason="ResolveFailed", message=str(e))
                raise kopf.TemporaryError(str(e), delay=RETRY_IMAGE) from e
        return resolved[reference]
