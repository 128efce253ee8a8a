"""A node agent's presence in the cluster: its DockyardNode, and the Lease it renews.

Registration creates the DockyardNode (or takes over the one a previous run left) and
writes its status: Ready, with the machine's capacity and facts. The heartbeat renews a
`coordination.k8s.io` Lease named after the node every `renew_every` seconds, as the
kubelet renews its node lease; the operator marks a node whose lease went stale NotReady
and moves its containers. A node found NotReady while its agent is alive (its renewals
were late, or it came back) is made Ready again by the next renewal.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dockyard_api.kube import FAILURES, ApiError, KubeClient, condition, micro_time, path
from dockyard_common import get_logger
from dockyard_shim.agent import metrics
from dockyard_shim.agent.converging import GROUP, NODE_LABEL, VERSION, AgentConfig
from dockyard_shim.agent.facts import node_status

log = get_logger(__name__)
LEASES = ("coordination.k8s.io", "v1", "leases")


async def register(kube: KubeClient, config: AgentConfig) -> None:
    """Create or take over the node's DockyardNode, and report it Ready."""
    nodes = path(GROUP, VERSION, "dockyardnodes")
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DockyardNode",
            "metadata": {"name": config.node, "labels": {NODE_LABEL: config.node}}}
    try:
        await kube.create(nodes, body)
    except ApiError as e:
        if e.status != 409:
            raise
    status = {**node_status(address=config.address, capacity=config.capacity),
              "conditions": [condition("Ready", "True", "AgentStarted",
                                       "the node agent registered the node")]}
    await kube.patch(path(GROUP, VERSION, "dockyardnodes", name=config.node,
                          subresource="status"), {"status": status})
    log.info("node registered", node=config.node, capacity=status["capacity"])


async def renew(kube: KubeClient, config: AgentConfig) -> None:
    """Renew (or create) the node's Lease once; make the node Ready if it is not."""
    group, version, plural = LEASES
    now = micro_time()
    url = path(group, version, plural, namespace=config.namespace, name=config.node)
    try:
        await kube.patch(url, {"spec": {"holderIdentity": config.node, "renewTime": now,
                                        "leaseDurationSeconds": config.lease_seconds}})
    except ApiError as e:
        if e.status != 404:
            raise
        await kube.create(path(group, version, plural, namespace=config.namespace),
                          _lease(config, now))
    node = await kube.get(path(GROUP, VERSION, "dockyardnodes", name=config.node))
    if (node.get("status") or {}).get("phase") != "Ready":
        await kube.patch(path(GROUP, VERSION, "dockyardnodes", name=config.node,
                              subresource="status"), {"status": {
                                  "phase": "Ready", "conditions": [condition(
                                      "Ready", "True", "HeartbeatResumed",
                                      "the node agent renews the node's lease again")]}})
        log.info("node ready again", node=config.node)


async def beat(kube: KubeClient, config: AgentConfig) -> None:
    """Renew the Lease every `renew_every` seconds until cancelled; a failed renewal is
    logged and retried at the next beat (the lease's duration allows a few)."""
    while True:
        await asyncio.sleep(config.renew_every)
        try:
            await renew(kube, config)
            metrics.RENEWALS.labels("renewed").inc()
        except FAILURES as e:
            metrics.RENEWALS.labels("failed").inc()
            log.warning("lease not renewed", node=config.node, error=str(e))


def _lease(config: AgentConfig, now: str) -> dict[str, Any]:
    group, version, _ = LEASES
    return {"apiVersion": f"{group}/{version}", "kind": "Lease",
            "metadata": {"name": config.node, "namespace": config.namespace,
                         "labels": {NODE_LABEL: config.node}},
            "spec": {"holderIdentity": config.node, "leaseDurationSeconds":
                     config.lease_seconds, "acquireTime": now, "renewTime": now}}

