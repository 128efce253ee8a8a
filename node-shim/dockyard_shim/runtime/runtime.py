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

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from dockyard_shim.cgroups import Cgroup, CgroupDriver, Limits, Stats
from dockyard_shim.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.kernel import Kernel
from dockyard_shim.runtime import capabilities, procfs
from dockyard_shim.runtime.config import ContainerConfig, validate
from dockyard_shim.runtime.exec import ExecSpec, exec_in
from dockyard_shim.runtime.names import random_name
from dockyard_shim.runtime.ports import Images, RunnableImage, Snapshots
from dockyard_shim.runtime.process import (
    ProcessSpec,
    StartError,
    become_subreaper,
    record_exit,
)
from dockyard_shim.runtime.spawn import SandboxSpec, Spawned, spawn
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

_UNKNOWN_EXIT = 255  # nobody could reap it: the exit status is lost (Docker reports 255)
_EXIT_RECORD_GRACE = 1.0  # how long to wait for another reaper's exit record
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Exit:
    code: int
    oom_killed: bool


class Runtime:
    """Containers on this node. One per process; safe to open from several processes."""

    def __init__(self, root: Path, *, kernel: Kernel, images: Images, snapshots: Snapshots,
                 cgroups: CgroupDriver) -> None:
        self.root = root
        self._kernel = kernel
        self._images = images
        self._snapshots = snapshots
        self._cgroups = cgroups
        self.store = StateStore(root / "containers.db")
        self._pids = root / "pids"
        self._pids.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        become_subreaper(kernel)

    # ------------------------------------------------------------------ create / start

    def create(self, config: ContainerConfig) -> ContainerRecord:
        """Make a container from `config` without starting it (docker create)."""
        validate(config)
        image = self._images.runnable(config.image)
        container_id = secrets.token_hex(32)
        name = config.name or self._free_name()
        bundle = self.root / "containers" / container_id
        record = ContainerRecord(
            id=container_id, name=name, image=image.name, status=Status.CREATED,
            bundle=str(bundle), config=config.to_json(), created_at=time.time(),
            labels=dict(config.labels))
        self.store.add(record)  # the name is claimed before any disk state exists
        try:
            bundle.mkdir(parents=True)
            self._write_etc(bundle, config.hostname or container_id[:12])
            (bundle / "image.json").write_text(json.dumps(image.__dict__))
            self._snapshots.prepare(container_id, image.top_layer)
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            self.store.delete(container_id)
            raise
        return record

    def start(self, ref: str, *, backoff: float | None = None) -> ContainerRecord:
        """Start a created or stopped container; return once its command runs.

        `backoff` marks a restart by the restart policy (after that delay): it counts in
        `restart_count`; a start by hand resets the count and re-enables the policy.
        """
        with self._lock:
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
        image = self._image_of(record)
        leftover = self._cgroup(record)
        if leftover is not None:
            leftover.delete()  # from a previous run of this container
        cgroup = self._cgroups.create(record.id)
        try:
            cgroup.set_limits(Limits(memory_bytes=config.memory_bytes,
                                     cpu_millis=config.cpu_millis,
                                     pids_max=config.pids_limit))
        except BaseException:
            cgroup.delete()
            raise
        spec = SandboxSpec(
            bundle=Path(record.bundle),
            rootfs=tuple(self._snapshots.mounts(record.id)),
            process=process_spec(config, image),
            hostname=config.hostname or record.id[:12],
            network="host" if config.network == "host" else "none",
            readonly_rootfs=config.read_only,
            cgroup_v2=self._cgroups.version == 2)
        (Path(record.bundle) / "container.log").touch()
        (Path(record.bundle) / "exit.json").unlink(missing_ok=True)

        def place(pid: int) -> None:
            # Indexed before the container can run: whoever reaps it can record its exit.
            (self._pids / str(pid)).write_text(record.bundle)
            cgroup.add_process(pid)

        try:
            spawned = spawn(self._kernel, spec, place=place)
        except StartError as e:
            cgroup.delete()
            self.store.put(record.with_(status=Status.STOPPED, exit_code=e.exit_code,
                                        finished_at=time.time()))
            raise
        except BaseException:
            cgroup.delete()
            raise
        return self._running(record, spawned)

    def _running(self, record: ContainerRecord, spawned: Spawned) -> ContainerRecord:
        started = procfs.start_time(spawned.pid) or 0
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
        with self._lock:
            record = self.store.get(record.id)  # fresh, under the lock
            if record.status not in (Status.RUNNING, Status.PAUSED):
                return record
            if procfs.alive(record.pid, record.pid_start):
                cgroup = self._cgroup(record)
                frozen = cgroup is not None and cgroup.is_frozen()
                status = Status.PAUSED if frozen else Status.RUNNING
                if status is not record.status:
                    record = record.with_(status=status)
                    self.store.put(record)
                return record
            self._reap(record)
            outcome = self._collect(record)
            record = record.with_(status=Status.STOPPED, exit_code=outcome.code,
                                  oom_killed=outcome.oom_killed,
                                  finished_at=self._finished_at(record), pid=0)
            self.store.put(record)
            return record

    def _reap(self, record: ContainerRecord) -> None:
        """Collect the exit status of the container's first process if we are its parent."""
        _reap_into(record.pid, record.pid_start, Path(record.bundle))

    def _collect(self, record: ContainerRecord) -> Exit:
        exit_file = Path(record.bundle) / "exit.json"
        deadline = time.monotonic() + _EXIT_RECORD_GRACE
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # another reaper (the keeper) is writing it
        try:
            code = int(json.loads(exit_file.read_text())["exitCode"])
        except (OSError, ValueError, KeyError):
            code = _UNKNOWN_EXIT
        (self._pids / str(record.pid)).unlink(missing_ok=True)
        cgroup = self._cgroup(record)
        oom = False
        if cgroup is not None:
            oom = (cgroup.oom_kills() or 0) > 0
            if cgroup.pids():  # PID 1's death ends its pid namespace; this is a safety net
                cgroup.kill_all()
            cgroup.delete()
        return Exit(code, oom)

    @staticmethod
    def _finished_at(record: ContainerRecord) -> float:
        try:
            return float(json.loads((Path(record.bundle) / "exit.json").read_text())
                         ["finishedAt"])
        except (OSError, ValueError, KeyError):
            return time.time()

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
        return _await_pid(record.pid, record.pid_start, timeout)

    # --------------------------------------------------------------- signals and pause

    def kill(self, ref: str, signum: int = signal.SIGKILL) -> ContainerRecord:
        """Send `signum` to the container's first process (docker kill).

        Like a stop, a kill on request holds the restart policy off until a manual start.
        """
        with self._lock:
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
        with self._lock:
            return self._pause(self.observe(self.store.get(ref)))

    def _pause(self, record: ContainerRecord) -> ContainerRecord:
        require(can_pause(record.status), "pause", record)
        cgroup = self._cgroup(record)
        if cgroup is None:
            raise NotFoundError(f"container {record.name} has no cgroup to freeze")
        cgroup.freeze()
        record = record.with_(status=Status.PAUSED)
        self.store.put(record)
        return record

    def unpause(self, ref: str) -> ContainerRecord:
        with self._lock:
            record = self.observe(self.store.get(ref))
            require(can_unpause(record.status), "unpause", record)
            self._thaw(record)
            record = record.with_(status=Status.RUNNING)
            self.store.put(record)
            return record

    def _cgroup(self, record: ContainerRecord) -> Cgroup | None:
        """The container's cgroup, if it has one now."""
        if not self._cgroups.exists(record.id):
            return None
        return self._cgroups.load(record.id)

    def _thaw(self, record: ContainerRecord) -> None:
        cgroup = self._cgroup(record)
        if cgroup is not None:
            cgroup.thaw()

    # --------------------------------------------------------------------- delete / list

    def delete(self, ref: str, *, force: bool = False) -> None:
        """Remove a container and everything it owns (docker rm [-f])."""
        record = self.observe(self.store.get(ref))
        if force and record.status in (Status.RUNNING, Status.PAUSED):
            with contextlib.suppress(FailedPreconditionError):  # it may exit meanwhile
                self.kill(record.id, signal.SIGKILL)
            self._await_exit(record, 10.0)
        with self._lock:
            self._delete(self.observe(self.store.get(record.id)))

    def _delete(self, record: ContainerRecord) -> None:
        require(can_delete(record.status), "remove", record,
                "stop it first or force the removal (rm -f)")
        cgroup = self._cgroup(record)
        if cgroup is not None:
            cgroup.delete()
        with contextlib.suppress(NotFoundError):
            self._snapshots.remove(record.id)
        shutil.rmtree(record.bundle, ignore_errors=True)
        self.store.delete(record.id)

    def list(self, *, all_: bool = False) -> list[ContainerRecord]:
        """Containers, observed now; only running and paused ones unless `all_`."""
        records = [self.observe(r) for r in self.store.all()]
        if all_:
            return records
        return [r for r in records if r.status in (Status.RUNNING, Status.PAUSED)]

    def stats(self, ref: str) -> Stats:
        """Memory, cpu and pids of a running container (docker stats)."""
        record = self.observe(self.store.get(ref))
        cgroup = self._cgroup(record) if can_kill(record.status) else None
        if cgroup is None:
            raise FailedPreconditionError(
                f"cannot read stats of container {record.name}: it is {record.status}")
        return cgroup.stats()

    # ----------------------------------------------------------------------------- exec

    def exec(self, ref: str, command: tuple[str, ...], *, env: tuple[str, ...] = (),
             user: str = "", working_dir: str = "") -> str:
        """Start `command` in a running container (docker exec); return the exec's id."""
        if not command:
            raise InvalidArgumentError("exec needs a command: dockyard exec CONTAINER CMD...")
        with self._lock:
            record = self.observe(self.store.get(ref))
            if record.status is not Status.RUNNING:
                raise FailedPreconditionError(
                    f"container {record.name} is {record.status}: exec needs it running")
            config = ContainerConfig.from_json(record.config)
            validate(replace(config, env=env, working_dir=working_dir, user=user))
            base = process_spec(config, self._image_of(record))
            merged = dict(item.split("=", 1) for item in (*base.env, *env))
            process = replace(base, args=command, env=tuple(f"{k}={v}" for k, v in
                                                          merged.items()),
                              cwd=working_dir or base.cwd, user=user or base.user)
            exec_id = secrets.token_hex(16)
            directory = Path(record.bundle) / "execs" / exec_id
            directory.mkdir(parents=True)
            cgroup = self._cgroup(record)

            def place(pid: int) -> None:
                (self._pids / str(pid)).write_text(str(directory))
                if cgroup is not None:
                    cgroup.add_process(pid)

            spec = ExecSpec(record.pid, process, directory / "log",
                            cgroup_namespace=self._cgroups.version == 2)
            try:
                pid = exec_in(self._kernel, spec, place=place)
            except StartError as e:
                (directory / "exit.json").write_text(json.dumps({"exitCode": e.exit_code}))
                raise
            (directory / "pid").write_text(f"{pid} {procfs.start_time(pid) or 0}")
            return exec_id

    def exec_wait(self, exec_id: str, timeout: float | None = None) -> int:
        """Block until the exec's process exits; its exit code."""
        directory = self._exec_dir(exec_id)
        exit_file = directory / "exit.json"
        if not exit_file.exists():
            pid, started = (int(x) for x in (directory / "pid").read_text().split())
            if not _await_pid(pid, started, timeout):
                raise UnavailableError(f"exec {exec_id} still runs after {timeout:g}s")
            _reap_into(pid, started, directory)
            (self._pids / str(pid)).unlink(missing_ok=True)
        try:
            return int(json.loads(exit_file.read_text())["exitCode"])
        except (OSError, ValueError, KeyError):
            return _UNKNOWN_EXIT

    def exec_log_path(self, exec_id: str) -> Path:
        return self._exec_dir(exec_id) / "log"

    def exec_running(self, exec_id: str) -> bool:
        directory = self._exec_dir(exec_id)
        if (directory / "exit.json").exists():
            return False
        pid, started = (int(x) for x in (directory / "pid").read_text().split())
        return procfs.alive(pid, started)

    def _exec_dir(self, exec_id: str) -> Path:
        if not exec_id.isalnum():
            raise InvalidArgumentError(f"invalid exec id {exec_id!r}")
        for directory in (self.root / "containers").glob(f"*/execs/{exec_id}"):
            return directory
        raise NotFoundError(f"no such exec: {exec_id}")

    def _image_of(self, record: ContainerRecord) -> RunnableImage:
        return RunnableImage(**json.loads((Path(record.bundle) / "image.json").read_text()))

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


def _await_pid(pid: int, started: int, timeout: float | None) -> bool:
    """Wait until the process `pid` (started at `started`) has exited; pidfd, no polling."""
    if not procfs.alive(pid, started):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not procfs.alive(pid, started):
            return True  # the pid was recycled between the check and the open
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else int(timeout * 1000)))
    finally:
        os.close(fd)


def _reap_into(pid: int, started: int, directory: Path) -> None:
    """Reap `pid` if it is our exited child and record its status in `directory`."""
    if not procfs.is_zombie_of(pid, started):
        return  # reaped already: by us, or by the keeper while we were gone
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return  # someone else's child: its reaper records the exit
    record_exit(directory, status)


def process_spec(config: ContainerConfig, image: RunnableImage) -> ProcessSpec:
    """Docker's rules for what runs: ENTRYPOINT + CMD, each overridable; env merged."""
    entrypoint = image.entrypoint if config.entrypoint is None else config.entrypoint
    cmd = config.command or (image.cmd if config.entrypoint is None else ())
    args = (*entrypoint, *cmd)
    if not args:
        raise InvalidArgumentError(f"no command specified: the image {image.name} has no "
                                   "CMD or ENTRYPOINT; give one after the image name")
    env = dict(item.split("=", 1) for item in (DEFAULT_PATH, *image.env, *config.env))
    return ProcessSpec(
        args=args, env=tuple(f"{k}={v}" for k, v in env.items()),
        cwd=config.working_dir or image.working_dir or "/",
        user=config.user or image.user,
        capabilities=capabilities.resolve(config.cap_add, config.cap_drop,
                                          capabilities.last_cap()))
