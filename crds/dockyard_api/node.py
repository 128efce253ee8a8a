"""The `DockyardNode` kind: a node shim's registration and its capacity.

Each node shim creates and updates its own DockyardNode and renews a
`coordination.k8s.io` Lease of the same name as its heartbeat. Named DockyardNode, not Node,
so that `kubectl get nodes` keeps meaning the core kind.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StrictBool, StringConstraints

from dockyard_api.container import Resources
from dockyard_api.meta import AGE, ApiModel, KindInfo, PrinterColumn, Resource, StatusBase

Text = Annotated[str, StringConstraints(max_length=256)]


class NodeSpec(ApiModel):
    """What an administrator decides about the node."""

    unschedulable: StrictBool = False
    """Cordon: place no new containers here (running ones stay)."""


class CgroupVersion(IntEnum):
    """The cgroup hierarchy the node runs."""

    V1 = 1
    V2 = 2


class NodePhase(StrEnum):
    """A node's health, in one word."""

    READY = "Ready"
    NOT_READY = "NotReady"
    UNKNOWN = "Unknown"


class NodeStatus(StatusBase):
    """What the node shim reports about its machine."""

    phase: NodePhase = NodePhase.UNKNOWN
    """`Ready` (heartbeat fresh), `NotReady` (heartbeat lost past the grace) or `Unknown`."""
    capacity: Resources = Field(default_factory=Resources)
    """The cpu, memory and pids the node offers to containers."""
    cgroup_version: CgroupVersion | None = None
    """1 (legacy or hybrid hierarchy) or 2 (unified)."""
    kernel_version: Text = ""
    """`uname -r` of the node."""
    runtime_version: Text = ""
    """The Dockyard node shim's version."""
    architecture: Text = ""
    """The OCI architecture: `amd64`, `arm64`…"""
    address: Text = ""
    """Where other nodes' shims reach this one for volume transfers (`host:port`)."""


class DockyardNode(Resource):
    """A node that runs Dockyard containers, registered by its node shim."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="DockyardNode", plural="dockyardnodes", short_names=("dyn",), namespaced=False,
        columns=(
            PrinterColumn("Phase", ".status.phase", description="Node health"),
            PrinterColumn("Cgroup", ".status.cgroupVersion", "integer", "cgroup version"),
            PrinterColumn("Kernel", ".status.kernelVersion", description="Kernel release",
                          priority=1),
            PrinterColumn("Runtime", ".status.runtimeVersion", description="Shim version"),
            AGE,
        ),
    )

    kind: Literal["DockyardNode"] = "DockyardNode"
    """Always `DockyardNode`."""
    spec: NodeSpec = Field(default_factory=NodeSpec)
    """Administrative settings."""
    status: NodeStatus | None = None
    """Capacity and versions (written by the node shim)."""
