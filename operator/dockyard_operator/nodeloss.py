"""Node loss: leases and bindings -> which nodes are lost, and which containers move.

Each node agent renews a `coordination.k8s.io` Lease named after its node every 10 s
(duration 40 s, as the kubelet does). A node whose lease was not renewed for longer than
the grace (default 40 s) is lost: it is marked not ready, and its Containers are
- **rescheduled** when their restart policy is `Always` or `OnFailure` (unbound: the
  scheduler places them again, elsewhere, since a lost node is not ready);
- **failed** otherwise (`Never`): they ran once, on a node that is gone, as a Pod on a lost
  node ends `Failed` with reason `NodeLost`.

A node that comes back may still run containers that were moved meanwhile. Before it does
anything else, its agent kills every container it made whose Container is no longer bound
to it, gone or bound to another node (`dockyard_shim.agent.converging.Agent.fence`). Two
copies of a container never run longer than that.

Pure computation: the operator reads the objects and acts (`lifecycle`).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dockyard_api.container import RestartPolicy

DEFAULT_GRACE = datetime.timedelta(seconds=40)


def renew_time(lease: Mapping[str, object]) -> datetime.datetime | None:
    """A Lease object's `spec.renewTime` (or its `acquireTime`), as a UTC datetime."""
    spec = lease.get("spec")
    if not isinstance(spec, Mapping):
        return None
    stamp = spec.get("renewTime") or spec.get("acquireTime")
    if not isinstance(stamp, str):
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def lost_nodes(renewed: Mapping[str, datetime.datetime | None], now: datetime.datetime,
               grace: datetime.timedelta = DEFAULT_GRACE) -> set[str]:
    """The nodes whose lease was last renewed longer than `grace` before `now` (or never)."""
    return {node for node, when in renewed.items() if when is None or now - when > grace}


@dataclass(frozen=True)
class Binding:
    """A Container and the node it is bound to."""

    name: str
    """`namespace/name`."""
    node: str | None
    restart_policy: RestartPolicy = RestartPolicy.NEVER


@dataclass(frozen=True)
class Evictions:
    reschedule: list[str]
    """Containers to unbind, so that the scheduler places them on another node."""
    fail: list[str]
    """Containers to mark Failed (reason NodeLost): they are not restarted."""


def evictions(bindings: Iterable[Binding], lost: set[str]) -> Evictions:
    """What happens to the Containers bound to the `lost` nodes."""
    reschedule: list[str] = []
    fail: list[str] = []
    for binding in bindings:
        if binding.node in lost:
            moves = binding.restart_policy in (RestartPolicy.ALWAYS, RestartPolicy.ON_FAILURE)
            (reschedule if moves else fail).append(binding.name)
    return Evictions(sorted(reschedule), sorted(fail))
