"""Nothing of the runtime's own reaches into the container: no descriptor, and no way to
reopen the runtime's executable (or its descriptors) through /proc from inside.

CVE-2019-5736: a container process opened /proc/PID/exe of a runtime process that had
just joined it (`runc exec`), and wrote through it over the host's runc binary. Our
runtime processes are the host's Python interpreter until they exec; the canary is that
binary (size, mtime and bytes unchanged), and the host files behind the descriptors a
runtime process holds while it enters the container.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

import pytest

from dockyard_shim.runtime.config import ContainerConfig, validate
from dockyard_shim.runtime.exec import ExecSpec, exec_in
from dockyard_shim.runtime.process import ProcessSpec, reap_quietly
from tests.security.harness import Containers

pytestmark = pytest.mark.root


def _fds(pid: int) -> list[str]:
    return sorted(os.listdir(f"/proc/{pid}/fd"), key=int)


def test_a_container_holds_only_stdin_stdout_and_stderr(containers: Containers,
                                                        tmp_path: Path) -> None:
    """Descriptors the runtime holds when it starts the container, inheritable or not,
    are not in the container's process."""
    inheritable = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(inheritable, True)
    private = os.open(tmp_path, os.O_PATH)
    try:
        record = containers.start("sleep 60")
        assert _fds(record.pid) == ["0", "1", "2"]
        exec_id = containers.runtime.execs.start(record.id, ("sleep", "60"))
        exec_pid = containers.runtime.execs.pid(exec_id)
        try:
            assert _fds(exec_pid) == ["0", "1", "2"]
        finally:  # reaped by us: a pid namespace ends only once all of its dead are reaped
            os.kill(exec_pid, signal.SIGKILL)
            containers.runtime.execs.wait(exec_id, 10)
    finally:
        os.close(inheritable)
        os.close(private)


def _interpreter() -> tuple[int, int, str]:
    path = Path(os.path.realpath(sys.executable))
    info = path.stat()
    return info.st_size, info.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _ns_pid(pid: int) -> int:
    """`pid` as its own (innermost) pid namespace numbers it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for {pid}")


def test_a_runtime_process_entering_the_container_cannot_be_reopened_from_inside(
        containers: Containers, tmp_path: Path) -> None:
    """An exec'd process is the runtime's (the host's interpreter, all capabilities, the
    runtime's descriptors) from the moment it joins the container's pid namespace until
    its exec. Caught in that window, it must not be reachable through /proc from inside:
    neither its executable for writing (or reading), nor its descriptors."""
    canary = tmp_path / "runtime-file"
    canary.write_text("the runtime's file\n")
    held = os.open(canary, os.O_RDWR)  # a descriptor the runtime holds meanwhile
    os.set_inheritable(held, True)
    interpreter = _interpreter()
    record = containers.start("sleep 60")
    runtime = containers.runtime
    config = validate(ContainerConfig.from_json(record.config))
    attacks: list[str] = []

    def place(pid: int) -> None:  # the runtime's process waits in the container now
        target = _ns_pid(pid)
        assert Path(f"/proc/{pid}/exe").resolve() == Path(sys.executable).resolve()
        _, out = containers.exec(
            record,
            f"(exec 3>>/proc/{target}/exe) 2>/dev/null && echo opened exe for writing; "
            f"head -c 4 /proc/{target}/exe > /dev/null 2>&1 && echo read exe; "
            f"readlink /proc/{target}/fd/0 > /dev/null 2>&1 && echo followed fd; "
            f"for fd in 0 1 2 3 4 5 6 7 8 9 10 {held}; do "
            f"echo pwned 2>/dev/null >> /proc/{target}/fd/$fd && echo wrote fd $fd; done; "
            "echo attacked")
        attacks.append(out)

    process = ProcessSpec(args=("true",), env=("PATH=/bin",),
                          capabilities=frozenset(config.cap_add) or ProcessSpec.capabilities)
    spec = ExecSpec(record.pid, process, tmp_path / "exec.log")
    try:
        pid = exec_in(runtime.kernel, spec, place=place)
        reap_quietly(pid)
    finally:
        os.close(held)
    (out,) = attacks
    assert out.strip().endswith("attacked"), out
    assert "opened" not in out
    assert "read exe" not in out
    assert "followed" not in out  # (the numbers may be listed, as under runc: not the files)
    assert "wrote" not in out
    assert _interpreter() == interpreter  # the canaries
    assert canary.read_text() == "the runtime's file\n"
