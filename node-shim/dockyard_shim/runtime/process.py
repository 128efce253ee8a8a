"""Child-process plumbing shared by container start (`spawn`) and `exec`.

The pipe protocol between a caller and the process it is setting up (lines on a status
pipe, one-byte "go" signals, a close-on-exec error pipe whose EOF means exec succeeded),
the last steps before exec (stdio, no_new_privs, seccomp, capabilities, identity,
Docker's exit codes for exec failures), and exit records. Code here that runs after
fork() uses only syscalls and modules already imported: after pivot_root or setns into
a container's mounts every path Python would import from is the image's, so
`seal_imports` makes any import fail from then on.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.abc
import json
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dockyard_shim.errors import ShimError, UnavailableError
from dockyard_shim.kernel import Kernel, libseccomp
from dockyard_shim.kernel import consts as k
from dockyard_shim.runtime import capabilities
from dockyard_shim.runtime.users import resolve_user


@dataclass(frozen=True)
class ProcessSpec:
    """The process to exec: arguments, environment, working directory and identity."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""
    """`UID[:GID]` or `NAME[:GROUP]`, resolved inside the container's own /etc files."""
    capabilities: frozenset[str] = capabilities.DOCKER_DEFAULT
    no_new_privileges: bool = False
    """Set no_new_privs: execve grants nothing (setuid bits, file capabilities)."""
    seccomp: bytes = b""
    """The seccomp filter, compiled (`seccomp.compile_profile`); empty: unconfined."""


class StartError(ShimError):
    """The container could not be started; `exit_code` is what Docker would report."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


SETUP_FAILED = 125  # Docker's code when the runtime, not the command, failed
NOT_FOUND = 127
NOT_EXECUTABLE = 126



def become_subreaper(kernel: Kernel) -> None:
    """Adopt orphaned descendants (containers whose middle process exited) of this process."""
    kernel.prctl(k.PR_SET_CHILD_SUBREAPER, 1)


def signal_go(go_w: int) -> None:
    with contextlib.suppress(BrokenPipeError):  # init died: the error pipe says why
        os.write(go_w, b"g")


def await_line(fd: int, word: str, timeout: float) -> int | None:
    """Wait for the line `word [N]` on the status pipe; N (0 when absent), None on EOF.

    Reads one byte at a time so that no later line is consumed early; the lines are short.
    """
    deadline = time.monotonic() + timeout
    line = b""
    while True:
        if time.monotonic() > deadline:
            raise UnavailableError(f"the container did not start within {timeout:g}s")
        byte = os.read(fd, 1)
        if not byte:
            return None
        if byte != b"\n":
            line += byte
            continue
        name, _, value = line.decode().partition(" ")
        if name == word:
            return int(value) if value else 0
        line = b""


def read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def reap_quietly(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def close_all(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


UNKNOWN_EXIT = 255
"""The exit code when nobody could reap the process and its status is lost (as Docker)."""


@dataclass(frozen=True)
class ExitRecord:
    """How a container's (or exec's) process ended, as stored in `exit.json`."""

    code: int
    finished_at: float


def record_exit(bundle: Path, status: int) -> None:
    """Write the exit record from a wait status (whoever reaped the process calls this)."""
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    write_exit(bundle, 128 + signum if signum else os.WEXITSTATUS(status), signum)


def write_exit(bundle: Path, code: int, signum: int | None = None) -> None:
    """Write `bundle/exit.json`, atomically (temp then rename: readers see all or nothing).

    The first record wins: a second reaper's report of the same exit never overwrites it.
    """
    path = bundle / "exit.json"
    if path.exists():
        return
    record = {"exitCode": code, "signal": signum, "finishedAt": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def read_exit(bundle: Path, *, grace: float = 0.0) -> ExitRecord:
    """The exit record in `bundle`, waiting up to `grace` seconds for another reaper (the
    keeper) to write it; UNKNOWN_EXIT, finished now, when there is none."""
    path = bundle / "exit.json"
    deadline = time.monotonic() + grace
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        data = json.loads(path.read_text())
        return ExitRecord(int(data["exitCode"]), float(data["finishedAt"]))
    except (OSError, ValueError, KeyError, TypeError):
        return ExitRecord(UNKNOWN_EXIT, time.time())


class _SealedImports(importlib.abc.MetaPathFinder):
    """The first finder Python asks: it refuses every module."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> None:
        raise ImportError(f"import of {fullname} refused: this process is inside the "
                          "container's root, where a module would be the image's code run "
                          "as the node's root")


def seal_imports() -> None:
    """Refuse every import in this process from now on. Called as soon as its root is the
    container's (init after pivot_root, exec after joining the mount namespace): a lazy
    import there would load a file the image placed at the interpreter's path and run it
    with the runtime's privileges. Whatever is already imported stays usable."""
    sys.meta_path.insert(0, _SealedImports())


def setup_stdio(log_fd: int) -> None:
    """stdin from /dev/null; stdout and stderr appended to the container's log."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


_filter_loader: Kernel | None = None
"""The kernel `drop_privileges` was given, when it left the filter to `exec_command`."""


def drop_privileges(kernel: Kernel, process: ProcessSpec, last_cap: int) -> None:
    """Set no_new_privs, load the seccomp filter, and become the container's user with
    its capabilities; then only `exec_command` is left.

    The order is runc's (libcontainer's standard init). no_new_privs first: it only
    narrows what execve may grant. The filter: loading one needs CAP_SYS_ADMIN or
    no_new_privs. With no_new_privs the filter is loaded as late as it can be, just before
    execve (`exec_command`), so that none of the runtime's own last syscalls needs to be
    in the profile. Without it, the filter must be loaded now, while this process still
    holds CAP_SYS_ADMIN, before the capability sets and the uid change below; the profile
    then has to allow what follows (setgroups, setgid, setuid, capset, prctl, chdir,
    close, execve: the default profile does, and so must a custom one, as with runc).
    """
    # After pivot_root "/" is the container's root: its passwd and group files decide.
    identity = resolve_user(Path("/"), process.user)
    global _filter_loader  # noqa: PLW0603 -- this process's one exec, see exec_command
    if process.no_new_privileges:
        kernel.prctl(k.PR_SET_NO_NEW_PRIVS, 1)
        _filter_loader = kernel
    elif process.seccomp:
        libseccomp.install(kernel, process.seccomp)
    keep = capabilities.mask(process.capabilities)
    for number in range(last_cap + 1):
        if not keep & (1 << number):
            kernel.prctl(k.PR_CAPBSET_DROP, number)
    kernel.prctl(k.PR_CAP_AMBIENT, k.PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups(list(identity.groups))
    os.setgid(identity.gid)
    os.setuid(identity.uid)  # a non-root uid loses permitted and effective sets here
    if identity.uid == 0:
        kernel.capset(keep, keep, 0)
    else:
        kernel.capset(0, 0, 0)


def default_signals() -> None:
    """Give the command the signal state a fresh process has: nothing blocked, nothing
    ignored. exec keeps both, and Python ignores SIGPIPE and SIGXFSZ from its start, so
    without this a container's `yes | head` would see EPIPE where it should die."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for signum in range(1, signal.NSIG):  # plain ints: a third of valid_signals()'s cost
        if signal.getsignal(signum) is signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)


def exec_command(process: ProcessSpec, err_w: int) -> None:
    """exec the command, after `drop_privileges`; with no_new_privs set, the seccomp
    filter is loaded here, the last step before execve."""
    default_signals()
    env = dict(item.split("=", 1) for item in process.env)
    # Close every inherited descriptor before the chdir: a working directory such as
    # /proc/self/fd/N would otherwise follow a host directory the runtime held open out of
    # the container (CVE-2024-21626). An exec'd process forks from the daemon, which holds
    # whatever it holds at that moment.
    os.closerange(3, err_w)
    os.closerange(err_w + 1, max_fd())
    limit_open_files()  # after closing: max_fd() follows the soft limit
    try:
        os.chdir(process.cwd)
    except OSError as e:
        fail(err_w, SETUP_FAILED, f"working directory {process.cwd}: {e.strerror}")
    if process.no_new_privileges and process.seccomp:
        _load_filter_last(process.seccomp, err_w)
    try:
        os.execvpe(process.args[0], list(process.args), env)  # noqa: S606 -- the command
    except OSError as e:
        name = process.args[0]
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            fail(err_w, NOT_FOUND,
                  f'exec: "{name}": executable file not found in $PATH')
        fail(err_w, NOT_EXECUTABLE, f'exec: "{name}": {e.strerror}')


def _load_filter_last(program: bytes, err_w: int) -> None:
    loader = _filter_loader
    if loader is None:
        fail(err_w, SETUP_FAILED, "the seccomp filter was not prepared: drop_privileges "
             "must run before exec_command")
        return
    try:
        libseccomp.install(loader, program)
    except OSError as e:
        fail(err_w, SETUP_FAILED, f"cannot load the seccomp filter: {e.strerror}")


def fail(err_w: int, code: int, message: str) -> None:
    try:
        os.write(err_w, f"{code} {message}".encode())
    finally:
        os._exit(code)


def max_fd() -> int:
    return os.sysconf("SC_OPEN_MAX")


NOFILE_SOFT, NOFILE_HARD = 1024, 524288
"""A container's default RLIMIT_NOFILE, as containerd and Docker 25+ give it: programs
that size tables by the limit (or close every descriptor up to it) stay fast, and those
that need more raise their soft limit up to the hard one."""


def limit_open_files() -> None:
    """Set the default RLIMIT_NOFILE, never above the runtime's own hard limit (raising a
    hard limit needs CAP_SYS_RESOURCE on the host, and a node may set it lower)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = NOFILE_HARD if hard == resource.RLIM_INFINITY else min(NOFILE_HARD, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(NOFILE_SOFT, ceiling), ceiling))
