"""Standalone mode's core: converge one machine's containers to a set of manifests.

`dockyard up -f FILE|DIR` and `dockyard down -f FILE|DIR` run the same `Container`, `Image`
and `Volume` manifests as the cluster, on this machine, with no Kubernetes API server. The
decisions live here, as pure functions the CLI drives:

    files ──load_manifests──► Manifests ──desire──► DesiredContainer…  (runtime configs)
    DesiredContainer… + ObservedContainer… ──plan_up / plan_down──► Plan (ordered Actions)

Every problem is collected and raised at once as a `ManifestSetError` naming the document
and the field path, before any action exists: an invalid set changes nothing.

No I/O here and no import of the node shim: the CLI reads the files, lists the node's
containers, and carries out the actions through the daemon's API.
"""

from dockyard_api.converge.manifests import (
    DEFAULT_NAMESPACE,
    Manifests,
    ManifestSetError,
    ObjectKey,
    Placed,
    SourcedProblem,
    load_manifests,
)
from dockyard_api.converge.plan import (
    Absent,
    Action,
    Create,
    Keep,
    ObservedContainer,
    Plan,
    Remove,
    Replace,
    Start,
    plan_down,
    plan_up,
)
from dockyard_api.converge.translate import (
    AGENT,
    MANAGED_BY,
    MANAGER,
    OBJECT,
    SPEC_HASH,
    DesiredContainer,
    NodeName,
    desire,
    node_name,
    spec_hash,
    translate,
)

__all__ = [
    "AGENT", "DEFAULT_NAMESPACE", "MANAGED_BY", "MANAGER", "OBJECT", "SPEC_HASH",
    "Absent", "Action", "Create", "DesiredContainer", "Keep", "ManifestSetError", "Manifests",
    "NodeName", "ObjectKey", "ObservedContainer", "Placed", "Plan", "Remove", "Replace",
    "SourcedProblem", "Start", "desire", "load_manifests", "node_name", "plan_down",
    "plan_up", "spec_hash", "translate",
]
