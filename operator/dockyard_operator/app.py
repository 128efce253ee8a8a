"""The operator as kopf runs it: settings, and every handler registered in one registry.

Run it with `kopf run -m dockyard_operator.app --all-namespaces` (or embed it with
`kopf.operator(registry=registry())`).
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard_operator import binding


def registry() -> kopf.OperatorRegistry:
    """A registry with the operator's handlers."""
    handlers = kopf.OperatorRegistry()

    @kopf.on.startup(registry=handlers)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Our CRDs' structural schemas keep no unknown fields (the API server prunes
        # status.kopf): kopf keeps its progress and diff base in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="dockyard.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="dockyard.dev")

    binding.register(handlers)
    return handlers
