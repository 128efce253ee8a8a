"""The operator as kopf runs it: settings, and every handler registered in one registry.

`kopf run -m dockyard_operator.main --all-namespaces` runs it; tests and embedders pass
`registry()` to `kopf.operator`.
"""

from __future__ import annotations

import datetime
import os
import secrets
from dataclasses import dataclass
from typing import Any

import kopf

from dockyard_api.kube import KubeClient, connection, end_watches_in_time
from dockyard_common.metrics import serve
from dockyard_operator import (
    admission,
    binding,
    commits,
    images,
    lifecycle,
    promotions,
    stages,
)
from dockyard_operator.nodeloss import DEFAULT_GRACE


@dataclass(frozen=True)
class Webhooks:
    """The admission webhook server: kopf serves each admission handler at `/<its id>`.
    `managed` names the webhook configurations kopf then creates and keeps pointing at
    the server (for a cluster without the chart's; empty: the chart's are used)."""

    server: kopf.WebhookServer
    managed: str = ""


def registry(*, grace: datetime.timedelta = DEFAULT_GRACE, metrics_listen: str = "",
             webhooks: Webhooks | None = None) -> kopf.OperatorRegistry:
    """A new registry with the operator's handlers; `grace` is how long a node may miss
    its heartbeat before its containers move; `metrics_listen` (`HOST:PORT`) where
    /metrics is served (empty: nowhere); `webhooks`, the admission server (None: none)."""
    return register(kopf.OperatorRegistry(), grace=grace, metrics_listen=metrics_listen,
                    webhooks=webhooks)


def register(handlers: kopf.OperatorRegistry, *, grace: datetime.timedelta = DEFAULT_GRACE,
             metrics_listen: str = "", webhooks: Webhooks | None = None
             ) -> kopf.OperatorRegistry:
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
        end_watches_in_time(settings)
        _peering(settings)
        if webhooks is not None:
            settings.admission.server = webhooks.server
            settings.admission.managed = webhooks.managed or None
        memo["kube"] = KubeClient(connection(memo, logger, settings))
        if metrics_listen:
            memo["metrics"] = serve(metrics_listen)
            logger.info(f"serving /metrics on port {memo['metrics'].server_port}")

    @kopf.on.probe(id="ready_nodes", registry=handlers)
    def ready_nodes(memo: kopf.Memo, **kwargs: Any) -> int:
        # kopf's liveness endpoint (`kopf run --liveness URL`) shows what probes return.
        lost: set[str] = memo.get("lost", set())
        return sum(1 for store in kwargs["nodes"].values() for node in store
                   if node.ready and node.name not in lost)

    @kopf.on.login(registry=handlers)
    def login(memo: kopf.Memo, logger: kopf.Logger, settings: kopf.OperatorSettings,
              **_: Any) -> kopf.ConnectionInfo:
        return connection(memo, logger, settings)

    @kopf.on.cleanup(registry=handlers)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        kube: KubeClient | None = memo.get("kube")
        if kube is not None:
            await kube.close()
        if "metrics" in memo:
            memo["metrics"].shutdown()
            memo["metrics"].server_close()

    binding.register(handlers)
    images.register(handlers)
    commits.register(handlers)
    lifecycle.register(handlers, grace=grace)
    stages.register(handlers)
    promotions.register(handlers)
    if webhooks is not None:  # kopf refuses to start with admission handlers and no server
        admission.register(handlers)
    return handlers


def _peering(settings: kopf.OperatorSettings) -> None:
    """Replicas find each other through the ClusterKopfPeering `dockyard` (the chart makes
    it), and only the one of highest priority acts. kopf pauses every replica of a tied
    priority, so each picks a random one unless `--priority` gave it one; the peering
    object must exist (`mandatory`), so a missing one stops the operator instead of
    letting two replicas act at once. `--standalone` turns peering off (tests, one
    replica); `$DOCKYARD_PEERING_LIFETIME` (seconds, default 60) is how long a replica
    that stops renewing its record still holds the others back: the failover time."""
    if settings.peering.standalone:
        return
    if settings.peering.name == kopf.OperatorSettings().peering.name:
        settings.peering.name = "dockyard"
        settings.peering.mandatory = True
    if settings.peering.priority == 0:
        settings.peering.priority = 1 + secrets.randbelow(1 << 30)
    lifetime = os.environ.get("DOCKYARD_PEERING_LIFETIME")
    if lifetime:
        settings.peering.lifetime = int(lifetime)
