"""Run another process in a running container (docker exec).

    caller (child subreaper)
      └─ middle   joins the container's ipc, uts, net, (cgroup,) pid and mount namespaces
         │        (mount last: setns resets root and cwd to the container's root), forks,
         │        reports the pid and exits
         └─ process  in the container's pid namespace, reparented to the caller; waits
                     until the caller has placed it in the container's cgroups, then drops
                     to the container's capabilities and identity and execs

The same pipe protocol as `spawn`: a failure before exec (command not found: 127) comes
back on the close-on-exec error pipe.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard_shim.kernel import Kernel
from dockyard_shim.runtime import capabilities
from dockyard_shim.runtime.process import (
    SETUP_FAILED,
    ProcessSpec,
    StartError,
    await_line,
    close_all,
    drop_privileges,
    exec_command,
    fail,
    read_all,
    reap_quietly,
    seal_imports,
    setup_stdio,
    signal_go,
)

# setns order: the mount namespace last, since joining it changes the root we resolve
# /proc paths against; they are all opened before joining any.
_NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt")


@dataclass(frozen=True)
class ExecSpec:
    container_pid: int
    """The host pid of the container's first process, whose namespaces are joined."""
    process: ProcessSpec
    log_path: Path
    cgroup_namespace: bool = False


def exec_in(kernel: Kernel, spec: ExecSpec, *, place: Callable[[int], None],
            timeout: float = 10.0) -> int:
    """Start `spec.process` in the container; its host pid once it runs (or StartError)."""
    wanted = [ns for ns in _NAMESPACES if ns != "cgroup" or spec.cgroup_namespace]
    if _own_user_namespace(spec.container_pid):
        wanted.append("user")  # last: it leaves no capability over the others
    fds = [os.open(f"/proc/{spec.container_pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
           for ns in wanted]
    status_r, status_w = os.pipe()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    last_cap = capabilities.last_cap()
    log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o640)
    middle = os.fork()
    if middle == 0:  # ------------------------------------------------------- middle
        try:
            close_all(status_r, go_w, err_r)
            _middle(kernel, spec, fds=fds, log_fd=log_fd, last_cap=last_cap,
                    status_w=status_w, go_r=go_r, err_w=err_w)
        except BaseException as e:  # report anything, then exit
            fail(err_w, SETUP_FAILED, f"cannot enter the container: {e}")
        os._exit(SETUP_FAILED)
    close_all(status_w, go_r, err_w, log_fd, *fds)
    pid = None
    try:
        pid = await_line(status_r, "pid", timeout)
        reap_quietly(middle)
        if pid is not None:
            place(pid)
            signal_go(go_w)
        os.close(go_w)
        go_w = -1
        failure = read_all(err_r)
    except BaseException:
        if go_w != -1:
            os.close(go_w)
        reap_quietly(middle)
        if pid is not None:
            reap_quietly(pid)
        raise
    finally:
        close_all(status_r, err_r)
    if failure or pid is None:
        code_text, _, message = failure.partition(" ")
        if pid is not None:
            reap_quietly(pid)
        raise StartError(message or "the process exited during setup",
                         int(code_text) if code_text.isdigit() else SETUP_FAILED)
    return pid


def _own_user_namespace(pid: int) -> bool:
    """Whether the container runs in a user namespace of its own (`--userns auto`)."""
    return os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino


def _middle(kernel: Kernel, spec: ExecSpec, *, fds: list[int], log_fd: int, last_cap: int,
            status_w: int, go_r: int, err_w: int) -> None:
    os.setsid()
    for fd in fds:
        kernel.setns(fd, 0)  # 0: any type; the fd says which namespace
        os.close(fd)
    seal_imports()  # the root is the container's since the mount namespace was joined
    child = os.fork()
    if child == 0:  # ------------------------------------------------------ process
        try:
            if os.read(go_r, 1) != b"g":
                os._exit(SETUP_FAILED)  # the caller could not place us in the cgroups
            os.chdir("/")  # relative to the container's root, which setns made ours
            setup_stdio(log_fd)
            drop_privileges(kernel, spec.process, last_cap)
            exec_command(spec.process, err_w)
        except BaseException as e:  # report anything, then exit
            fail(err_w, SETUP_FAILED, f"exec setup failed: {e}")
        os._exit(SETUP_FAILED)
    os.write(status_w, f"pid {child}\n".encode())
    os._exit(0)  # the process is reparented to the caller, a child subreaper
