"""The container lifecycle on one node: create, start, stop, kill, pause, wait, delete.

`Runtime` ties the layers together: the image store gives the image, the snapshotter the
container's copy-on-write root, the cgroup driver its limits, the spawner its isolated
process, and `StateStore` remembers it all. Every verb first re-derives the container's
real state from the kernel (`observe`) and checks the state machine's guard, so a stale
record never leads to acting on the wrong process.

Failure leaves nothing behind: create undoes the record, bundle and snapshot it made;
start undoes the cgroup; delete removes disk state first and the record last, so an
interrupted delete can simply be repeated.

The process that opens a `Runtime` becomes a child subreaper: containers' first processes
are its children, it reaps them and records their exits. It also keeps `pids/<pid>` (the
bundle of each running container), so that its own subreaper ancestor (the daemon's
keeper) can record the exits of containers that end while this process is gone.
Transitions of state are serialised by one lock; waiting happens outside it.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from dockyard_shim.archive.writer import write_layer
from dockyard_shim.background import Later, now
from dockyard_shim.cgroups import Cgroup, CgroupDriver, Limits, Stats, V1Cgroup
from dockyard_shim.errors import (
    FailedPreconditionError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.kernel import Kernel
from dockyard_shim.network import (
    Attachment,
    NetworkConfig,
    attach,
    detach,
    ensure_bridge,
)
from dockyard_shim.runtime import procfs
from dockyard_shim.runtime.command import process_spec
from dockyard_shim.runtime.config import ContainerConfig, container_sysctls, validate
from dockyard_shim.runtime.datamounts import (
    anonymous_volumes,
    claim_volumes,
    close_trees,
    data_mounts,
    exports_of,
    remove_unused,
    unmount_idle,
    with_image_volumes,
)
from dockyard_shim.runtime.execs import Execs
from dockyard_shim.runtime.initlayer import init_layer
from dockyard_shim.runtime.names import random_name
from dockyard_shim.runtime.ports import Images, RunnableImage, Snapshots
from dockyard_shim.runtime.process import StartError, become_subreaper, read_exit
from dockyard_shim.runtime.reaping import await_pid, reap_into
from dockyard_shim.runtime.spawn import DataMount, Fork, SandboxSpec, Spawned, spawn
from dockyard_shim.runtime.state import (
    ContainerRecord,
    StateStore,
    Status,
    can_delete,
    can_kill,
    can_pause,
    can_start,
    can_unpause,
    require,
)
from dockyard_shim.runtime.userns import IdMap, SubordinateIds, create_namespace
from dockyard_shim.snapshots.changes import Change, changes
from dockyard_shim.volumes import HostPaths, VolumeStore, volumes_in_use

_EXIT_RECORD_GRACE = 1.0  # how long to wait for another reaper's exit record
_TRASH = "trash-"  # the name prefix of a removed container's bundle until it is deleted


@dataclass(frozen=True)
class Exit:
    code: int
    oom_killed: bool
    finished_at: float


class Runtime:
    """Containers on this node. One per process; safe to open from several processes."""

    def __init__(self, root: Path, *, kernel: Kernel, images: Images, snapshots: Snapshots,
                 cgroups: CgroupDriver, network: NetworkConfig | None = None,
                 later: Later = now, fork: Fork | None = None,
                 volumes: VolumeStore | None = None,
                 subordinate_ids: SubordinateIds | None = None) -> None:
        """`later` runs chores no call waits for (deleting a removed container's renamed
        bundle): at once by default, or on a `Background` thread so that calls return
        sooner. `fork` makes containers' init processes: this process forks them by
        default, a `ForkServer` faster. `volumes` defaults to a store under `root` that
        allows every host path but the state root and the dangerous ones.
        `subordinate_ids`: where `--userns auto` takes its ids (/etc/subuid, /etc/subgid)."""
        self.root = root
        self.kernel = kernel
        self._images = images
        self._snapshots = snapshots
        self.cgroups = cgroups
        self.store = StateStore(root / "containers.db")
        self.execs = Execs(self)
        self.network = network or NetworkConfig()
        self.network_dir = root / "network"
        self.pids_dir = root / "pids"
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._later = later
        self._fork = fork
        self._subordinate_ids = subordinate_ids or SubordinateIds()
        self.volumes = volumes or VolumeStore(
            root / "volumes", host_paths=HostPaths(protected=(str(root),)), later=later)
        for leftover in (root / "containers").glob(f"{_TRASH}*"):  # from a crash
            later(partial(shutil.rmtree, leftover, ignore_errors=True))
        become_subreaper(kernel)

    # ------------------------------------------------------------------ create / start

    def create(self, config: ContainerConfig) -> ContainerRecord:
        """Make a container from `config` without starting it (docker create)."""
        validate(config)
        image = self._images.runnable(config.image)
        config = validate(with_image_volumes(config, image.volumes))
        container_id = secrets.token_hex(32)
        config, made_volumes = claim_volumes(self.volumes, config, container_id)
        bundle = self.root / "containers" / container_id
        try:
            with self.lock:  # no other create takes the same ids meanwhile
                record = ContainerRecord(
                    id=container_id, name=config.name or self._free_name(), image=image.name,
                    status=Status.CREATED, bundle=str(bundle), config=config.to_json(),
                    created_at=time.time(), labels=dict(config.labels),
                    id_map=self._id_map(config))
                self.store.add(record)  # the name is claimed before any disk state exists
        except BaseException:
            remove_unused(self.volumes, made_volumes, self.volumes_in_use())
            raise
        try:
            bundle.mkdir(parents=True)
            self._write_etc(bundle, config.hostname or container_id[:12])
            image.save(bundle)
            self._snapshots.prepare(container_id,
                                    init_layer(self._snapshots, self.kernel, image.top_layer))
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            self.store.delete(container_id)
            remove_unused(self.volumes, made_volumes, self.volumes_in_use())
            raise
        return record

    def _id_map(self, config: ContainerConfig) -> dict[str, int] | None:
        """A block of subordinate ids no other container holds, for `--userns auto`."""
        if config.userns != "auto":
            return None
        taken = [IdMap.from_json(r.id_map) for r in self.store.all() if r.id_map]
        return self._subordinate_ids.allocate(taken).to_json()

    def start(self, ref: str, *, backoff: float | None = None) -> ContainerRecord:
        """Start a created or stopped container; return once its command runs.

        `backoff` marks a restart by the restart policy (after that delay): it counts in
        `restart_count`; a start by hand resets the count and re-enables the policy.
        """
        with self.lock:
            record = self.observe(self.store.get(ref))
            if backoff is None:
                record = record.with_(restart_count=0, backoff=0.0, stopped_by_user=False)
            elif record.stopped_by_user:  # stopped by hand while the restart was pending
                raise FailedPreconditionError(
                    f"container {record.name} was stopped by the user: not restarting it")
            else:
                record = record.with_(restart_count=record.restart_count + 1,
                                      backoff=backoff)
            return self._start(record)

    def _start(self, record: ContainerRecord) -> ContainerRecord:
        require(can_start(record.status), "start", record)
        config = ContainerConfig.from_json(record.config)
        image = self.image_of(record)
        try:  # mounts a tmpfs volume, or a provider volume's hub, when needed
            volumes = data_mounts(self.volumes, config, record.name, self._runs)
        except BaseException:
            self._unmount_idle_volumes(record)
            raise
        try:
            return self._start_with(record, config, image, volumes)
        finally:
            close_trees(volumes)  # init has its own copies of the exports

    def _start_with(self, record: ContainerRecord, config: ContainerConfig,
                    image: RunnableImage, volumes: tuple[DataMount, ...]) -> ContainerRecord:
        leftover = self.cgroup_of(record)
        if leftover is not None:
            leftover.delete()  # from a previous run of this container
        cgroup = self.cgroups.create(record.id)
        id_map = IdMap.from_json(record.id_map) if record.id_map else None
        userns_fd = -1
        try:
            if id_map is not None:
                userns_fd = create_namespace(self.kernel, id_map)
            cgroup.set_limits(Limits(memory_bytes=config.memory_bytes,
                                     cpu_millis=config.cpu_millis,
                                     pids_max=config.pids_limit))
            spec = SandboxSpec(
                bundle=Path(record.bundle),
                rootfs=tuple(self._snapshots.mounts(record.id)),
                process=process_spec(config, image),
                hostname=config.hostname or record.id[:12],
                volumes=volumes,
                network=config.network,
                readonly_rootfs=config.read_only,
                cgroup_join=tuple(str(path) for path in cgroup.join_files()),
                cgroup_v2=self.cgroups.version == 2,
                cgroup_v1_dirs=_v1_dirs(cgroup),
                sysctls=container_sysctls(config),
                id_map=id_map, userns_fd=userns_fd)
        except BaseException:
            if userns_fd >= 0:
                os.close(userns_fd)
            cgroup.delete()
            self._unmount_idle_volumes(record)
            raise
        (Path(record.bundle) / "container.log").touch()
        (Path(record.bundle) / "exit.json").unlink(missing_ok=True)

        identities: list[int] = []

        def place(pid: int) -> None:
            # Indexed before the container can run: whoever reaps it can record its exit.
            (self.pids_dir / str(pid)).write_text(record.bundle)
            identities.append(procfs.identity(pid))  # before it may exec and exit

        attachments: list[Attachment] = []

        def connect(pid: int) -> None:
            if config.network == "bridge":
                # Made on first use: a node that never uses bridges keeps its network as is.
                ensure_bridge(self.network)
                attachments.append(attach(self.network, self.network_dir, record.id, pid))

        try:
            spawned = spawn(self.kernel, spec, place=place, connect=connect, fork=self._fork)
        except StartError as e:
            self._detach(record, bool(attachments))
            self._unmount_idle_volumes(record)
            cgroup.delete()
            self.store.put(record.with_(status=Status.STOPPED, exit_code=e.exit_code,
                                        finished_at=time.time()))
            raise
        except BaseException:
            self._detach(record, bool(attachments))
            self._unmount_idle_volumes(record)
            cgroup.delete()
            raise
        finally:
            if userns_fd >= 0:
                os.close(userns_fd)  # init joined it, or failed: it lives on in init only
        ip = str(attachments[0].ip) if attachments else ""
        return self._running(record.with_(ip_address=ip), spawned, identities[0])

    def _detach(self, record: ContainerRecord, attached: bool = True) -> None:
        """Take the container off the bridge (its address back to the pool)."""
        if attached or record.ip_address:
            detach(self.network, self.network_dir, record.id)

    def _running(self, record: ContainerRecord, spawned: Spawned,
                 started: int) -> ContainerRecord:
        record = record.with_(status=Status.RUNNING, pid=spawned.pid, pid_start=started,
                              started_at=time.time(), finished_at=None, exit_code=None,
                              oom_killed=False)
        self.store.put(record)
        return record

    def run(self, config: ContainerConfig) -> ContainerRecord:
        """create, then start (docker run -d)."""
        record = self.create(config)
        return self.start(record.id)

    # ------------------------------------------------------------------- observe / wait

    def observe(self, record: ContainerRecord) -> ContainerRecord:
        """The record as the kernel sees it now, persisted if it changed."""
        if record.status not in (Status.RUNNING, Status.PAUSED):
            return record
        if self._live_status(record) is record.status:
            return record  # the common case, without the lock or a read of the store
        with self.lock:
            record = self.store.get(record.id)  # fresh, under the lock
            if record.status not in (Status.RUNNING, Status.PAUSED):
                return record
            status = self._live_status(record)
            if status is not None:
                if status is not record.status:
                    record = record.with_(status=status)
                    self.store.put(record)
                return record
            self._reap(record)
            outcome = self._collect(record)
            self._detach(record, attached=False)
            self._unmount_idle_volumes(record)
            record = record.with_(status=Status.STOPPED, exit_code=outcome.code,
                                  oom_killed=outcome.oom_killed,
                                  finished_at=outcome.finished_at, pid=0,
                                  ip_address="")
            self.store.put(record)
            return record

    def _live_status(self, record: ContainerRecord) -> Status | None:
        """RUNNING or PAUSED (its cgroup frozen) while the container's first process lives;
        None once it has ended. (A node agent lists every container each second; for most
        the kernel agrees with the record, and `observe` then writes nothing.)"""
        if not procfs.alive(record.pid, record.pid_start):
            return None
        cgroup = self.cgroup_of(record)
        return Status.PAUSED if cgroup is not None and cgroup.is_frozen() else Status.RUNNING

    def _reap(self, record: ContainerRecord) -> None:
        """Collect the exit status of the container's first process if we are its parent."""
        reap_into(record.pid, record.pid_start, Path(record.bundle))

    def _collect(self, record: ContainerRecord) -> Exit:
        ended = read_exit(Path(record.bundle), grace=_EXIT_RECORD_GRACE)
        (self.pids_dir / str(record.pid)).unlink(missing_ok=True)
        cgroup = self.cgroup_of(record)
        oom = False
        if cgroup is not None:
            oom = (cgroup.oom_kills() or 0) > 0
            if cgroup.pids():  # PID 1's death ends its pid namespace; this is a safety net
                cgroup.kill_all()
            cgroup.delete()
        return Exit(ended.code, oom, ended.finished_at)

    def wait(self, ref: str, timeout: float | None = None) -> ContainerRecord:
        """Block until the container stops; return its final record (docker wait)."""
        record = self.observe(self.store.get(ref))
        if record.status in (Status.RUNNING, Status.PAUSED):
            if not self._await_exit(record, timeout):
                raise UnavailableError(f"container {record.name} still runs after "
                                       f"{timeout:g}s")
            record = self.observe(self.store.get(record.id))
        return record

    @staticmethod
    def _await_exit(record: ContainerRecord, timeout: float | None) -> bool:
        """Wait until the container's first process has exited (pidfd: no polling)."""
        return await_pid(record.pid, record.pid_start, timeout)

    # --------------------------------------------------------------- signals and pause

    def kill(self, ref: str, signum: int = signal.SIGKILL) -> ContainerRecord:
        """Send `signum` to the container's first process (docker kill).

        Like a stop, a kill on request holds the restart policy off until a manual start.
        """
        with self.lock:
            record = self.observe(self.store.get(ref))
            require(can_kill(record.status), "kill", record, "it is not running")
            record = record.with_(stopped_by_user=True)
            self.store.put(record)
            os.kill(record.pid, signum)  # alive and ours: observe just checked, under lock
            if record.status is Status.PAUSED:
                self._thaw(record)  # a frozen process acts on its signal only once thawed
            return record

    def stop(self, ref: str, timeout: float = 10.0) -> ContainerRecord:
        """SIGTERM, then SIGKILL after `timeout` seconds (docker stop -t)."""
        record = self.observe(self.store.get(ref))
        if record.status not in (Status.RUNNING, Status.PAUSED):
            if not record.stopped_by_user:  # a pending restart by policy is off too
                record = record.with_(stopped_by_user=True)
                self.store.put(record)
            return record  # stopping a stopped container is not an error, as in Docker
        self.kill(record.id, signal.SIGTERM)
        if not self._await_exit(record, timeout):
            self.kill(record.id, signal.SIGKILL)
            self._await_exit(record, None)
        return self.observe(self.store.get(record.id))

    def pause(self, ref: str) -> ContainerRecord:
        with self.lock:
            return self._pause(self.observe(self.store.get(ref)))

    def _pause(self, record: ContainerRecord) -> ContainerRecord:
        require(can_pause(record.status), "pause", record)
        cgroup = self.cgroup_of(record)
        if cgroup is None:
            raise NotFoundError(f"container {record.name} has no cgroup to freeze")
        cgroup.freeze()
        record = record.with_(status=Status.PAUSED)
        self.store.put(record)
        return record

    def unpause(self, ref: str) -> ContainerRecord:
        with self.lock:
            record = self.observe(self.store.get(ref))
            require(can_unpause(record.status), "unpause", record)
            self._thaw(record)
            record = record.with_(status=Status.RUNNING)
            self.store.put(record)
            return record

    def cgroup_of(self, record: ContainerRecord) -> Cgroup | None:
        """The container's cgroup, if it has one now."""
        if not self.cgroups.exists(record.id):
            return None
        return self.cgroups.load(record.id)

    def _thaw(self, record: ContainerRecord) -> None:
        cgroup = self.cgroup_of(record)
        if cgroup is not None:
            cgroup.thaw()

    # --------------------------------------------------------------------- delete / list

    def delete(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        """Remove a container and everything it owns (docker rm [-f] [-v]). Its anonymous
        volumes go too with `volumes`, or when it was run with --rm, as Docker does."""
        record = self.observe(self.store.get(ref))
        if not force:
            self._refuse_if_providing(record)
        if force and record.status in (Status.RUNNING, Status.PAUSED):
            with contextlib.suppress(FailedPreconditionError):  # it may exit meanwhile
                self.kill(record.id, signal.SIGKILL)
            self._await_exit(record, 10.0)
        with self.lock:
            record = self.observe(self.store.get(record.id))
            self._delete(record)
        config = ContainerConfig.from_json(record.config)
        if volumes or config.auto_remove:
            remove_unused(self.volumes, anonymous_volumes(config, self.volumes),
                    self.volumes_in_use())

    def _delete(self, record: ContainerRecord) -> None:
        require(can_delete(record.status), "remove", record,
                "stop it first or force the removal (rm -f)")
        cgroup = self.cgroup_of(record)
        if cgroup is not None:
            cgroup.delete()
        with contextlib.suppress(NotFoundError):
            self._snapshots.remove(record.id)
        bundle = Path(record.bundle)
        trashed = bundle.with_name(_TRASH + bundle.name)  # ids are never reused
        with contextlib.suppress(FileNotFoundError):
            bundle.rename(trashed)
            self._later(partial(shutil.rmtree, trashed, ignore_errors=True))
        self.store.delete(record.id)

    def _refuse_if_providing(self, record: ContainerRecord) -> None:
        """A storage provider whose volumes other containers use stays (unless forced)."""
        served = {v.name for v in exports_of(self.volumes, record.name)}
        if not served:
            return  # what nearly every container is: no need to read the others
        consumers = sorted(other.name for other in self.store.all() if other.id != record.id
                           and served & volumes_in_use([other.config]))
        if consumers:
            raise FailedPreconditionError(
                f"container {record.name} provides volume(s) {', '.join(sorted(served))} to "
                f"{', '.join(consumers)}: remove those first, or force the removal (rm -f)")

    def _runs(self, ref: str) -> bool:
        """Whether the container `ref` is running now (a provider, for its consumers)."""
        try:
            return self.observe(self.store.get(ref)).status is Status.RUNNING
        except NotFoundError:
            return False

    def _unmount_idle_volumes(self, stopped: ContainerRecord) -> None:
        """Run at every stop: the other containers are read only when this one had
        volumes."""
        used = volumes_in_use([stopped.config])
        if used:
            running = volumes_in_use(r.config for r in self.store.all()
                                     if r.id != stopped.id
                                     and r.status in (Status.RUNNING, Status.PAUSED))
            unmount_idle(self.volumes, used, running)
        for export in exports_of(self.volumes, stopped.name):
            self.volumes.withdraw_export(export)

    def volumes_in_use(self) -> set[str]:
        """The volumes any container of this node refers to, running or not."""
        return volumes_in_use(record.config for record in self.store.all())

    def list(self, *, all_: bool = False) -> list[ContainerRecord]:
        """Containers, observed now; only running and paused ones unless `all_`."""
        records = []
        for record in self.store.all():
            # One removed meanwhile (a concurrent `rm`) is no longer in the list; it is
            # no error of the listing.
            with contextlib.suppress(NotFoundError):
                records.append(self.observe(record))
        if all_:
            return records
        return [r for r in records if r.status in (Status.RUNNING, Status.PAUSED)]

    def stats(self, ref: str) -> Stats:
        """Memory, cpu and pids of a running container (docker stats)."""
        record = self.observe(self.store.get(ref))
        cgroup = self.cgroup_of(record) if can_kill(record.status) else None
        if cgroup is None:
            raise FailedPreconditionError(
                f"cannot read stats of container {record.name}: it is {record.status}")
        return cgroup.stats()

    def write_changes(self, ref: str, out: IO[bytes], *, pause: bool = True) -> str:
        """Write what the container changed as a layer tar to `out` (the first half of
        docker commit); the tar's digest. With `pause`, a running container is frozen
        meanwhile, so the layer is one consistent moment of it."""
        with self.lock:
            record = self.observe(self.store.get(ref))
            frozen = pause and record.status is Status.RUNNING
            if frozen:
                self._pause(record)
        try:
            upper, _ = self._snapshots.layers(record.id)
            digest, _ = write_layer(upper, out)
        finally:
            if frozen:
                self.unpause(record.id)
        return digest

    def diff(self, ref: str) -> builtins.list[Change]:
        """What the container changed in its image's filesystem (docker diff)."""
        record = self.store.get(ref)
        upper, lowers = self._snapshots.layers(record.id)
        return changes(upper, lowers)

    @staticmethod
    def image_of(record: ContainerRecord) -> RunnableImage:
        """The image a container was created from, as recorded in its bundle."""
        return RunnableImage.of_bundle(Path(record.bundle))

    def log_path(self, ref: str) -> Path:
        return Path(self.store.get(ref).bundle) / "container.log"

    def _free_name(self) -> str:
        taken = {r.name for r in self.store.all()}
        for _ in range(100):
            name = random_name()
            if name not in taken:
                return name
        return f"dockyard_{secrets.token_hex(4)}"

    @staticmethod
    def _write_etc(bundle: Path, hostname: str) -> None:
        (bundle / "hostname").write_text(hostname + "\n")
        (bundle / "hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n")
        resolv = Path("/etc/resolv.conf")
        text = resolv.read_text() if resolv.is_file() else ""
        # A container with its own network cannot reach the host's 127.0.0.x resolver.
        lines = [ln for ln in text.splitlines() if not ln.strip().startswith("nameserver 127.")]
        (bundle / "resolv.conf").write_text("\n".join(lines) + "\n")




def _v1_dirs(cgroup: Cgroup) -> tuple[tuple[str, str], ...]:
    """(hierarchy name, container cgroup dir) for each v1 hierarchy the cgroup lives in."""
    if not isinstance(cgroup, V1Cgroup):
        return ()
    return tuple((name, str(path)) for name, path in cgroup.hierarchy_dirs.items())
