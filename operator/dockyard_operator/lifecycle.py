"""The node lifecycle handlers: notice lost nodes and move their containers (kopf, thin).

`nodeloss` decides. Each node agent renews a Lease labelled `dockyard.dev/node`; a kopf
index keeps each node's last renewal, and a timer on every DockyardNode compares it with
the clock each second. A node's clock starts when this replica starts watching it: a
restarted operator, or a standby replica taking over (its index went stale while kopf
peering paused it), gives every node the whole grace to show a renewal, since it did not
witness the silence before. When the lease is older than the grace, the node is marked
`NotReady` (an Event `NodeNotReady` on it) and its Containers are evicted:
- those with restart policy `Always` or `OnFailure` are unbound (status.node cleared, the
  routing label removed, phase `Pending`), and the scheduling handler binds them again
  on a ready node; Event `NodeLost`;
- the others end `Failed` with reason NodeLost, unbound, and without the node agent's
  finalizer (no agent will run their cleanup).
A node is left out of scheduling from the moment it is found lost (the `lost` set in the
memo), before the index shows it NotReady. Its agent makes it Ready again when it
renews; it is schedulable again once its lease is fresh.

A timer runs in one operator replica only (kopf peering), so two replicas never evict
twice.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any, cast

import kopf

from dockyard_api.container import RestartPolicy
from dockyard_api.kube import FAILURES, ApiError, KubeClient, condition, object_key, path
from dockyard_operator import metrics
from dockyard_operator.binding import GROUP, NODE_LABEL, VERSION, Bindings
from dockyard_operator.nodeloss import DEFAULT_GRACE, Binding, evictions, lost_nodes, renew_time

AGENT_FINALIZER = "dockyard.dev/node-agent"
CHECK_EVERY = 1.0  # seconds between two looks at a node's lease
WATCH_GAP = 5 * CHECK_EVERY  # a longer pause between two looks: we were not watching
EVICTING_AT_ONCE = 16  # Containers unbound concurrently (each is two writes)


def register(registry: kopf.OperatorRegistry, *,
             grace: datetime.timedelta = DEFAULT_GRACE) -> None:
    """Add the node lifecycle handlers to `registry`."""

    @kopf.on.startup(id="lifecycle", registry=registry)
    def remember(memo: kopf.Memo, **_: Any) -> None:
        memo.setdefault("watching", {})  # node -> (since when, last look: monotonic)

    @kopf.index("coordination.k8s.io", "v1", "leases", id="leases", registry=registry,
                labels={NODE_LABEL: kopf.PRESENT})
    def leases(*, body: kopf.Body, **_: Any) -> dict[str, datetime.datetime | None]:
        return {body["metadata"]["labels"][NODE_LABEL]: renew_time(body)}

    @kopf.timer(GROUP, VERSION, "dockyardnodes", id="heartbeat", interval=CHECK_EVERY,
                registry=registry)
    async def heartbeat(*, name: str, body: kopf.Body, memo: kopf.Memo,
                        logger: kopf.Logger, **kwargs: Any) -> None:
        # A node is given the whole grace from when this replica started watching it: one
        # that was down, paused as a standby (its index stale meanwhile) or not yet filled
        # must not take the silence it did not witness for a lost heartbeat, as the node
        # lifecycle controller starts each node's clock when it first sees it.
        now = datetime.datetime.now(datetime.UTC)
        watching: dict[str, tuple[datetime.datetime, float]] = memo["watching"]
        looked = asyncio.get_running_loop().time()
        since, last = watching.get(name, (now, looked))
        if looked - last > WATCH_GAP:
            since = now  # a gap in our watch: start the clock again
        watching[name] = (since, looked)
        renewed = max(next(iter(kwargs["leases"].get(name, [])), None) or since, since)
        lost: set[str] = memo["lost"]
        if not lost_nodes({name: renewed}, now, grace):
            lost.discard(name)
            metrics.NODE_READY.labels(name).set(1)
            return
        metrics.NODE_READY.labels(name).set(0)
        kube: KubeClient = memo["kube"]
        if name not in lost:
            lost.add(name)
            kopf.warn(body, reason="NodeNotReady",
                      message=f"no heartbeat since {renewed:%H:%M:%S}: node marked NotReady")
        if (body.get("status") or {}).get("phase") != "NotReady":
            await kube.patch(path(GROUP, VERSION, "dockyardnodes", name=name,
                                  subresource="status"), {"status": {
                                      "phase": "NotReady", "conditions": [condition(
                                          "Ready", "False", "NodeLost",
                                          f"no heartbeat since {renewed:%H:%M:%S} "
                                          f"(grace {grace.total_seconds():.0f} s)", now)]}})
        try:
            await _evict(kube, name, memo["bindings"])
        except FAILURES as e:
            logger.warning(f"evicting the containers of node {name} failed: {e}; retrying")


async def _evict(kube: KubeClient, node: str, bindings: Bindings) -> None:
    """Unbind (or fail) the Containers bound to the lost `node`."""
    bound = await kube.list(path(GROUP, VERSION, "containers"),
                            label_selector=f"{NODE_LABEL}={node}")
    by_key = {object_key(body): kopf.Body(cast(kopf.RawBody, body)) for body in bound}
    decided = evictions((Binding(key, node, _policy(body)) for key, body in by_key.items()),
                        {node})
    async with bindings.lock:  # what the node held is free for the scheduler now
        for key in (*decided.reschedule, *decided.fail):
            bindings.forget(key)
    metrics.EVICTIONS.labels("reschedule").inc(len(decided.reschedule))
    metrics.EVICTIONS.labels("fail").inc(len(decided.fail))
    gate = asyncio.Semaphore(EVICTING_AT_ONCE)

    async def reschedule(body: kopf.Body) -> None:
        async with gate:
            await _write(kube, body, status={
                "node": None, "phase": "Pending", "containerID": None, "pid": None,
                "message": f"node {node} was lost; rescheduling"})
        kopf.warn(body, reason="NodeLost", message=f"node {node} was lost: rescheduling")

    async def fail(body: kopf.Body) -> None:
        finalizers = [f for f in body["metadata"].get("finalizers") or []
                      if f != AGENT_FINALIZER]
        async with gate:
            await _write(kube, body, status={
                "phase": "Failed", "pid": None,
                "message": f"NodeLost: node {node} was lost; restartPolicy is Never"},
                metadata={"finalizers": finalizers})
        kopf.warn(body, reason="NodeLost",
                  message=f"node {node} was lost: failed (restartPolicy Never)")

    await asyncio.gather(*(reschedule(by_key[key]) for key in decided.reschedule),
                         *(fail(by_key[key]) for key in decided.fail))


async def _write(kube: KubeClient, body: kopf.Body, *, status: dict[str, Any],
                 metadata: Mapping[str, Any] | None = None) -> None:
    """Write `status`, then unbind (remove the routing label): the scheduler, woken by
    the label's removal, then finds the status already unbound."""
    meta = body["metadata"]
    url = path(GROUP, VERSION, "containers", namespace=meta.get("namespace"),
               name=meta["name"])
    try:
        await kube.patch(url + "/status", {"status": status})
        await kube.patch(url, {"metadata": {**(metadata or {}), "labels": {NODE_LABEL: None}}})
    except ApiError as e:
        if e.status != 404:  # deleted meanwhile: nothing left to move
            raise


def _policy(body: Mapping[str, Any]) -> RestartPolicy:
    return RestartPolicy((body.get("spec") or {}).get("restartPolicy") or "Never")

