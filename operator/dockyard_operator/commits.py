"""The Commit handler: send each Commit to the node that holds its container (kopf, thin).

A commit runs where the container's filesystem is. The operator writes the container's
node into the Commit (`status.node`, phase `Pending`) and labels it `dockyard.dev/node`,
the label that node's agent watches; the agent executes it (`dockyard_shim.agent.commits`).
A Commit whose container does not exist fails; one whose container is not bound yet
waits (Event `WaitingForContainer`, retried every 2 s).
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard_api import Commit
from dockyard_api.kube import ApiError, KubeClient, path
from dockyard_api.manifests import parse_as
from dockyard_operator.binding import GROUP, NODE_LABEL, VERSION

RETRY_UNBOUND = 2.0  # seconds before looking again for the container's node


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Commit handler to `registry`."""

    @kopf.on.resume(GROUP, VERSION, "commits", id="route", registry=registry)
    @kopf.on.create(GROUP, VERSION, "commits", id="route", registry=registry)
    async def route(*, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        commit = parse_as(Commit, dict(body), served=True)
        if commit.status is not None and commit.status.node:
            return  # routed already
        kube: KubeClient = memo["kube"]
        namespace = commit.metadata.namespace
        try:
            container = await kube.get(path(GROUP, VERSION, "containers",
                                            namespace=namespace, name=commit.spec.container))
        except ApiError as e:
            if e.status != 404:
                raise
            message = f"no Container {namespace}/{commit.spec.container} to commit"
            patch.status["phase"] = "Failed"
            kopf.warn(body, reason="ContainerNotFound", message=message)
            return
        node = (container.get("status") or {}).get("node")
        if not node:
            message = f"waiting for Container {commit.spec.container} to be bound to a node"
            kopf.info(body, reason="WaitingForContainer", message=message)
            raise kopf.TemporaryError(message, delay=RETRY_UNBOUND)
        patch.status["node"] = node
        patch.status["phase"] = "Pending"
        patch.metadata.labels[NODE_LABEL] = node
        kopf.info(body, reason="Routed", message=f"runs on node {node}, with the container")
