"""The operator as kopf runs it: settings, and every handler registered in one registry.

`kopf run -m dockyard_operator.main --all-namespaces` runs it; tests and embedders pass
`registry()` to `kopf.operator`.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard_operator import binding, images


def registry() -> kopf.OperatorRegistry:
    """A new registry with the operator's handlers."""
    return register(kopf.OperatorRegistry())


def register(handlers: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """Add the operator's settings and handlers to `handlers`."""

    @kopf.on.startup(registry=handlers)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Our CRDs' structural schemas keep no unknown fields (the API server prunes
        # status.kopf): kopf keeps its progress and diff base in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="dockyard.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="dockyard.dev")

    binding.register(handlers)
    images.register(handlers)
    return handlers
