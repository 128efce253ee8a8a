"""The Image handlers: pin each Image's tag to a digest, once per spec (kopf, thin).

`pinning.plan` decides; a resolution asks the registry through skopeo on a worker thread.
The pin goes to `status` (`digest`, `resolvedReference`, `resolvedAt`, phase `Resolved`,
`observedGeneration`) with an Event `Pinned`; a registry that cannot answer gives phase
`Failed`, an Event `ResolveFailed`, and a retry.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from dockyard_api import Image
from dockyard_api.kube import time
from dockyard_api.manifests import parse_as
from dockyard_operator import metrics
from dockyard_operator.pinning import AwaitCommit, Keep, Pin, Resolve, ResolveError, plan, resolve

GROUP, VERSION = "dockyard.dev", "v1alpha1"
RETRY_RESOLVE = 10.0  # seconds before asking a registry that failed again


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the Image handlers to `registry`."""

    @kopf.on.resume(GROUP, VERSION, "images", id="pin", registry=registry)
    @kopf.on.update(GROUP, VERSION, "images", id="pin", field="spec", registry=registry)
    @kopf.on.create(GROUP, VERSION, "images", id="pin", registry=registry)
    async def pin(*, body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        image = parse_as(Image, dict(body), served=True)
        decision = plan(image)
        if isinstance(decision, Keep | AwaitCommit):
            return
        if isinstance(decision, Resolve):
            try:
                decision = await asyncio.to_thread(resolve, decision.reference)
            except ResolveError as e:
                metrics.IMAGE_PINS.labels("failed").inc()
                patch.status["phase"] = "Failed"
                kopf.warn(body, reason="ResolveFailed", message=str(e))
                raise kopf.TemporaryError(str(e), delay=RETRY_RESOLVE) from e
        metrics.IMAGE_PINS.labels("pinned").inc()
        _pinned(patch, decision, image.metadata.generation)
        kopf.info(body, reason="Pinned", message=f"pinned to {decision.reference}")


def _pinned(patch: kopf.Patch, pin: Pin, generation: int | None) -> None:
    patch.status["phase"] = "Resolved"
    patch.status["digest"] = pin.digest
    patch.status["resolvedReference"] = pin.reference
    patch.status["resolvedAt"] = time()
    patch.status["observedGeneration"] = generation
