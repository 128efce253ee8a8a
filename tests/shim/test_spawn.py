"""The spawner isolates a process the way Docker does, on the real kernel."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard_shim.kernel import LinuxKernel, RecordingKernel
from dockyard_shim.mounts import Mount
from dockyard_shim.runtime import capabilities
from dockyard_shim.runtime.forkserver import ForkServer
from dockyard_shim.runtime.process import (
    ProcessSpec,
    StartError,
    record_exit,
)
from dockyard_shim.runtime.spawn import DataMount, Fork, SandboxSpec, spawn
from tests.shim.rootfs_dir import busybox_rootfs

DOCKER_DEFAULT_CAPS = 0xA80425FB  # CapEff of `docker run busybox` with default settings

Run = Callable[..., tuple[int, str]]


def _reap(pid: int, spec: SandboxSpec) -> None:
    _, status = os.waitpid(pid, 0)
    record_exit(spec.bundle, status)


@pytest.fixture(scope="module")
def fork_server() -> Iterator[ForkServer]:
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(params=["fork here", "fork server"])
def fork(request: pytest.FixtureRequest, fork_server: ForkServer) -> Fork | None:
    """Each isolation test runs with init forked by the caller and by a ForkServer."""
    return None if request.param == "fork here" else fork_server


@pytest.fixture
def run(tmp_path: Path, fork: Fork | None) -> Run:
    root = busybox_rootfs(tmp_path / "image")

    def run(script: str, **options: object) -> tuple[int, str]:
        process = options.pop("process", None) or ProcessSpec(
            args=("sh", "-c", script), env=("PATH=/bin",))
        spec = SandboxSpec(bundle=tmp_path / "bundle",
                           rootfs=(Mount("bind", str(root), "", ("rbind",)),),
                           process=process, hostname="c0ffee123456", **options)  # type: ignore[arg-type]
        spawned = spawn(LinuxKernel(), spec, fork=fork)
        _reap(spawned.pid, spec)
        exit_record = json.loads(spec.exit_path.read_text())
        log = spec.log_path.read_text()
        spec.log_path.unlink()
        spec.exit_path.unlink()
        return exit_record["exitCode"], log

    return run


pytestmark = pytest.mark.root


def test_the_command_is_pid_1_with_the_containers_hostname(run: Run) -> None:
    code, out = run("echo $$; hostname")
    assert (code, out.split()) == (0, ["1", "c0ffee123456"])


def test_the_command_starts_with_no_signal_blocked_or_ignored(run: Run) -> None:
    """As Docker's: Python's own SIGPIPE and SIGXFSZ dispositions must not leak in."""
    process = ProcessSpec(args=("grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"),
                          env=("PATH=/bin",))
    code, out = run("", process=process)
    assert (code, out.split()) == (0, ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16])


def test_the_exit_code_of_the_command_is_reported(run: Run) -> None:
    assert run("exit 42")[0] == 42


def test_pid_1_ignores_sigkill_from_inside_its_own_namespace(run: Run) -> None:
    assert run("kill -9 $$; exit 7")[0] == 7


def test_a_signal_death_from_outside_is_reported_as_128_plus_the_signal(
        tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path / "image")
    spec = SandboxSpec(bundle=tmp_path / "bundle",
                       rootfs=(Mount("bind", str(root), "", ("rbind",)),),
                       process=ProcessSpec(args=("sleep", "60"), env=("PATH=/bin",)),
                       hostname="c0ffee123456")
    spawned = spawn(LinuxKernel(), spec)
    os.kill(spawned.pid, 9)
    _reap(spawned.pid, spec)
    assert json.loads(spec.exit_path.read_text())["exitCode"] == 137


def test_capabilities_are_dockers_default_set(run: Run) -> None:
    _, out = run("grep ^Cap /proc/self/status")
    caps = dict(line.split(":\t") for line in out.splitlines())
    for name in ("CapPrm", "CapEff", "CapBnd"):
        assert int(caps[name], 16) == DOCKER_DEFAULT_CAPS, name
    assert int(caps["CapInh"], 16) == 0
    assert int(caps["CapAmb"], 16) == 0


def test_a_non_root_user_has_no_effective_capabilities(run: Run) -> None:
    process = ProcessSpec(args=("sh", "-c", "id -u; grep ^CapEff /proc/self/status"),
                          env=("PATH=/bin",), user="1000:1000")
    _, out = run("", process=process)
    assert out.split() == ["1000", "CapEff:", "0000000000000000"]


def test_added_and_dropped_capabilities_are_honoured(run: Run) -> None:
    caps = capabilities.resolve(add=["NET_ADMIN"], drop=["NET_RAW", "MKNOD"])
    process = ProcessSpec(args=("sh", "-c", "grep ^CapBnd /proc/self/status"),
                          env=("PATH=/bin",), capabilities=caps)
    _, out = run("", process=process)
    assert int(out.split()[1], 16) == capabilities.mask(caps)


def test_the_device_set_is_minimal(run: Run) -> None:
    _, out = run("ls /dev")
    assert set(out.split()) == {"fd", "full", "mqueue", "null", "ptmx", "pts",
                                "random", "shm", "stderr", "stdin", "stdout", "tty",
                                "urandom", "zero"}


def test_masked_paths_read_empty_and_readonly_paths_refuse_writes(run: Run) -> None:
    masked_file = next(p for p in ("/proc/keys", "/proc/timer_list", "/proc/interrupts")
                       if Path(p).exists() and Path(p).read_bytes())
    _, out = run(f"cat {masked_file} | wc -c; ls /sys/firmware | wc -l; "
                 "echo x > /proc/sys/kernel/domainname && echo wrote")
    assert out.split()[:2] == ["0", "0"]
    assert "wrote" not in out
    assert "Read-only file system" in out


def test_sys_is_read_only(run: Run) -> None:
    _, out = run("touch /sys/kernel/x 2>&1; grep ' /sys ' /proc/self/mountinfo")
    assert "Read-only file system" in out
    assert " ro," in out


def test_the_network_namespace_has_only_loopback_and_it_is_up(run: Run) -> None:
    _, out = run("ls /sys/class/net; cat /sys/class/net/lo/operstate")
    assert out.split()[0] == "lo"
    assert len(out.split()) == 2
    assert out.split()[1] in ("unknown", "up")


def test_no_host_file_descriptor_reaches_the_container(run: Run) -> None:
    leak = os.open("/dev/null", os.O_RDONLY)  # inheritable on purpose
    os.set_inheritable(leak, True)
    try:
        _, out = run("ls /proc/self/fd")
    finally:
        os.close(leak)
    assert sorted(out.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory fd


def test_a_missing_command_fails_like_docker_with_127(run: Run) -> None:
    process = ProcessSpec(args=("no-such-command",), env=("PATH=/bin",))
    with pytest.raises(StartError) as caught:
        run("", process=process)
    assert caught.value.exit_code == 127
    assert str(caught.value) == 'exec: "no-such-command": executable file not found in $PATH'


def test_a_missing_working_directory_fails_with_125(run: Run) -> None:
    process = ProcessSpec(args=("true",), env=("PATH=/bin",), cwd="/nowhere")
    with pytest.raises(StartError) as caught:
        run("", process=process)
    assert caught.value.exit_code == 125
    assert "/nowhere" in str(caught.value)


def test_a_read_only_rootfs_refuses_writes_but_tmpfs_mounts_work(run: Run) -> None:
    _, out = run("touch /x 2>&1; touch /dev/shm/ok && echo shm-ok", readonly_rootfs=True)
    assert "Read-only file system" in out
    assert "shm-ok" in out


def test_bind_volumes_appear_at_their_container_path(run: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("from the host\n")
    volume = DataMount("/srv/data", str(data), readonly=True)
    _, out = run("cat /srv/data/hello; touch /srv/data/new 2>&1", volumes=(volume,))
    assert "from the host" in out
    assert "Read-only file system" in out
    assert not (data / "new").exists()


def test_a_mount_target_behind_an_absolute_link_stays_inside_the_root(
        run: Run, tmp_path: Path) -> None:
    """The image has /srv -> /HOST/DIR: the bind lands in the container's own /HOST/DIR,
    and the host's directory of that name gets nothing (CVE-2021-30465's class)."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("volume\n")
    (tmp_path / "image" / "srv").symlink_to(host_dir)  # the run fixture's root
    code, out = run("cat /srv/data/file; ls -d " + str(host_dir / "data"),
                    volumes=(DataMount("/srv/data", str(data)),))
    assert (code, out.split()) == (0, ["volume", str(host_dir / "data")])
    assert list(host_dir.iterdir()) == []  # nothing made or mounted on the host


def test_the_host_mount_table_is_untouched(run: Run) -> None:
    before = Path("/proc/self/mountinfo").read_text().count("\n")
    run("mount -t tmpfs none /tmp")
    assert Path("/proc/self/mountinfo").read_text().count("\n") == before


def test_the_plan_is_data_performed_through_the_kernel_seam() -> None:
    """Without root: a failing mount is reported, not hidden (recorded kernel)."""
    kernel = RecordingKernel(fail={"unshare": 1})
    with pytest.raises(OSError, match="unshare failed"):
        kernel.unshare(0)
    assert kernel.names() == ["unshare"]


def _spec(tmp_path: Path, *args: str) -> SandboxSpec:
    root = busybox_rootfs(tmp_path / "image")
    return SandboxSpec(bundle=tmp_path / "bundle",
                       rootfs=(Mount("bind", str(root), "", ("rbind",)),),
                       process=ProcessSpec(args=args, env=("PATH=/bin",)), hostname="h")


def test_hooks_run_before_the_command_and_connect_sees_the_new_namespaces(
        tmp_path: Path) -> None:
    seen: dict[str, str] = {}

    def place(pid: int) -> None:
        seen["exe at place"] = os.readlink(f"/proc/{pid}/exe")

    def connect(pid: int) -> None:
        seen["connect"] = os.readlink(f"/proc/{pid}/ns/net")
        seen["exe at connect"] = os.readlink(f"/proc/{pid}/exe")

    spec = _spec(tmp_path, "true")
    spawned = spawn(LinuxKernel(), spec, place=place, connect=connect)
    _reap(spawned.pid, spec)
    assert seen["connect"] != os.readlink("/proc/self/ns/net")
    assert "busybox" not in seen["exe at place"]  # the command had not started yet
    assert "busybox" not in seen["exe at connect"]


def test_init_is_pid_1_of_its_own_namespace_and_the_caller_keeps_its_own(
        tmp_path: Path) -> None:
    """No middle process: the calling thread forks init into a new pid namespace and
    returns to its own, so the next fork (or start) is unaffected."""
    ours = os.readlink("/proc/thread-self/ns/pid_for_children")
    namespaces = set()
    for n in range(2):
        spec = _spec(tmp_path / str(n), "sleep", "10")
        spawned = spawn(LinuxKernel(), spec)
        namespaces.add(os.readlink(f"/proc/{spawned.pid}/ns/pid"))
        assert os.readlink("/proc/thread-self/ns/pid_for_children") == ours
        os.kill(spawned.pid, signal.SIGKILL)
        _reap(spawned.pid, spec)
    assert len(namespaces) == 2
    assert ours not in namespaces


def test_init_from_the_fork_server_is_the_callers_own_child(
        tmp_path: Path, fork_server: ForkServer) -> None:
    """CLONE_PARENT: the caller reaps init as if it had forked it itself."""
    spec = _spec(tmp_path, "sleep", "10")
    spawned = spawn(LinuxKernel(), spec, fork=fork_server)
    parent = Path(f"/proc/{spawned.pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    assert int(parent) == os.getpid()
    assert os.readlink(f"/proc/{spawned.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    os.kill(spawned.pid, signal.SIGKILL)
    _reap(spawned.pid, spec)
    assert json.loads(spec.exit_path.read_text())["exitCode"] == 137


def test_a_fork_server_that_died_is_replaced_at_the_next_start(tmp_path: Path) -> None:
    server = ForkServer()
    try:
        os.kill(server.pid, signal.SIGKILL)
        spec = _spec(tmp_path, "true")
        spawned = spawn(LinuxKernel(), spec, fork=server)
        _reap(spawned.pid, spec)
        assert json.loads(spec.exit_path.read_text())["exitCode"] == 0
    finally:
        server.close()
    # the leak check asserts that neither the dead helper nor its successor is left


def test_a_fork_server_that_dies_before_reading_a_request_is_replaced_for_it(
        tmp_path: Path) -> None:
    """The race the test above can hit: killed, but not yet reaped when the start polls it.
    Stopped, it takes the request into its queue unread; killed then, it leaves the
    request unread, and a new helper must serve it."""
    server = ForkServer()
    try:
        os.kill(server.pid, signal.SIGSTOP)
        killer = threading.Timer(0.3, os.kill, (server.pid, signal.SIGKILL))
        killer.start()
        spec = _spec(tmp_path, "true")
        spawned = spawn(LinuxKernel(), spec, fork=server)
        killer.join()
        _reap(spawned.pid, spec)
        assert json.loads(spec.exit_path.read_text())["exitCode"] == 0
    finally:
        server.close()


def test_a_failing_hook_aborts_the_start_and_leaves_no_process(tmp_path: Path) -> None:
    def place(pid: int) -> None:
        raise RuntimeError("no cgroup for you")

    with pytest.raises(RuntimeError, match="no cgroup for you"):
        spawn(LinuxKernel(), _spec(tmp_path, "true"), place=place)
    # the autouse leak check asserts that no child process is left behind


def test_a_user_name_is_resolved_in_the_images_own_passwd(run: Run) -> None:
    process = ProcessSpec(args=("id",), env=("PATH=/bin",), user="app")
    assert run("", process=process)[1].startswith("uid=1000(app) gid=1000(app)")


def test_an_unknown_user_fails_the_start_clearly(run: Run) -> None:
    process = ProcessSpec(args=("id",), env=("PATH=/bin",), user="ghost")
    with pytest.raises(StartError, match="unable to find user ghost"):
        run("", process=process)


def test_all_grants_what_the_runtime_holds_and_nothing_it_lacks() -> None:
    # A node whose runtime lacks a capability (here: SYS_RESOURCE) still runs
    # --cap-add ALL, as Docker does, instead of failing at capset.
    lacking = capabilities.mask(capabilities.NUMBERS) & ~(1 << capabilities.NUMBERS[
        "SYS_RESOURCE"])
    caps = capabilities.resolve(add=["ALL"], last_cap=40, held=lacking)
    assert "SYS_RESOURCE" not in caps
    assert capabilities.mask(caps) == lacking


def test_a_container_with_every_capability_gets_every_one_the_runtime_holds(
        run: Run) -> None:
    caps = capabilities.resolve(add=["ALL"], last_cap=capabilities.last_cap(),
                                held=capabilities.held())
    process = ProcessSpec(args=("sh", "-c", "grep ^CapEff /proc/self/status"),
                          env=("PATH=/bin",), capabilities=caps)
    _, out = run("", process=process)
    assert int(out.split()[1], 16) == capabilities.held()
