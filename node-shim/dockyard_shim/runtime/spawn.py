"""Start a container process: namespaces, root filesystem, identity, capabilities, exec.

Process tree, as seen from the host:

    caller (daemon, or any process using the runtime) -- a child subreaper
      └─ init   PID 1 of a new pid namespace: joins its cgroups, enters new mount, uts,
                ipc, net (and cgroup) namespaces, builds the root filesystem, pivots
                into it, drops to Docker's capability set and execs the command

By default the calling thread forks init straight into a new pid namespace
(`fork_here`): `unshare(CLONE_NEWPID)` only sets the namespace of the thread's future
children, and `setns` back to its own namespace right after the fork restores it. The
daemon passes a `ForkServer` as `fork` instead, which clones init with CLONE_PARENT from
a small helper process (cheaper than a fork of the daemon, see `forkserver`). Either
way there is no middle process (containerd-shim and conmon double-fork), and init is the
caller's child; when the caller dies, its own subreaper ancestor (the daemon's keeper)
adopts the containers and records their exits (`record_exit`).

init joins its cgroups itself, first thing: it writes "0" to each file of
`cgroup_join`. With cgroup v1 those are the `tasks` files, and moving only the calling
thread (a forked child has one) spares the kernel the global threadgroup lock, whose first
use after an idle spell waits an RCU grace period (~12 ms). With v2 it is `cgroup.procs`,
and joining before the namespaces are made roots the new cgroup namespace at the
container's cgroup.

Synchronisation with pipes, so the caller can act at the right moments: the caller
`place`s init (records its pid) while init sets up; init reports "ready" once its
namespaces exist, and the caller `connect`s it (network into the new network namespace);
init builds its root filesystem meanwhile and waits for the caller's "go" before it
execs, so the command never runs before both hooks did. A failure before exec comes back
on a close-on-exec pipe, so a successful exec is simply EOF.

Code after fork() runs in a copy of a possibly multi-threaded process: it uses only
syscalls and simple Python, and always ends in exec or os._exit.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from dockyard_shim.errors import ShimError
from dockyard_shim.kernel import Kernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.mounts import (
    Mount,
    attach,
    clone_tree,
    make_in_root,
    open_in_root,
    perform,
    resolve_in_root,
)
from dockyard_shim.runtime import capabilities, procfs, rootfs, userns
from dockyard_shim.runtime.loopback import loopback_up
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
from dockyard_shim.runtime.sysctls import Sysctl
from dockyard_shim.runtime.userns import IdMap


@dataclass(frozen=True)
class DataMount:
    """A bind of host data (a volume, a host path) or a private tmpfs, at a container path.

    Both ends are opened by descriptor, inside their roots (`mounts.open_in_root`): the
    target inside the container's root, a `subpath` inside `source`. So a link planted in a
    shared volume, even while the container starts, cannot move the mount out of either.
    """

    target: str
    source: str = ""
    """The host directory or file to bind; empty for a tmpfs."""
    subpath: str = ""
    """Bind only this directory under `source` (made if missing)."""
    readonly: bool = False
    tmpfs: str = ""
    """A tmpfs's options (`mode=1777,size=1048576`) when `source` is empty."""
    tree: int = -1
    """A detached mount (open_tree) to attach instead of binding `source`: a provider's
    export, which must stay a peer of its volume's hub. A descriptor of the caller's."""
    fill: bool = False
    """When `source` is empty, first copy into it what the image holds at `target`: how
    Docker fills a new volume (local volumes only; never a host path)."""


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
    volumes: tuple[DataMount, ...] = ()
    """Binds and tmpfs (`datamounts`), mounted parents first."""
    readonly_rootfs: bool = False
    cgroup_join: tuple[str, ...] = ()
    """Files init writes "0" to, to join its cgroups (`Cgroup.join_files`)."""
    cgroup_v2: bool = False
    cgroup_v1_dirs: tuple[tuple[str, str], ...] = ()
    """cgroup v1: (hierarchy name such as `memory` or `cpu,cpuacct`, host directory of the
    container's cgroup in it), shown read-only under /sys/fs/cgroup as Docker does."""
    id_map: IdMap | None = None
    """With a user namespace: the ids its root and users are on the node (`userns`)."""
    userns_fd: int = -1
    """With a user namespace: it, made and mapped by the caller (`userns.create_namespace`);
    a descriptor of the caller's, which init joins last."""
    sysctls: tuple[Sysctl, ...] = ()
    """Written in this order into the container's own /proc/sys (`sysctls.check_all`)."""

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


Hook = Callable[[int], None]


@dataclass(frozen=True)
class InitPipes:
    """init's ends of spawn's three pipes (see the module doc)."""

    status_w: int
    go_r: int
    err_w: int


Fork = Callable[[SandboxSpec, InitPipes], int]
"""Makes init, the caller's child (a `ForkServer`, or `fork_here` by default); its pid."""


def spawn(kernel: Kernel, spec: SandboxSpec, *, place: Hook | None = None,
          connect: Hook | None = None, fork: Fork | None = None,
          timeout: float = 10.0) -> Spawned:
    """Start the container and return once its command was exec'd (or raise StartError).

    init is the caller's child, which must reap it (`record_exit`). `place(pid)` runs
    before the command can start, `connect(pid)` once init's namespaces exist; an
    exception from either aborts the start (init exits, and is reaped here) and propagates.
    `fork` makes init; by default this process forks it.
    """
    spec.root.mkdir(parents=True, exist_ok=True)
    spec.exit_path.unlink(missing_ok=True)
    status_r, status_w = os.pipe()          # init -> caller: "ready"
    go_r, go_w = os.pipe()                  # caller -> init: "go"
    err_r, err_w = os.pipe2(os.O_CLOEXEC)   # init -> caller: failure text; EOF on exec
    pipes = InitPipes(status_w, go_r, err_w)
    try:
        if fork is None:
            pid = fork_here(kernel, spec, pipes, parent_ends=(status_r, go_w, err_r))
        else:
            pid = fork(spec, pipes)
    except BaseException:
        close_all(status_r, go_w, err_r)
        raise
    finally:
        close_all(status_w, go_r, err_w)
    try:
        (place or _nothing)(pid)
        if await_line(status_r, "ready", timeout) is not None:  # None: init failed
            (connect or _nothing)(pid)
            signal_go(go_w)
        os.close(go_w)
        go_w = -1
        failure = read_all(err_r)
    except BaseException:
        if go_w != -1:
            os.close(go_w)  # init sees EOF instead of "go" and exits
        reap_quietly(pid)
        raise
    finally:
        close_all(status_r, err_r)
    if failure:
        code_text, _, message = failure.partition(" ")
        reap_quietly(pid)
        raise StartError(message or "the container exited during setup",
                         int(code_text) if code_text.isdigit() else SETUP_FAILED)
    return Spawned(pid)


def _nothing(pid: int) -> None:
    """The hook that does nothing."""


def fork_here(kernel: Kernel, spec: SandboxSpec, pipes: InitPipes, *,
              parent_ends: tuple[int, ...] = ()) -> int:
    """Fork init from this process, which may have threads; `parent_ends` are closed in
    init (so that the caller's death is EOF to it)."""
    pid = _fork_in_new_pid_namespace(kernel)
    if pid == 0:
        close_all(*parent_ends)
        run_init(kernel, spec, pipes)
    return pid


def _fork_in_new_pid_namespace(kernel: Kernel) -> int:
    """fork(), the child becoming PID 1 of a new pid namespace; 0 in the child."""
    own = os.open("/proc/thread-self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.unshare(k.CLONE_NEWPID)  # for this thread's next child only...
        try:
            pid = os.fork()
        except BaseException:
            kernel.setns(own, k.CLONE_NEWPID)
            raise
        if pid != 0:
            kernel.setns(own, k.CLONE_NEWPID)  # ...as the setns back makes sure
    finally:
        os.close(own)
    return pid


def run_init(kernel: Kernel, spec: SandboxSpec, pipes: InitPipes) -> NoReturn:
    """Be init, in a child just forked: set up, then exec the command or exit failed."""
    try:
        _init_main(kernel, spec, pipes)
    except BaseException as e:  # report anything, then exit
        fail(pipes.err_w, SETUP_FAILED, f"container setup failed: {e}")
    finally:
        os._exit(SETUP_FAILED)


# -------------------------------------------------------------------------------- init


def _init_main(kernel: Kernel, spec: SandboxSpec, pipes: InitPipes) -> None:
    status_w, go_r, err_w = pipes.status_w, pipes.go_r, pipes.err_w
    os.setsid()  # a signal to the caller's process group must not reach the container
    for path in spec.cgroup_join:
        _join_cgroup(path)
    # Read before pivot_root: afterwards the host's files (and Python's own modules, which
    # it may import lazily, codecs included) are out of reach.
    last_cap = capabilities.last_cap()
    # Opened now: the log lives in the bundle, which pivot_root hides from the container.
    log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o640)
    flags = k.CLONE_NEWNS | k.CLONE_NEWUTS | k.CLONE_NEWIPC
    if spec.network != "host":
        flags |= k.CLONE_NEWNET
    if spec.cgroup_v2:
        flags |= k.CLONE_NEWCGROUP  # joined already: our cgroup becomes the namespace root
    kernel.unshare(flags)
    os.write(status_w, b"ready\n")
    os.close(status_w)
    if spec.network != "host":
        loopback_up()
    kernel.sethostname(spec.hostname)
    if spec.id_map is not None:
        userns.setup_identity(kernel, spec.id_map)
    _setup_filesystem(kernel, spec)
    setup_stdio(log_fd)
    if os.read(go_r, 1) != b"g":
        os._exit(SETUP_FAILED)  # the caller gave up
    os.close(go_r)
    if spec.userns_fd >= 0:
        userns.join(kernel, spec.userns_fd)
    # Nothing of the caller's may reach the command, not even for the chdir to its
    # working directory: a directory descriptor still open then would let a working
    # directory of /proc/self/fd/N start the command outside its root (CVE-2024-21626).
    os.closerange(3, err_w)
    os.closerange(err_w + 1, os.sysconf("SC_OPEN_MAX"))
    drop_privileges(kernel, spec.process, last_cap)
    exec_command(spec.process, err_w)


def _join_cgroup(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")  # 0: the writer itself
    except OSError as e:
        raise OSError(e.errno, f"cannot join cgroup {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def _setup_filesystem(kernel: Kernel, spec: SandboxSpec) -> None:
    root = str(spec.root)
    # Nothing we mount may propagate back to the host; host mounts still reach us.
    kernel.mount("", "/", "", k.MS_REC | k.MS_SLAVE, "")
    if spec.userns_fd >= 0:
        _map_layers(kernel, spec)
    for mount in spec.rootfs:
        perform(kernel, mount.at(root))
    # Keep the rootfs a mount point of its own even when the snapshot is a plain directory,
    # so that pivot_root accepts it.
    kernel.mount(root, root, "", k.MS_BIND | k.MS_REC, "")
    for data in sorted(spec.volumes, key=lambda d: d.target.rstrip("/").count("/")):
        _mount_data(kernel, root, data, spec.userns_fd)
    plan = rootfs.plan(new_netns=spec.network != "host", cgroup_v2=spec.cgroup_v2,
                       tty_gid=spec.id_map.host_gid(rootfs.TTY_GID) if spec.id_map
                       else rootfs.TTY_GID)
    proc_device = -1
    for mount in plan.mounts:
        _refuse_links(kernel, root, mount)
        target = make_in_root(spec.root, mount.target, directory=True)
        perform(kernel, mount.at(str(target)))
        if mount.type == "proc":
            proc_device = os.stat(target, follow_symlinks=False).st_dev
    with userns.as_node_root(kernel, spec.id_map):  # sysctl files admit only uid 0
        _write_sysctls(kernel, spec, proc_device)  # before /proc/sys is made read-only
    if spec.cgroup_v1_dirs:
        _mount_cgroup_v1(kernel, spec)
    for device in plan.devices:
        path = resolve_in_root(spec.root, device.path)
        os.mknod(path, 0o020000 | device.mode, os.makedev(device.major, device.minor))
        os.chmod(path, device.mode)  # mknod's mode is filtered by the umask
    for source, link in plan.symlinks:
        os.symlink(source, resolve_in_root(spec.root, link))
    for name in ("hostname", "hosts", "resolv.conf"):
        host_file = spec.bundle / name
        if host_file.exists():
            if spec.id_map is not None:  # the container's root may edit them, as root can
                os.chown(host_file, spec.id_map.uid, spec.id_map.gid)
            target = make_in_root(spec.root, f"/etc/{name}", directory=False)
            perform(kernel, Mount("bind", str(host_file), str(target), ("bind",)))
    if spec.readonly_rootfs:
        kernel.mount("", root, "", k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY, "")
    _mask_and_protect(kernel, spec.root, plan)
    os.chdir(root)
    kernel.pivot_root(".", ".")  # stack the old root under the new one, then detach it
    seal_imports()  # every path is the image's now
    kernel.umount2(".", k.MNT_DETACH)
    os.chdir("/")


def _write_sysctls(kernel: Kernel, spec: SandboxSpec, proc_device: int) -> None:
    """Write the container's sysctls into the procfs just mounted at its /proc (it shows
    the namespaces of the writer, init: the container's own). Any failure fails the
    start, naming the sysctl: a container never runs without a setting it asked for."""
    if not spec.sysctls:
        return
    try:
        proc = procfs.open_procfs(kernel, str(spec.root), "/proc", device=proc_device)
    except (OSError, ShimError) as e:
        raise StartError(f"--sysctl {spec.sysctls[0].name}: cannot open the container's "
                         f"/proc: {_reason(e)}", SETUP_FAILED) from e
    try:
        for sysctl in spec.sysctls:
            try:
                procfs.write_verified(kernel, proc, f"sys/{sysctl.path}",
                                      sysctl.value.encode())
            except (OSError, ShimError) as e:
                raise StartError(f"--sysctl {sysctl.name}={sysctl.value}: cannot write "
                                 f"/proc/sys/{sysctl.path}: {_reason(e)}",
                                 SETUP_FAILED) from e
    finally:
        os.close(proc)


def _reason(error: Exception) -> str:
    """The kernel's word for an OSError (`No such file or directory`), else the message."""
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def _refuse_links(kernel: Kernel, root: str, mount: Mount) -> None:
    """Refuse to mount proc, sysfs, /dev and the rest where the image has a symbolic link
    on the way to their mount point (CVE-2019-16884: a /proc that is a link moved procfs
    where the runtime's later checks and writes did not look). Such an image is broken
    or hostile; runc refuses it too. A missing path is fine: it is made inside the root."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = kernel.openat2(root_fd, mount.target.lstrip("/") or ".",
                            os.O_PATH | os.O_CLOEXEC,
                            k.RESOLVE_IN_ROOT | k.RESOLVE_NO_SYMLINKS)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StartError(
                f"{mount.target} is a symbolic link in the image: {mount.type} must be "
                "mounted on a real directory (refused, see CVE-2019-16884)",
                SETUP_FAILED) from None
        raise
    finally:
        os.close(root_fd)
    os.close(fd)


def _map_layers(kernel: Kernel, spec: SandboxSpec) -> None:
    """Cover each directory the root filesystem is made of with a copy of itself that
    carries the user namespace's ids (in this mount namespace only), so that the overlay
    mounted next shows the image's root as the container's root (`userns`)."""
    for mount in spec.rootfs:
        found = userns.layer_dirs(mount.options) if mount.type == "overlay" else [mount.source]
        for directory in found:
            where = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                tree = _clone(kernel, where, f"the image layer {directory}",
                              userns_fd=spec.userns_fd)
                try:
                    attach(kernel, tree, where)
                finally:
                    os.close(tree)
            finally:
                os.close(where)


def _mount_data(kernel: Kernel, root: str, data: DataMount, userns_fd: int = -1) -> None:
    """Mount one volume, host path or tmpfs. With a user namespace (`userns_fd`) binds
    carry its ids, so that the volume's root-owned files are the container root's."""
    directory = data.tree >= 0 or not data.source or data.subpath or os.path.isdir(data.source)
    target = open_in_root(kernel, root, data.target, make="dir" if directory else "file")
    try:
        if not data.source and data.tree < 0:
            kernel.mount("tmpfs", f"/proc/self/fd/{target}", "tmpfs",
                         k.MS_NOSUID | k.MS_NODEV, data.tmpfs)
        elif data.tree >= 0 and userns_fd < 0:
            attach(kernel, data.tree, target)  # the export as it is; the caller closes it
        else:
            tree = _data_tree(kernel, data, userns_fd)
            try:
                if data.fill and not data.subpath and not os.listdir(data.source):
                    # Into the volume through its tree: with a user namespace, the image's
                    # ids land on disk as the image has them.
                    _copy_tree(f"/proc/self/fd/{target}", f"/proc/self/fd/{tree}")
                if data.readonly:  # after the fill, before anyone sees it
                    kernel.mount_setattr(tree, "", k.AT_EMPTY_PATH | k.AT_RECURSIVE,
                                         k.MOUNT_ATTR_RDONLY)
                attach(kernel, tree, target)
            finally:
                os.close(tree)
    finally:
        os.close(target)


def _data_tree(kernel: Kernel, data: DataMount, userns_fd: int) -> int:
    """A detached, still writable copy of what `data` binds: a provider's export, a
    volume's subpath or the host path itself (the node's own, checked against its
    allowlist)."""
    what = f"the volume at {data.target}"
    if data.tree >= 0:
        return _clone(kernel, data.tree, what, userns_fd=userns_fd)
    if data.subpath:
        source = open_in_root(kernel, data.source, data.subpath, make="dir")
    else:
        source = os.open(data.source, os.O_PATH | os.O_CLOEXEC)
    try:
        return _clone(kernel, source, what, userns_fd=userns_fd)
    finally:
        os.close(source)


def _clone(kernel: Kernel, source: int, what: str, *, userns_fd: int = -1) -> int:
    try:
        return clone_tree(kernel, source, userns_fd=userns_fd)
    except OSError as e:
        if userns_fd < 0 or e.errno != errno.EINVAL:
            raise
        raise StartError(f"{what}: cannot map its ids into the user namespace: its "
                         "filesystem has no idmapped mounts (ext4, xfs, btrfs have; "
                         "tmpfs since Linux 6.3)", SETUP_FAILED) from None


def _copy_tree(source: str, destination: str) -> None:
    """Copy the tree under `source` into the existing directory `destination`: files,
    directories and links (never followed), with modes, owners and times; devices and
    fifos are not data. Nothing else runs in this container yet, so nothing moves."""
    for entry in os.scandir(source):
        here, there = entry.path, os.path.join(destination, entry.name)
        info = entry.stat(follow_symlinks=False)
        if entry.is_symlink():
            os.symlink(os.readlink(here), there)
        elif entry.is_dir(follow_symlinks=False):
            os.mkdir(there)
            _copy_tree(here, there)
        elif entry.is_file(follow_symlinks=False):
            shutil.copyfile(here, there, follow_symlinks=False)
        else:
            continue
        os.chown(there, info.st_uid, info.st_gid, follow_symlinks=False)
        if not entry.is_symlink():
            os.chmod(there, stat.S_IMODE(info.st_mode))
        os.utime(there, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
    info = os.stat(source)
    os.chown(destination, info.st_uid, info.st_gid)
    os.chmod(destination, stat.S_IMODE(info.st_mode))


def _mount_cgroup_v1(kernel: Kernel, spec: SandboxSpec) -> None:
    """A tmpfs at /sys/fs/cgroup holding the container's own cgroup of each hierarchy,
    read-only; co-mounted hierarchies get Docker's links (`cpu` -> `cpu,cpuacct`). The
    tmpfs itself ends read-only too, stricter than Docker's."""
    base = make_in_root(spec.root, "/sys/fs/cgroup", directory=True)
    flags = k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC
    kernel.mount("tmpfs", str(base), "tmpfs", flags, "mode=755")
    for name, host in spec.cgroup_v1_dirs:
        target = base / name
        target.mkdir()
        kernel.mount(host, str(target), "", k.MS_BIND, "")
        kernel.mount("", str(target), "", k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | flags, "")
        for part in name.split(","):
            if part != name and not (base / part).exists():
                (base / part).symlink_to(name)
    kernel.mount("", str(base), "", k.MS_REMOUNT | k.MS_RDONLY | flags, "mode=755")


def _mask_and_protect(kernel: Kernel, root: Path, plan: rootfs.Plan) -> None:
    # What is bound over masked files must be the null device we made, not a link or a
    # file put in its place (CVE-2025-31133: a /dev/null swapped for a link to a procfs
    # file turned runc's mask into a writable bind of that file).
    null = os.lstat(root / "dev" / "null")
    if not stat.S_ISCHR(null.st_mode) or null.st_rdev != os.makedev(1, 3):
        raise StartError("the container's /dev/null is not the null device: refusing to "
                         "mask paths with it (see CVE-2025-31133)", SETUP_FAILED)
    for path in plan.masked:
        target = resolve_in_root(root, path)
        if target.is_dir():
            kernel.mount("tmpfs", str(target), "tmpfs", k.MS_RDONLY, "size=0")
        elif target.exists():  # the container's own /dev/null, as Docker binds it
            kernel.mount(str(root / "dev" / "null"), str(target), "", k.MS_BIND, "")
    for path in plan.readonly:
        target = resolve_in_root(root, path)
        if target.exists():
            kernel.mount(str(target), str(target), "", k.MS_BIND | k.MS_REC, "")
            kernel.mount("", str(target), "",
                         k.MS_REMOUNT | k.MS_BIND | k.MS_RDONLY | k.MS_REC, "")


