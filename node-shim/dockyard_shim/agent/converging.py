"""The node agent's loop: the Containers bound to this node -> the node's containers, and
what they do -> the Containers' status.

Level-triggered, as the kubelet's sync loop: each pass reads the bound objects (kept up to
date by the watch, `saw`) and the daemon's containers, plans with the same core as
`dockyard up` (`dockyard_api.converge.plan_up`, under the agent's own manager label, with
pruning: a container whose Container is no longer bound here goes), carries the plan out
and reports. A pass runs when the watch brings a change (to a spec, a binding or a
deletion; gathered for `batch_window`) and at least every `poll_every` seconds, which is
how exits, OOM kills and restarts reach the status.

A container whose `local` volume is migrating here waits while the agent pulls the data
from the old node's shim (verified), then marks the Volume Ready here.

A container that cannot run here (its image cannot be pulled, a volume cannot be made or
moved, its name is taken by a container the agent did not make) stays `Pending` with the
reason in `status.message`, and is tried again on the next pass.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dockyard_api import Container, Image, Volume
from dockyard_api.container import ContainerPhase
from dockyard_api.converge import (
    AGENT,
    SPEC_HASH,
    Action,
    Create,
    DesiredContainer,
    Manifests,
    ManifestSetError,
    ObjectKey,
    ObservedContainer,
    Placed,
    Replace,
    node_name,
    plan_up,
    translate,
)
from dockyard_api.kube import FAILURES, ApiError, KubeClient, object_key, path
from dockyard_api.manifests import parse_as
from dockyard_api.volume import VolumePhase
from dockyard_common import get_logger
from dockyard_shim.agent import metrics
from dockyard_shim.agent.actions import carry_out, prepare_volumes, remove
from dockyard_shim.agent.report import changed, pending, status_of
from dockyard_shim.daemon.client import Client, DaemonError
from dockyard_shim.daemon.storage import open_images
from dockyard_shim.errors import NotFoundError, ShimError
from dockyard_shim.images.distribution import pull

log = get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R", Image, Volume)
GROUP, VERSION = "dockyard.dev", "v1alpha1"
NODE_LABEL = "dockyard.dev/node"
FINALIZER = "dockyard.dev/node-agent"
"""Held by the agent on every Container it runs: a deleted one goes from the node first."""


@dataclass(frozen=True)
class AgentConfig:
    """One node agent's settings."""

    node: str
    """The node's name: its DockyardNode, its Lease, the label value it watches."""
    root: Path
    """The node daemon's state root (images and volumes are prepared there)."""
    socket: str
    """The node daemon's unix socket."""
    namespace: str = "dockyard-system"
    """Where the node's Lease lives."""
    renew_every: float = 10.0
    lease_seconds: int = 40
    poll_every: float = 1.0
    batch_window: float = 0.1
    """Seconds a pass waits after the first watch event, for the events that follow."""
    workers: int = 8
    """How many daemon requests run at once."""
    resync_every: float = 30.0
    """Seconds between two full lists of the bound Containers (besides the watch)."""
    capacity: Mapping[str, Any] | None = None
    """What the node offers (default: the machine's)."""
    address: str = ""
    """Where other nodes reach this one's volume transfers (`host:port`)."""
    metrics_listen: str = ""
    """Where /metrics is served (`host:port`; empty: nowhere)."""


@dataclass(frozen=True)
class Migration:
    """A `local` volume moving to this node: its data comes from `source` first."""

    volume: str
    """`namespace/name` of the Volume."""
    node_volume: str
    """Its name on the nodes: `namespace.name`."""
    source: str

    @classmethod
    def of(cls, placed: Placed[Volume], node: str) -> Migration | None:
        status = placed.resource.status
        if placed.resource.spec.local is None or status is None or \
                status.phase != VolumePhase.MIGRATING or status.node != node or \
                not status.source_node or status.source_node == node:
            return None
        return cls(placed.key, node_name(placed.namespace, placed.name), status.source_node)


class Agent:
    """One node's convergence loop (see the module docstring)."""

    def __init__(self, config: AgentConfig, kube: KubeClient) -> None:
        self.config = config
        self.kube = kube
        self.bound: dict[str, dict[str, Any]] = {}
        """`namespace/name` -> the Container object, as the watch last showed it."""
        self._wake = asyncio.Event()
        self._listing: set[str] | None = None
        """While a resync's list is in flight: the keys the watch showed meanwhile."""
        self._only_listed: set[str] = set()
        """Keys the last resync found bound that the watch had not shown (yet)."""
        self._migrations: dict[str, list[Migration]] = {}
        """`namespace/name` -> the volume data the container waits for from other nodes."""
        self._clients = threading.local()
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="agent")

    # The watch's side --------------------------------------------------------------------

    def saw(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of a Container bound here (DELETED: gone, or bound elsewhere)."""
        key = object_key(body)
        if self._listing is not None:
            self._listing.add(key)
        self._only_listed.discard(key)
        before = self.bound.get(key)
        if event_type == "DELETED":
            self.bound.pop(key, None)
        else:
            self.bound[key] = dict(body)
        if event_type == "DELETED" or before is None or _acted_on(before) != _acted_on(body):
            self._wake.set()  # not for the agent's own status writes: they change nothing

    async def removed(self, namespace: str, name: str) -> None:
        """A bound Container is being deleted: its container goes from the node now."""
        key = f"{namespace}/{name}"
        self.bound.pop(key, None)
        for record in await self._records():
            if ObservedContainer.from_record(record).made_for(AGENT) == key:
                await self._remove(str(record["id"]))

    # The loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Converge until cancelled; a failed pass is logged (with its traceback when it
        is not an expected failure of the daemon or the API) and the next one tries again.
        Every `resync_every` seconds the bound Containers are listed afresh (as an
        informer resyncs), so that an event the watch lost cannot leave a container
        unseen for long."""
        listed = asyncio.get_running_loop().time()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.poll_every)
                await asyncio.sleep(self.config.batch_window)  # one pass for a burst of events
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if asyncio.get_running_loop().time() - listed > self.config.resync_every:
                    listed = asyncio.get_running_loop().time()
                    await self.resync()
                with metrics.PASSES.time():
                    await self.converge()
            except (DaemonError, *FAILURES) as e:
                log.warning("converge pass failed", error=str(e))
                metrics.FAILED_PASSES.labels("io").inc()
            except Exception:  # a bug must not end the loop: every pass starts afresh
                log.exception("converge pass failed unexpectedly")
                metrics.FAILED_PASSES.labels("bug").inc()

    async def resync(self) -> set[str]:
        """Replace the watch's view of the bound Containers with a fresh list, except for
        what the watch showed while the list was in flight (that is newer). The keys the
        watch missed: found by the previous resync and still not shown by the watch. (A
        key only the list has found is not counted at once: its watch event may be on
        its way, seconds behind under load.)"""
        self._listing = set()
        try:
            fresh = await self._list_bound()
        finally:
            touched, self._listing = self._listing, None
        missed = self._only_listed & fresh.keys()
        if missed:
            metrics.WATCH_MISSED.inc(len(missed))
            log.warning("the watch did not show bound containers for a whole resync period",
                        missed=len(missed), examples=sorted(missed)[:3])
        self._only_listed = fresh.keys() - self.bound.keys() - touched
        self.bound = {key: body for key, body in fresh.items() if key not in touched} | \
            {key: body for key, body in self.bound.items() if key in touched}
        return missed

    async def fence(self) -> list[str]:
        """Remove every container this agent made whose Container is no longer bound to
        this node: what a returning node runs for objects moved meanwhile. The names
        removed."""
        keys = (await self._list_bound()).keys()
        observed = [ObservedContainer.from_record(r) for r in await self._records()]
        stale = [o for o in observed
                 if (made_for := o.made_for(AGENT)) is not None and made_for not in keys]
        await asyncio.gather(*(self._remove(o.id) for o in stale))
        metrics.FENCED.inc(len(stale))
        for o in stale:
            log.info("fenced", container=o.name, reason="no longer bound to this node")
        return sorted(o.name for o in stale)

    async def converge(self) -> None:
        """One pass: plan, act, report."""
        objects = {key: body for key, body in self.bound.items()
                   if not body["metadata"].get("deletionTimestamp")}
        # The operator labels a Container and writes its status in two writes: until the
        # status shows this node and the digest, the binding is not complete. Such a
        # container is neither run (it would run the tag, not the pinned bytes) nor pruned.
        binding = {key for key, body in objects.items() if not self._bound_here(body)}
        records = await self._records()
        observed = [ObservedContainer.from_record(r) for r in records]
        desired, problems = await self._desired(
            {key: body for key, body in objects.items() if key not in binding}, observed)
        plan = plan_up(desired, [o for o in observed if o.made_for(AGENT) not in binding],
                       namespaces=None, prune=True, manager=AGENT,
                       pruned="no longer bound to this node", daemon_restarts=True)
        actions = [action for action in plan.actions if action.changes]
        if actions:
            problems |= await self._carry_out(actions)
            records = await self._records()
        await self._report(objects, records, desired, problems)

    # Steps -------------------------------------------------------------------------------

    async def _list_bound(self) -> dict[str, dict[str, Any]]:
        """The Containers bound to this node now, by `namespace/name`, from a list."""
        listed = await self.kube.list(path(GROUP, VERSION, "containers"),
                                      label_selector=f"{NODE_LABEL}={self.config.node}")
        return {object_key(o): o for o in listed}

    def _bound_here(self, body: Mapping[str, Any]) -> bool:
        status = body.get("status") or {}
        return status.get("node") == self.config.node and bool(status.get("imageDigest"))

    async def _remove(self, container_id: str) -> None:
        await self.in_thread(lambda client: remove(client, container_id))

    async def _records(self) -> list[dict[str, Any]]:
        """Every container on the node, as the daemon lists them."""
        records: list[dict[str, Any]] = await self.in_thread(
            lambda client: client.call("GET", "/containers/json?all=1"))
        return records

    async def _desired(self, objects: Mapping[str, Mapping[str, Any]],
                       observed: Iterable[ObservedContainer]
                       ) -> tuple[list[DesiredContainer], dict[str, str]]:
        """The containers the objects describe, and why the others cannot run."""
        taken = {o.name: o for o in observed if o.made_for(AGENT) is None}
        desired: list[DesiredContainer] = []
        problems: dict[str, str] = {}
        for key, body in objects.items():
            try:
                want = await self._translate(key, body)
            except ManifestSetError as e:
                problems[key] = "; ".join(f"{p.path}: {p.message}" for p in e.problems)
                continue
            except ApiError as e:
                problems[key] = e.message
                continue
            if want.name in taken:
                problems[key] = (f"a container named {want.name} is on node "
                                 f"{self.config.node} and the node agent did not make it: "
                                 f"remove it (dockyard rm -f {want.name})")
                continue
            desired.append(want)
        return desired, problems

    async def _translate(self, key: str, body: Mapping[str, Any]) -> DesiredContainer:
        """The runtime config of one Container, with the Image and Volumes it names."""
        container = parse_as(Container, dict(body), served=True)
        namespace, name = key.split("/", 1)
        placed = Placed(container, f"Container {key}", namespace, name)
        images: dict[ObjectKey, Placed[Image]] = {}
        volumes: dict[ObjectKey, Placed[Volume]] = {}
        spec = container.spec
        if spec.image_ref is not None:
            image = await self._fetch(Image, "images", namespace, spec.image_ref)
            if image is not None:
                images[ObjectKey(f"{namespace}/{spec.image_ref}")] = image
        migrations = []
        for mount in spec.volume_mounts:
            volume = await self._fetch(Volume, "volumes", namespace, mount.name)
            if volume is not None:
                volumes[ObjectKey(f"{namespace}/{mount.name}")] = volume
                migration = Migration.of(volume, self.config.node)
                if migration is not None:
                    migrations.append(migration)
        self._migrations[key] = migrations
        digest = container.status.image_digest if container.status is not None else None
        return translate(placed, Manifests((placed,), images, volumes), manager=AGENT,
                         digest=digest)

    async def _fetch(self, kind: type[R], plural: str, namespace: str, name: str
                     ) -> Placed[R] | None:
        try:
            body = await self.kube.get(path(GROUP, VERSION, plural, namespace=namespace,
                                            name=name))
        except ApiError as e:
            if e.status == 404:
                return None  # translate names what is missing
            raise
        return Placed(parse_as(kind, body, served=True), f"{plural} {namespace}/{name}",
                      namespace, name)

    async def _carry_out(self, actions: list[Action]) -> dict[str, str]:
        """Pull the images and make the volumes the new containers need, then act, many
        at once; why each action that failed did."""
        problems: dict[str, str] = {}
        new = [a.desired for a in actions if isinstance(a, Create | Replace)]
        missing = await asyncio.to_thread(_pull_missing, self.config.root,
                                          {str(want.config["image"]) for want in new})
        for want in new:
            if want.config["image"] in missing:
                problems[want.key] = missing[str(want.config["image"])]
                continue
            try:
                for migration in self._migrations.get(want.key, []):
                    await self._migrate(migration)
                await asyncio.to_thread(prepare_volumes, self.config.root, [want])
            except (ShimError, DaemonError, *FAILURES) as e:
                problems[want.key] = str(e)

        async def act(action: Action) -> None:
            try:
                await self.in_thread(lambda client: carry_out(client, action))
                log.info(action.verb, container=action.name, reason=action.reason)
                metrics.ACTIONS.labels(action.verb, "ok").inc()
            except DaemonError as e:
                problems[action.key] = e.message
                log.warning("failed", container=action.name, error=e.message)
                metrics.ACTIONS.labels(action.verb, "failed").inc()

        await asyncio.gather(*(act(a) for a in actions if a.key not in problems))
        return problems

    async def _migrate(self, migration: Migration) -> None:
        """Pull a volume's data from the node it is moving from, then mark it Ready here."""
        source = await self.kube.get(path(GROUP, VERSION, "dockyardnodes",
                                          name=migration.source))
        address = (source.get("status") or {}).get("address")
        if not address:
            raise ShimError(f"volume {migration.volume}: node {migration.source} serves no "
                            "transfers (its DockyardNode has no status.address)")
        try:
            pulled = await self.in_thread(lambda client: client.call(
                "POST", f"/volumes/{migration.node_volume}/pull",
                {"from": f"http://{address}", "remote": migration.node_volume},
                timeout=None))
        except DaemonError as e:
            raise ShimError(f"waiting for the data of volume {migration.volume} from node "
                            f"{migration.source}: {e.message}") from e
        namespace, name = migration.volume.split("/", 1)
        await self.kube.patch(path(GROUP, VERSION, "volumes", namespace=namespace, name=name,
                                   subresource="status"),
                              {"status": {"phase": "Ready", "sourceNode": None}})
        log.info("volume moved", volume=migration.volume, source=migration.source,
                 files=pulled["Files"], bytes=pulled["Bytes"])

    async def _report(self, objects: Mapping[str, Mapping[str, Any]],
                      records: Iterable[Mapping[str, Any]],
                      desired: Iterable[DesiredContainer], problems: Mapping[str, str]
                      ) -> None:
        """Patch the status of every object whose container's state changed."""
        ours = {key: record for record in records
                if (key := ObservedContainer.from_record(record).made_for(AGENT))}
        hashes = {want.key: want.spec_hash for want in desired}
        patches: list[tuple[ObjectKey, dict[str, Any]]] = []
        phases: collections.Counter[str] = collections.Counter()
        for name, body in objects.items():
            key = ObjectKey(name)
            generation = body["metadata"].get("generation")
            found = ours.get(key)
            if key in problems:
                wanted = pending(problems[key])
            elif found is not None:
                wanted = status_of(found, generation)
                if (found.get("labels") or {}).get(SPEC_HASH) != hashes.get(key):
                    wanted.pop("observedGeneration")  # the new spec is not running yet
            else:
                continue
            patch = changed(body.get("status") or {}, wanted)
            phases[str(wanted.get("phase"))] += 1
            if patch:
                patches.append((key, patch))
        for phase in ContainerPhase:
            metrics.CONTAINERS.labels(str(phase)).set(phases[str(phase)])
        await asyncio.gather(*(self._patch_status(key, patch) for key, patch in patches))

    async def _patch_status(self, key: str, patch: dict[str, Any]) -> None:
        namespace, name = key.split("/", 1)
        url = path(GROUP, VERSION, "containers", namespace=namespace, name=name,
                   subresource="status")
        try:
            await self.kube.patch(url, {"status": patch})
        except ApiError as e:
            if e.status != 404:  # deleted meanwhile: nothing to report to
                log.warning("status not written", container=key, error=str(e))

    async def in_thread(self, call: Callable[[Client], T]) -> T:
        """Run `call` with this worker thread's own daemon client (one connection each)."""
        def run() -> T:
            client = getattr(self._clients, "client", None)
            if client is None:
                client = self._clients.client = Client(self.config.socket)
            return call(client)
        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _acted_on(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Container the agent acts on: its spec (by generation), its binding, its
    deletion. A change elsewhere (the status the agent itself reports, kopf's
    annotations) needs no pass."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return (meta.get("uid"), meta.get("generation"), meta.get("deletionTimestamp"),
            status.get("node"), status.get("imageDigest"))


def _pull_missing(root: Path, references: set[str]) -> dict[str, str]:
    """Pull the images of `references` the node does not have; why each that could not
    be pulled could not."""
    if not references:
        return {}
    failed: dict[str, str] = {}
    snapshots, images = open_images(root)
    try:
        for reference in sorted(references):
            try:
                images.get(reference)
            except NotFoundError:
                try:
                    pull(images, reference)
                    log.info("pulled", image=reference)
                except ShimError as e:
                    failed[reference] = f"cannot pull {reference}: {e}"
    finally:
        images.close()
        snapshots.close()
    return failed
