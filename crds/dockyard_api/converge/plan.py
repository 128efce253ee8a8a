"""Desired containers + the node's containers -> the ordered actions that converge them.

`plan_up` decides, for each desired container, by its name on the node:
- absent -> `Create` (then start);
- present, ours, other spec hash -> `Replace` (remove, create, start);
- present, ours, same hash -> `Keep`, except that a container that is not running and
  should be is started (`Start`): one never started, or one that exited under restart
  policy `Always` (any exit) or `OnFailure` (non-zero exit). The daemon restarts those by
  itself, with a back-off, unless a user stopped them; `up` declares them running, so it
  starts them now, as `docker compose up` does.
- present but not made by `dockyard up` for this object -> refused: a container someone
  ran by hand is never replaced or removed behind their back.
With `prune`, containers `up` made for objects no longer in the set are removed, within the
namespaces of the set only (as `kubectl apply --prune` is scoped to the namespaces it
applies to): a second project in another namespace is left alone.

`plan_down` removes exactly the containers of the Container objects given; an absent one is
reported and fine.

Pure computation: the caller lists the containers (GET /containers/json?all=1) and carries
out the actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dockyard_api.converge.manifests import (
    Manifests,
    ManifestSetError,
    ObjectKey,
    SourcedProblem,
)
from dockyard_api.converge.translate import (
    AGENT,
    MANAGED_BY,
    MANAGER,
    OBJECT,
    SPEC_HASH,
    DesiredContainer,
    NodeName,
    node_name,
)

_MADE_BY = {MANAGER: "dockyard up", AGENT: "the node agent"}
_RUNNING = ("running", "paused")  # paused by someone on purpose: up leaves it so


@dataclass(frozen=True)
class ObservedContainer:
    """One container on the node, as the daemon lists it."""

    id: str
    name: str
    status: str
    """`created`, `running`, `paused` or `stopped`."""
    labels: Mapping[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    stopped_by_user: bool = False
    """Stopped by `dockyard stop` or `kill`: the daemon does not restart it by itself."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ObservedContainer:
        """From one item of GET /containers/json?all=1."""
        return cls(id=str(record["id"]), name=str(record["name"]),
                   status=str(record["status"]), labels=dict(record.get("labels") or {}),
                   exit_code=record.get("exit_code"), config=dict(record.get("config") or {}),
                   stopped_by_user=bool(record.get("stopped_by_user")))

    @property
    def managed(self) -> bool:
        return self.labels.get(MANAGED_BY) == MANAGER

    @property
    def object(self) -> ObjectKey | None:
        """The object `up` made this container for; None when `up` did not make it."""
        return self.made_for(MANAGER)

    def made_for(self, manager: str) -> ObjectKey | None:
        """The object `manager` made this container for; None when it did not make it."""
        if self.labels.get(MANAGED_BY) != manager or OBJECT not in self.labels:
            return None
        return ObjectKey(self.labels[OBJECT])


@dataclass(frozen=True, kw_only=True)
class Action:
    """One step of a plan, with a reason for humans."""

    verb: ClassVar[str]
    """What is done, in the past tense, for the report: `created default.web`."""
    changes: ClassVar[bool] = True
    """Whether carrying it out changes the node."""

    name: NodeName
    key: ObjectKey
    reason: str


@dataclass(frozen=True, kw_only=True)
class Create(Action):
    """Create the container and start it."""

    verb: ClassVar[str] = "created"
    desired: DesiredContainer


@dataclass(frozen=True, kw_only=True)
class Replace(Action):
    """Remove the container (forcibly), then create and start the desired one."""

    verb: ClassVar[str] = "replaced"
    container_id: str
    desired: DesiredContainer


@dataclass(frozen=True, kw_only=True)
class Start(Action):
    """Start the existing container again."""

    verb: ClassVar[str] = "started"
    container_id: str


@dataclass(frozen=True, kw_only=True)
class Keep(Action):
    """Nothing to do."""

    verb: ClassVar[str] = "unchanged"
    changes: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True)
class Remove(Action):
    """Remove the container (forcibly)."""

    verb: ClassVar[str] = "removed"
    container_id: str


@dataclass(frozen=True, kw_only=True)
class Absent(Action):
    """Nothing to remove: the container is not on the node."""

    verb: ClassVar[str] = "absent"
    changes: ClassVar[bool] = False


@dataclass(frozen=True)
class Plan:
    """The actions, in the order to carry them out."""

    actions: tuple[Action, ...]
    unpruned: tuple[NodeName, ...] = ()
    """Containers `up` made for objects missing from the set, kept because prune was off."""

    @property
    def changes(self) -> bool:
        return any(action.changes for action in self.actions)


def plan_up(desired: Iterable[DesiredContainer], observed: Iterable[ObservedContainer], *,
            namespaces: Iterable[str] | None = (), prune: bool = False,
            manager: str = MANAGER, pruned: str = "no longer in the manifests (--prune)",
            daemon_restarts: bool = False) -> Plan:
    """The actions that make the node run `desired` (see the module docstring).

    `namespaces` bounds pruning (None: no bound); the namespaces of the manifest set
    (`Manifests.namespaces`). `manager` is whose containers these are (`up`'s, or the node
    agent's), and `pruned` why a pruned one goes. With `daemon_restarts` (the node agent,
    which converges again and again), a container that exited under a restart policy is
    left to the daemon, which restarts it with its back-off and counts the restarts
    (`up` runs once, and starts it now). Raise ManifestSetError when a desired name is
    taken by a container `manager` did not make.
    """
    desired = tuple(desired)
    by_name = {o.name: o for o in observed}
    _refuse_foreign(((d.name, d.key, d.source) for d in desired), by_name, manager)
    wanted = {d.key for d in desired}
    scope = None if namespaces is None else set(namespaces)
    leftovers = [(o, key) for o in by_name.values()
                 if (key := o.made_for(manager)) is not None and key not in wanted
                 and (scope is None or key.split("/", 1)[0] in scope)]
    actions: list[Action] = []
    if prune:  # first: what goes away frees its resources for what comes
        actions += [Remove(name=NodeName(o.name), key=key, container_id=o.id, reason=pruned)
                    for o, key in sorted(leftovers, key=lambda pair: pair[0].name)]
    for want in _providers_first(desired):
        found = by_name.get(want.name)
        actions.append(_converge(want, found, daemon_restarts=daemon_restarts))
    unpruned = () if prune else tuple(sorted(NodeName(o.name) for o, _ in leftovers))
    return Plan(tuple(actions), unpruned)


def _providers_first(desired: tuple[DesiredContainer, ...]) -> list[DesiredContainer]:
    """The storage providers before the rest (a consumer's start waits for its provider),
    each group in manifest order."""
    providers = {v.get("provider") for d in desired for v in d.volumes
                 if v.get("kind") == "provider"}
    return sorted(desired, key=lambda want: want.name not in providers)


def _converge(want: DesiredContainer, found: ObservedContainer | None, *,
              daemon_restarts: bool) -> Action:
    name, key = want.name, want.key
    if found is None:
        return Create(name=name, key=key, desired=want, reason="not on this machine")
    if found.labels.get(SPEC_HASH) != want.spec_hash:
        return Replace(name=name, key=key, desired=want, container_id=found.id,
                       reason=_what_changed(want.config, found.config))
    restart = _restart_reason(want.restart, found)
    if restart and daemon_restarts and found.status == "stopped" and \
            not found.stopped_by_user:
        return Keep(name=name, key=key, reason=f"{restart}: the daemon restarts it")
    if restart:
        return Start(name=name, key=key, container_id=found.id, reason=restart)
    return Keep(name=name, key=key, reason=_state(found))


def _restart_reason(policy: str, found: ObservedContainer) -> str:
    """Why a container that is not running should be started again; '' if it should not."""
    if found.status == "created":
        return "created but never started"
    if found.status != "stopped":
        return ""
    if policy == "always":
        return f"exited with code {found.exit_code}; restartPolicy is Always"
    if policy == "on-failure" and found.exit_code != 0:
        return f"exited with code {found.exit_code}; restartPolicy is OnFailure"
    return ""


def _state(found: ObservedContainer) -> str:
    if found.status == "stopped":
        return f"exited with code {found.exit_code}"
    return found.status


def _what_changed(want: Mapping[str, Any], have: Mapping[str, Any]) -> str:
    """`spec changed (command, memory_bytes)`: the runtime fields that differ, if known."""
    keys = sorted(k for k in want if k not in ("labels", "name") and want[k] != have.get(k))
    return f"spec changed ({', '.join(keys)})" if keys and have else "spec changed"


def plan_down(manifests: Manifests, observed: Iterable[ObservedContainer]) -> Plan:
    """Remove the containers of the set's Container objects; nothing else.

    Only identities are needed, so a Container that `up` could not translate (an unsupported
    volume, a missing Image) can still be taken down. Raise ManifestSetError when a name is
    taken by a container `up` did not make.
    """
    by_name = {o.name: o for o in observed}
    wanted = [(node_name(p.namespace, p.name), p.key, p.source) for p in manifests.containers]
    _refuse_foreign(wanted, by_name)
    actions: list[Action] = []
    for name, key, _ in wanted:
        found = by_name.get(name)
        if found is None:
            actions.append(Absent(name=name, key=key, reason="not on this machine"))
        else:
            actions.append(Remove(name=name, key=key, container_id=found.id,
                                  reason="in the manifests"))
    return Plan(tuple(actions))


def _refuse_foreign(wanted: Iterable[tuple[NodeName, ObjectKey, str]],
                    by_name: Mapping[str, ObservedContainer], manager: str = MANAGER) -> None:
    problems = []
    for name, key, source in wanted:
        found = by_name.get(name)
        if found is not None and found.made_for(manager) != key:
            problems.append(SourcedProblem(
                source, "metadata.name",
                f"a container named {name} is on this machine and "
                f"{_MADE_BY.get(manager, manager)} did not make "
                f"it for Container {key}: remove it (dockyard rm -f {name}) or rename the "
                "Container"))
    if problems:
        raise ManifestSetError(problems)
