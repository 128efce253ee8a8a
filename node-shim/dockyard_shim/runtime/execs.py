"""`docker exec`: extra processes in a running container, with their output and exit code.

Each exec lives under its container's bundle (`execs/<id>/`: log, pid, exit.json), so
removing the container removes its execs, and a restarted daemon still answers for them.
The process itself is started by `dockyard_shim.runtime.exec` and reaped by us (or by the
keeper, through `pids/<pid>`, if we are gone).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard_shim.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.runtime import procfs
from dockyard_shim.runtime.command import process_spec
from dockyard_shim.runtime.config import ContainerConfig, validate
from dockyard_shim.runtime.exec import ExecSpec, exec_in
from dockyard_shim.runtime.process import StartError, read_exit, write_exit
from dockyard_shim.runtime.reaping import await_pid, reap_into
from dockyard_shim.runtime.state import Status

if TYPE_CHECKING:
    from dockyard_shim.runtime.runtime import Runtime


class Execs:
    """The exec verbs of one runtime (reached as `runtime.execs`)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def start(self, ref: str, command: tuple[str, ...], *, env: tuple[str, ...] = (),
             user: str = "", working_dir: str = "") -> str:
        """Start `command` in a running container (docker exec); return the exec's id."""
        if not command:
            raise InvalidArgumentError("exec needs a command: dockyard exec CONTAINER CMD...")
        with self._runtime.lock:
            record = self._runtime.observe(self._runtime.store.get(ref))
            if record.status is not Status.RUNNING:
                raise FailedPreconditionError(
                    f"container {record.name} is {record.status}: exec needs it running")
            config = ContainerConfig.from_json(record.config)
            validate(replace(config, env=env, working_dir=working_dir, user=user))
            base = process_spec(config, self._runtime.image_of(record))
            merged = dict(item.split("=", 1) for item in (*base.env, *env))
            process = replace(base, args=command, env=tuple(f"{k}={v}" for k, v in
                                                          merged.items()),
                              cwd=working_dir or base.cwd, user=user or base.user)
            exec_id = secrets.token_hex(16)
            directory = Path(record.bundle) / "execs" / exec_id
            directory.mkdir(parents=True)
            cgroup = self._runtime.cgroup_of(record)

            identities: list[int] = []

            def place(pid: int) -> None:
                (self._runtime.pids_dir / str(pid)).write_text(str(directory))
                identities.append(procfs.identity(pid))  # before it may exec and exit
                if cgroup is not None:
                    cgroup.add_process(pid)

            spec = ExecSpec(record.pid, process, directory / "log",
                            cgroup_namespace=self._runtime.cgroups.version == 2)
            try:
                pid = exec_in(self._runtime.kernel, spec, place=place)
            except StartError as e:
                write_exit(directory, e.exit_code)
                raise
            (directory / "pid").write_text(f"{pid} {identities[0]}")
            return exec_id

    def wait(self, exec_id: str, timeout: float | None = None) -> int:
        """Block until the exec's process exits; its exit code."""
        directory = self._dir(exec_id)
        if not (directory / "exit.json").exists():
            pid, started = (int(x) for x in (directory / "pid").read_text().split())
            if not await_pid(pid, started, timeout):
                raise UnavailableError(f"exec {exec_id} still runs after {timeout:g}s")
            reap_into(pid, started, directory)
            (self._runtime.pids_dir / str(pid)).unlink(missing_ok=True)
        return read_exit(directory).code

    def log_path(self, exec_id: str) -> Path:
        return self._dir(exec_id) / "log"

    def running(self, exec_id: str) -> bool:
        directory = self._dir(exec_id)
        if (directory / "exit.json").exists():
            return False
        pid, started = (int(x) for x in (directory / "pid").read_text().split())
        return procfs.alive(pid, started)

    def pid(self, exec_id: str) -> int:
        """The host pid of the exec's process (it may have exited since)."""
        return int((self._dir(exec_id) / "pid").read_text().split()[0])

    def _dir(self, exec_id: str) -> Path:
        if not exec_id.isalnum():
            raise InvalidArgumentError(f"invalid exec id {exec_id!r}")
        for directory in (self._runtime.root / "containers").glob(f"*/execs/{exec_id}"):
            return directory
        raise NotFoundError(f"no such exec: {exec_id}")
