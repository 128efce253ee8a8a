"""Start a container process: namespaces, root filesystem, identity, capabilities, exec.

Process tree, as seen from the host:

    caller (daemon, or any process using the runtime) -- a child subreaper
      └─ init   PID 1 of a new pid namespace: joins its cgroups, enters new mount, uts,
                ipc, net (and cgroup) namespaces, builds the root filesystem, pivots
                into it, drops to Docker's capability set and execs the command

init is created through a short-lived middle process that enters the new pid namespace
(unshare affects only its future children), forks init and exits at once, as
containerd-shim and conmon double-fork. init is then reparented to the nearest child
subreaper: the caller, which reaps it and records its exit status (`record_exit`). No
process per container stays behind, and when the caller dies its own subreaper ancestor
(the daemon's keeper) adopts the containers and records their exits instead.

Synchronisation with pipes, so the caller can act at the right moments: the middle
process reports init's host pid; init creates its namespaces and reports "ready", the
caller `connect`s it (network into the new network namespace) and `place`s it (into its
cgroups). With cgroup v2, placing comes first, so that the new cgroup namespace is rooted
at the container's cgroup. With v1 there is no cgroup namespace, and the caller places
init while init builds its root filesystem: joining v1 hierarchies waits for RCU grace
periods (~12 ms), which then overlaps the mounts. Either way init waits for the caller's
last word before it execs, so the command runs inside its cgroups from its first
instruction. A failure before exec comes back on a close-on-exec pipe, so a successful
exec is simply EOF.

Code after fork() runs in a copy of a possibly multi-threaded process: it uses only
syscalls and simple Python, and always ends in exec or os._exit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard_shim.errors import ShimError, UnavailableError
from dockyard_shim.kernel import Kernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.mounts import Mount, perform, resolve_in_root
from dockyard_shim.runtime import capabilities, rootfs
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


@dataclass(frozen=True)
class SandboxSpec:
    """Everything the spawner needs, already validated and resolved by the runtime."""

    bundle: Path
    """The container's directory: rootfs mount point, log, exit status."""
    rootfs: tuple[Mount, ...]
    """The snapshot's mounts (no target): mounted at `bundle/rootfs`."""
    process: ProcessSpec
    hostname: str
    network: str = "none"
    """`none` (own namespace, loopback up), `host`, or `bridge` (caller adds the veth)."""
    volumes: tuple[Mount, ...] = ()
    """Bind mounts; targets are container paths, resolved inside the rootfs."""
    readonly_rootfs: bool = False
    cgroup_v2: bool = False

    @property
    def root(self) -> Path:
        return self.bundle / "rootfs"

    @property
    def log_path(self) -> Path:
        return self.bundle / "container.log"

    @property
    def exit_path(self) -> Path:
        return self.bundle / "exit.json"


@dataclass(frozen=True)
class Spawned:
    pid: int
    """init's host pid; the caller (a child subreaper) is its parent and must reap it."""


class StartError(ShimError):
    """The container could not be started; `exit_code` is what Docker would report."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_SETUP_FAILED = 125  # Docker's code when the runtime, not the command, failed
_NOT_FOUND = 127
_NOT_EXECUTABLE = 126


Hook = Callable[[int], None]


def spawn(kernel: Kernel, spec: SandboxSpec, *, place: Hook | None = None,
          connect: Hook | None = None, timeout: float = 10.0) -> Spawned:
    """Start the container and return once its command was exec'd (or raise StartError).

    The caller must be a child subreaper (`become_subreaper`), or init would be adopted by
    the host's PID 1 and its exit status lost. `place(pid)` runs before init creates its
    namespaces, `connect(pid)` after; an exception from either aborts the start (init
    exits, and is reaped here) and propagates.
    """
    spec.root.mkdir(parents=True, exist_ok=True)
    spec.exit_path.unlink(missing_ok=True)
    status_r, status_w = os.pipe()          # middle and init -> caller: "pid N", "ready"
    go_r, go_w = os.pipe()                  # caller -> init: "go"
    err_r, err_w = os.pipe2(os.O_CLOEXEC)   # init -> caller: failure text; EOF on exec
    middle = os.fork()
    if middle == 0:  # ------------------------------------------------------- middle
        try:
            _close(status_r, go_w, err_r)
            _middle_main(kernel, spec, status_w, go_r, err_w)
        finally:
            os._exit(_SETUP_FAILED)
    _close(status_w, go_r, err_w)
    pid = None
    try:
        pid = _await_line(status_r, "pid", timeout)
        _reap_quietly(middle)  # it exits right after reporting: init is ours now
        if pid is not None:  # None: setup failed early, and the error pipe says why
            _handshake(spec, pid, status_r=status_r, go_w=go_w, place=place or _nothing,
                       connect=connect or _nothing, timeout=timeout)
        os.close(go_w)
        go_w = -1
        failure = _read_all(err_r)
    except BaseException:
        if go_w != -1:
            os.close(go_w)  # init sees EOF instead of "go" and exits
        _reap_quietly(middle)
        if pid is not None:
            _reap_quietly(pid)
        raise
    finally:
        _close(status_r, err_r)
    if failure or pid is None:
        code_text, _, message = failure.partition(" ")
        if pid is not None:
            _reap_quietly(pid)
        raise StartError(message or "the container exited during setup",
                         int(code_text) if code_text.isdigit() else _SETUP_FAILED)
    return Spawned(pid)


def _nothing(pid: int) -> None:
    """The hook that does nothing."""


def _handshake(spec: SandboxSpec, pid: int, *, status_r: int, go_w: int, place: Hook,
               connect: Hook, timeout: float) -> None:
    """Lead init through its setup, running the caller's hooks at their moments."""
    if spec.cgroup_v2:
        place(pid)  # before the cgroup namespace exists
    _signal(go_w)
    if _await_line(status_r, "ready", timeout) is None:
        return  # init died: the error pipe says why
    connect(pid)
    _signal(go_w)  # init builds its root filesystem now...
    if not spec.cgroup_v2:
        place(pid)  # ...while we join it to its v1 cgroups
    _signal(go_w)  # init may exec


def become_subreaper(kernel: Kernel) -> None:
    """Adopt orphaned descendants (containers whose middle process exited) of this process."""
    kernel.prctl(k.PR_SET_CHILD_SUBREAPER, 1)


def _signal(go_w: int) -> None:
    with contextlib.suppress(BrokenPipeError):  # init died: the error pipe says why
        os.write(go_w, b"g")


def _await_line(fd: int, word: str, timeout: float) -> int | None:
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


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _reap_quietly(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


# ------------------------------------------------------------------------------ middle


def _middle_main(kernel: Kernel, spec: SandboxSpec, status_w: int, go_r: int,
                 err_w: int) -> None:
    os.setsid()  # a signal to the caller's process group must not reach the container
    kernel.unshare(k.CLONE_NEWPID)  # our next child is PID 1 of a new pid namespace
    init = os.fork()
    if init == 0:  # --------------------------------------------------------- init
        try:
            _init_main(kernel, spec, status_w, go_r, err_w)
        except BaseException as e:  # report anything, then exit
            _fail(err_w, _SETUP_FAILED, f"container setup failed: {e}")
        os._exit(_SETUP_FAILED)
    os.write(status_w, f"pid {init}\n".encode())
    os._exit(0)  # init is reparented to the caller, the nearest child subreaper


def record_exit(bundle: Path, status: int) -> None:
    """Write the container's exit record from a wait status (whoever reaped it calls this).

    Atomic (temp then rename): readers see the whole record or none. The first record
    wins: a second reaper report of the same exit never overwrites it.
    """
    path = bundle / "exit.json"
    if path.exists():
        return
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    record = {"exitCode": 128 + signum if signum else os.WEXITSTATUS(status),
              "signal": signum, "finishedAt": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


# -------------------------------------------------------------------------------- init


def _init_main(kernel: Kernel, spec: SandboxSpec, status_w: int, go_r: int,
               err_w: int) -> None:
    # Read before pivot_root: afterwards the host's files (and Python's own modules, which
    # it may import lazily, codecs included) are out of reach.
    last_cap = capabilities.last_cap()
    if os.read(go_r, 1) != b"g":
        os._exit(_SETUP_FAILED)  # the caller gave up before placing us
    # Opened now: the log lives in the bundle, which pivot_root hides from the container.
    log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o640)
    flags = k.CLONE_NEWNS | k.CLONE_NEWUTS | k.CLONE_NEWIPC
    if spec.network != "host":
        flags |= k.CLONE_NEWNET
    if spec.cgroup_v2:
        flags |= k.CLONE_NEWCGROUP  # placed already: our cgroup becomes the namespace root
    kernel.unshare(flags)
    os.write(status_w, b"ready\n")
    os.close(status_w)
    if os.read(go_r, 1) != b"g":
        os._exit(_SETUP_FAILED)  # the caller gave up
    if spec.network != "host":
        _loopback_up()
    kernel.sethostname(spec.hostname)
    _setup_filesystem(kernel, spec)
    _setup_stdio(log_fd)
    if os.read(go_r, 1) != b"g":
        os._exit(_SETUP_FAILED)  # the caller could not place us in our cgroups
    os.close(go_r)
    _drop_privileges(kernel, spec.process, last_cap)
    _exec(spec.process, err_w)


def _setup_filesystem(kernel: Kernel, spec: SandboxSpec) -> None:
    root = str(spec.root)
    # Nothing we mount may propagate back to the host; host mounts still reach us.
    kernel.mount("", "/", "", k.MS_REC | k.MS_SLAVE, "")
    for mount in spec.rootfs:
        perform(kernel, mount.at(root))
    # Keep the rootfs a mount point of its own even when the snapshot is a plain directory,
    # so that pivot_root accepts it.
    kernel.mount(root, root, "", k.MS_BIND | k.MS_REC, "")
    for volume in spec.volumes:
        target = _ensure(spec.root, volume.target, directory=Path(volume.source).is_dir())
        perform(kernel, volume.at(str(target)))
    plan = rootfs.plan(new_netns=spec.network != "host", cgroup_v2=spec.cgroup_v2)
    for mount in plan.mounts:
        target = _ensure(spec.root, mount.target, directory=True)
        perform(kernel, mount.at(str(target)))
    for device in plan.devices:
        path = resolve_in_root(spec.root, device.path)
        os.mknod(path, 0o020000 | device.mode, os.makedev(device.major, device.minor))
        os.chmod(path, device.mode)  # mknod's mode is filtered by the umask
    for source, link in plan.symlinks:
        os.symlink(source, resolve_in_root(spec.root, link))
    for name in ("hostname", "hosts", "resolv.conf"):
        host_file = spec.bundle / name
        if host_file.exists():
            target = _ensure(spec.root, f"/etc/{name}", directory=False)
            perform(kernel, Mount("bind", str(host_file), str(target), ("bind",)))
    if spec.readonly_rootfs:
        kernel.mount("", root, "", k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY, "")
    _mask_and_protect(kernel, spec.root, plan)
    os.chdir(root)
    kernel.pivot_root(".", ".")  # stack the old root under the new one, then detach it
    kernel.umount2(".", k.MNT_DETACH)
    os.chdir("/")


def _ensure(root: Path, path: str, *, directory: bool) -> Path:
    """The host path of container path `path`, created (as dir or empty file) if missing."""
    target = resolve_in_root(root, path)
    if directory:
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.touch()
    return target


def _mask_and_protect(kernel: Kernel, root: Path, plan: rootfs.Plan) -> None:
    for path in plan.masked:
        target = resolve_in_root(root, path)
        if target.is_dir():
            kernel.mount("tmpfs", str(target), "tmpfs", k.MS_RDONLY, "size=0")
        elif target.exists():
            kernel.mount("/dev/null", str(target), "", k.MS_BIND, "")
    for path in plan.readonly:
        target = resolve_in_root(root, path)
        if target.exists():
            kernel.mount(str(target), str(target), "", k.MS_BIND | k.MS_REC, "")
            kernel.mount("", str(target), "",
                         k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | k.MS_REC, "")


def _loopback_up() -> None:
    """Bring `lo` up in our new network namespace (SIOCGIFFLAGS, then SIOCSIFFLAGS)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _setup_stdio(log_fd: int) -> None:
    """stdin from /dev/null; stdout and stderr appended to the container's log."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _drop_privileges(kernel: Kernel, process: ProcessSpec, last_cap: int) -> None:
    # After pivot_root "/" is the container's root: its passwd and group files decide.
    identity = resolve_user(Path("/"), process.user)
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


def _exec(process: ProcessSpec, err_w: int) -> None:
    env = dict(item.split("=", 1) for item in process.env)
    try:
        os.chdir(process.cwd)
    except OSError as e:
        _fail(err_w, _SETUP_FAILED, f"working directory {process.cwd}: {e.strerror}")
    os.closerange(3, err_w)
    os.closerange(err_w + 1, _max_fd())
    try:
        os.execvpe(process.args[0], list(process.args), env)  # noqa: S606 -- the command
    except OSError as e:
        name = process.args[0]
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            _fail(err_w, _NOT_FOUND,
                  f'exec: "{name}": executable file not found in $PATH')
        _fail(err_w, _NOT_EXECUTABLE, f'exec: "{name}": {e.strerror}')


def _fail(err_w: int, code: int, message: str) -> None:
    try:
        os.write(err_w, f"{code} {message}".encode())
    finally:
        os._exit(code)


def _max_fd() -> int:
    return os.sysconf("SC_OPEN_MAX")
