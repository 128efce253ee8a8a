"""The Dockyard API (group `dockyard.dev`, version `v1alpha1`) as pydantic models.

These models are the single source of truth: the CRDs in `crds/` and the Helm chart are
generated from them (`dockyard crd generate`), and every manifest that enters Dockyard is
validated by them (`parse`). Bottom layer of the project: it imports nothing from the
operator, the node shim or the CLI, and does no I/O beyond what a caller asks for.
"""

from dockyard_api.commit import Commit, CommitSpec, CommitStatus
from dockyard_api.container import Container, ContainerSpec, ContainerStatus, Resources
from dockyard_api.image import Image, ImageSpec, ImageStatus
from dockyard_api.manifests import (
    BY_KIND,
    KINDS,
    InvalidManifestError,
    Problem,
    dump,
    load_documents,
    parse,
)
from dockyard_api.meta import API_VERSION, GROUP, VERSION, Condition, ObjectMeta, Resource
from dockyard_api.node import DockyardNode, NodeSpec, NodeStatus
from dockyard_api.promotion import Promotion, PromotionSpec, PromotionStatus
from dockyard_api.quantity import Quantity
from dockyard_api.stage import Stage, StageSpec, StageStatus
from dockyard_api.volume import Volume, VolumeSpec, VolumeStatus

__all__ = [
    "API_VERSION", "BY_KIND", "GROUP", "KINDS", "VERSION",
    "Commit", "CommitSpec", "CommitStatus", "Condition", "Container", "ContainerSpec",
    "ContainerStatus", "DockyardNode", "Image", "ImageSpec", "ImageStatus", "InvalidManifestError",
    "NodeSpec", "NodeStatus", "ObjectMeta", "Problem", "Promotion", "PromotionSpec",
    "PromotionStatus", "Quantity", "Resource", "Resources", "Stage", "StageSpec",
    "StageStatus", "Volume", "VolumeSpec", "VolumeStatus", "dump", "load_documents", "parse",
]
