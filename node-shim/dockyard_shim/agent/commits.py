"""Commits, executed by the node that holds the container (docker commit, declared).

The operator routes a Commit to its container's node (label `dockyard.dev/node`, as a
Container); that node's agent, watching with the same label selector, counts the
container's changes (docker diff), commits them as a new image on the daemon, pushes it
to `spec.reference` when one is given, and records the result: the Commit's status (the
counts, the digest, the node) and the Image named by `spec.image` (`fromCommit`), pinned
to the digest. With a reference, the digest is the registry's (what every other node
pulls); without, the image stays on this node under its local manifest digest.

A commit that cannot run (the container is gone from the node, the push is refused) ends
`Failed` with the reason in a `Succeeded` condition; it is not retried: a Commit is a
one-off, as `docker commit` is.
"""

from __future__ import annotations

import collections
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from dockyard_api import Commit
from dockyard_api.converge import node_name
from dockyard_api.kube import ApiError, KubeClient, condition, path, time
from dockyard_api.manifests import parse_as
from dockyard_api.registries import pinned_reference
from dockyard_common import get_logger
from dockyard_shim.agent.converging import GROUP, VERSION, Agent
from dockyard_shim.daemon.client import Client, DaemonError
from dockyard_shim.daemon.storage import open_images
from dockyard_shim.errors import ShimError
from dockyard_shim.images.digest import sha256_of
from dockyard_shim.images.distribution import push
from dockyard_shim.images.transport import inspect_raw

log = get_logger(__name__)
_KINDS = {0: "changed", 1: "added", 2: "deleted"}  # the daemon's /changes, as Docker's


@dataclass(frozen=True)
class Committed:
    counts: dict[str, int]
    digest: str
    reference: str | None
    """`repository@digest` when the image was pushed."""


def execute(client: Client, root: Path, commit: Commit) -> Committed:
    """Count, commit and push (blocking: run it on a worker thread)."""
    spec, namespace = commit.spec, commit.metadata.namespace or "default"
    container = node_name(namespace, spec.container)
    changes = client.call("GET", f"/containers/{container}/changes")
    counted = collections.Counter(_KINDS[change["Kind"]] for change in changes)
    query = urllib.parse.urlencode({"container": container, "comment": spec.message,
                                    "author": spec.author, "pause": "1" if spec.pause else "0"})
    image_id = str(client.call("POST", f"/commit?{query}", timeout=None)["Id"])
    snapshots, images = open_images(root)
    try:
        if spec.reference is None:
            return Committed(dict(counted), images.get(image_id).manifest_digest, None)
        pushed = push(images, image_id, str(spec.reference))
    finally:
        images.close()
        snapshots.close()
    digest = sha256_of(inspect_raw(pushed))  # the registry's: what other nodes pull
    return Committed(dict(counted), digest, pinned_reference(str(spec.reference), digest))


def register(handlers: kopf.OperatorRegistry, root: Path) -> None:
    """Add the commit handler to the agent's `handlers`."""

    @kopf.on.resume(GROUP, VERSION, "commits", id="commit", registry=handlers)
    @kopf.on.create(GROUP, VERSION, "commits", id="commit", registry=handlers)
    async def commit(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        agent: Agent = memo["agent"]
        found = parse_as(Commit, dict(body), served=True)
        if found.status is not None and found.status.phase in ("Succeeded", "Failed"):
            return
        url = path(GROUP, VERSION, "commits", namespace=found.metadata.namespace,
                   name=found.metadata.name, subresource="status")
        await agent.kube.patch(url, {"status": {"phase": "Running"}})
        try:
            result = await agent.in_thread(lambda client: execute(client, root, found))
            await _record_image(agent.kube, found, result)
        except (DaemonError, ShimError, ApiError) as e:
            message = e.message if isinstance(e, DaemonError | ApiError) else str(e)
            await agent.kube.patch(url, {"status": {
                "phase": "Failed", "conditions": [_succeeded("False", "CommitFailed",
                                                             message)]}})
            log.warning("commit failed", commit=found.metadata.name, error=message)
            return
        await agent.kube.patch(url, {"status": {
            "phase": "Succeeded", "node": agent.config.node, "digest": result.digest,
            "added": result.counts.get("added", 0), "changed": result.counts.get("changed", 0),
            "deleted": result.counts.get("deleted", 0), "completedAt": time(),
            "conditions": [_succeeded("True", "Committed",
                                      f"image {found.spec.image} is {result.digest}")]}})
        log.info("committed", commit=found.metadata.name, digest=result.digest)


async def _record_image(kube: KubeClient, commit: Commit, result: Committed) -> None:
    """Create (or take) the Image the commit names, pinned to the result."""
    namespace, name = commit.metadata.namespace or "default", commit.spec.image
    try:
        await kube.create(path(GROUP, VERSION, "images", namespace=namespace), {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Image",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"fromCommit": commit.metadata.name}})
    except ApiError as e:
        if e.status != 409:
            raise
    status: dict[str, Any] = {"phase": "Resolved", "digest": result.digest,
                              "resolvedAt": time()}
    if result.reference is not None:
        status["resolvedReference"] = result.reference
    await kube.patch(path(GROUP, VERSION, "images", namespace=namespace, name=name,
                          subresource="status"), {"status": status})


def _succeeded(status: str, reason: str, message: str) -> dict[str, Any]:
    return condition("Succeeded", status, reason, message[:4096])

