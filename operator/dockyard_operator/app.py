"""The operator as kopf runs it: settings, and every handler registered in one registry.

`kopf run -m dockyard_operator.main --all-namespaces` runs it; tests and embedders pass
`registry()` to `kopf.operator`.
"""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from dockyard_api.kube import KubeClient, connection
from dockyard_operator import binding, images, lifecycle
from dockyard_operator.nodeloss import DEFAULT_GRACE


def registry(*, grace: datetime.timedelta = DEFAULT_GRACE) -> kopf.OperatorRegistry:
    """A new registry with the operator's handlers; `grace` is how long a node may miss
    its heartbeat before its containers move."""
    return register(kopf.OperatorRegistry(), grace=grace)


def register(handlers: kopf.OperatorRegistry, *,
             grace: datetime.timedelta = DEFAULT_GRACE) -> kopf.OperatorRegistry:
    """Add the operator's settings and handlers to `handlers`."""

    @kopf.on.startup(registry=handlers)
    def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger,
                  **_: Any) -> None:
        # Our CRDs' structural schemas keep no unknown fields (the API server prunes
        # status.kopf): kopf keeps its progress and diff base in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="dockyard.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="dockyard.dev")
        settings.persistence.finalizer = "dockyard.dev/operator"
        memo["kube"] = KubeClient(connection(memo, logger, settings))

    @kopf.on.login(registry=handlers)
    def login(memo: kopf.Memo, logger: kopf.Logger, settings: kopf.OperatorSettings,
              **_: Any) -> kopf.ConnectionInfo:
        return connection(memo, logger, settings)

    @kopf.on.cleanup(registry=handlers)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        kube: KubeClient | None = memo.get("kube")
        if kube is not None:
            await kube.close()

    binding.register(handlers)
    images.register(handlers)
    lifecycle.register(handlers, grace=grace)
    return handlers
