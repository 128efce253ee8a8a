"""Delivery: make a stage run a set of digests, in the cluster or through git.

In the cluster (`InCluster`): each Image of the bundle in the stage's namespaces is pinned
to its digest (`spec.digest`), or made in the promotion's namespace when the stage has
none yet, and every bound Container of the stage that runs the Image gets the digest in
`status.imageDigest`, which its node agent acts on: it replaces the container, as a
Deployment's rollout replaces pods.

Through git (`GitOps`): the digests are written into the stage's overlay
(`kustomization.yaml`, `images:`), committed and pushed (`gitops.write_back`); Argo CD or
Flux apply them from there.

Both are idempotent: applying the same digests again changes nothing, so a promotion that
was interrupted simply applies again.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dockyard_api.kube import ApiError, KubeClient, path
from dockyard_api.meta import API_VERSION, GROUP, VERSION
from dockyard_api.registries import pinned_reference, repository
from dockyard_api.stage import DeliveryMode, Stage, StageImage
from dockyard_operator import gitops

GIT_WORKDIR = Path(os.environ.get("DOCKYARD_GIT_WORKDIR") or
                   Path(tempfile.gettempdir()) / "dockyard-git")
"""Where the operator keeps its clones of GitOps repositories (`$DOCKYARD_GIT_WORKDIR`)."""


class DeliveryError(Exception):
    """The digests could not reach the stage: a git remote refused, an object could not be
    written. `temporary`: whether trying again can succeed (a remote that is down) or not
    (an overlay that is not a Kustomization)."""

    def __init__(self, message: str, *, temporary: bool = True) -> None:
        super().__init__(message)
        self.temporary = temporary


async def deliver(kube: KubeClient, stage: Stage, images: Sequence[StageImage], *,
                  namespace: str, references: Mapping[str, str], promotion: str,
                  rollback: bool = False) -> str | None:
    """Make `stage` run `images`; `references` gives each Image's registry reference.
    The git commit for a GitOps stage (None when git already had them), else None."""
    if stage.spec.delivery.mode == DeliveryMode.GIT_OPS:
        return await asyncio.to_thread(_write_back, stage, images, references, promotion,
                                       rollback)
    try:
        for image in images:
            await _pin(kube, stage, image, namespace, references[image.image])
        await _roll(kube, stage, images)
    except ApiError as e:
        names = ", ".join(i.image for i in images)
        raise DeliveryError(f"cannot move {names} into stage {stage.metadata.name}: "
                            f"{e}") from e
    return None


async def _pin(kube: KubeClient, stage: Stage, image: StageImage, namespace: str,
               reference: str) -> None:
    """Pin the stage's Images named `image.image`, or make one in `namespace`."""
    pinned = False
    for ns in stage.spec.namespaces:
        url = path(GROUP, VERSION, "images", namespace=ns, name=image.image)
        try:
            current = await kube.get(url)
        except ApiError as e:
            if e.status == 404:
                continue
            raise
        spec = current.get("spec") or {}
        patch: dict[str, Any] = {"digest": image.digest}
        written = str(spec.get("reference") or "")
        if "@" in written:  # the reference carries a digest: it must agree with the pin
            patch["reference"] = pinned_reference(written, image.digest)
        if any(spec.get(k) != v for k, v in patch.items()):
            await kube.patch(url, {"spec": patch})
        pinned = True
    if not pinned:
        await kube.create(path(GROUP, VERSION, "images", namespace=namespace), {
            "apiVersion": API_VERSION, "kind": "Image",
            "metadata": {"name": image.image, "namespace": namespace},
            "spec": {"reference": repository(reference), "digest": image.digest}})


async def _roll(kube: KubeClient, stage: Stage, images: Sequence[StageImage]) -> None:
    """Give every bound Container of the stage that runs one of the Images its new digest
    (each namespace listed once for the whole bundle). Unbound ones get it when they are
    bound, from the Image's pin."""
    digests = {i.image: i.digest for i in images}
    for ns in stage.spec.namespaces:
        for container in await kube.list(path(GROUP, VERSION, "containers", namespace=ns)):
            spec, status = container.get("spec") or {}, container.get("status") or {}
            digest = digests.get(spec.get("imageRef"))
            if digest is None or not status.get("node") or status.get("imageDigest") == digest:
                continue
            await kube.patch(path(GROUP, VERSION, "containers", namespace=ns,
                                  name=container["metadata"]["name"], subresource="status"),
                             {"status": {"imageDigest": digest}})


def _write_back(stage: Stage, images: Sequence[StageImage], references: Mapping[str, str],
                promotion: str, rollback: bool) -> str | None:
    git = stage.spec.delivery.git
    if git is None:  # the CRD's rule requires it for GitOps
        raise DeliveryError(f"stage {stage.metadata.name} delivers by GitOps without git",
                            temporary=False)
    pins = [gitops.ImagePin(name=repository(references[i.image]), digest=i.digest)
            for i in images]
    message = gitops.commit_message(str(stage.metadata.name), pins, promotion)
    if rollback:
        message = "Roll back: " + message
    try:
        result = gitops.write_back(
            repository=git.repository, branch=git.branch, path=git.path, pins=pins,
            message=message, author=gitops.Author(name=git.author_name, email=git.author_email),
            workdir=GIT_WORKDIR)
    except gitops.GitOpsError as e:
        raise DeliveryError(str(e), temporary=e.temporary) from e
    return result.commit
