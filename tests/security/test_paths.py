"""Paths from the image and from volumes cannot move the container's mounts, or its working
directory, out of its root filesystem.

The attacker controls the image (its /proc, /sys, volume mount points and working
directory may be symbolic links) and the content of shared volumes, which another
container can change while this one starts (CVE-2019-16884, CVE-2021-30465,
CVE-2024-21626). Canaries on the host: the root directory's listing, a "secret"
directory the links point at (its content, and that nothing is mounted on it), and the
mount table (the leak check).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.kernel import LinuxKernel
from dockyard_shim.mounts import Mount
from dockyard_shim.runtime.config import Bind
from dockyard_shim.runtime.forkserver import ForkServer
from dockyard_shim.runtime.process import ProcessSpec, StartError, record_exit
from dockyard_shim.runtime.spawn import DataMount, SandboxSpec, spawn
from dockyard_shim.runtime.state import Status
from tests.security.harness import Containers
from tests.shim.rootfs_dir import busybox_rootfs

pytestmark = pytest.mark.root


@pytest.mark.parametrize(("image", "path"), [("proc-link", "/proc"), ("sys-link", "/sys")])
def test_an_image_whose_proc_or_sys_is_a_link_is_refused_clearly(
        containers: Containers, image: str, path: str) -> None:
    """Mounted through the link, procfs would sit where the masks are not applied."""
    with pytest.raises(StartError) as refused:
        containers.run("echo started", image)
    assert refused.value.exit_code == 125
    assert f"{path} is a symbolic link in the image" in str(refused.value)
    (record,) = containers.runtime.store.all()
    assert record.status is Status.STOPPED
    assert containers.runtime.log_path(record.id).read_text() == ""  # it never ran


@pytest.mark.parametrize("image", ["data-link-to-root", "data-link-up"])
def test_a_volume_under_a_link_to_root_lands_inside_the_container(
        containers: Containers, tmp_path: Path, image: str) -> None:
    """/data is a link to / (or to ../../..): a volume at /data/NAME must land at the
    container's /NAME, and nothing may be made or mounted at the host's /NAME."""
    name = f"escape-{secrets.token_hex(4)}"
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "content").write_text("volume\n")
    host_root = sorted(os.listdir("/"))
    code, out = containers.run(f"cat /{name}/content; grep -c ' /{name} ' /proc/self/mountinfo",
                               image, binds=(Bind(str(volume), f"/data/{name}"),))
    assert (code, out.split()) == (0, ["volume", "1"])
    assert sorted(os.listdir("/")) == host_root  # the canary
    assert not Path("/", name).exists()


def test_a_volume_destination_that_is_a_link_to_root_never_covers_the_hosts_root(
        containers: Containers, tmp_path: Path) -> None:
    """The volume lands on the container's own root (whose command is then gone), never on
    the host's; the host's / is as it was."""
    volume = tmp_path / "volume"
    volume.mkdir()
    host_root = sorted(os.listdir("/"))
    try:
        code, out = containers.run("echo started", "data-link-to-root",
                                   binds=(Bind(str(volume), "/data"),))
    except StartError as e:
        code, out = e.exit_code, str(e)
    assert sorted(os.listdir("/")) == host_root  # the canary
    assert "started" not in out  # the image's /bin/sh is under the volume now
    assert code == 127


@pytest.mark.parametrize("image", ["work-link-to-root", "work-link-up"])
def test_a_working_directory_that_is_a_link_stays_inside_the_root(
        containers: Containers, image: str) -> None:
    code, out = containers.run(
        "stat -c %d:%i /; stat -c %d:%i .; cd ../../../../../../..; stat -c %d:%i .",
        image, working_dir="/work")
    root, cwd, climbed = out.split()
    assert code == 0
    assert cwd == root
    assert climbed == root


def test_a_working_directory_through_an_inherited_descriptor_is_never_outside(
        containers: Containers, tmp_path: Path) -> None:
    """CVE-2024-21626: runc leaked a host directory descriptor into init, so `-w
    /proc/self/fd/N` started the command in the host's filesystem. Whichever N, the
    command must fail to start or start inside its root. The runtime holds a host
    directory open meanwhile, as runc held its cgroup directory."""
    held = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        _start_in_each_descriptor(containers, range(3, max(16, held + 1)))
    finally:
        os.close(held)


def test_an_execs_working_directory_through_a_held_descriptor_is_never_outside(
        containers: Containers, tmp_path: Path) -> None:
    """The same for `dockyard exec -w /proc/self/fd/N`: an exec'd process forks from the
    runtime, with every descriptor it holds at that moment, here a host directory."""
    record = containers.start("exec sleep 60")
    held = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        for fd in range(3, max(16, held + 1)):
            try:
                code, out = containers.exec(
                    record, "stat -c %d:%i /; cd ../../../../../../..; stat -c %d:%i .",
                    working_dir=f"/proc/self/fd/{fd}")
            except StartError:
                continue  # refused: fine
            root, climbed = out.split()
            assert (code, climbed) == (0, root), \
                f"fd {fd}: the exec'd command started outside its root"
    finally:
        os.close(held)
        containers.runtime.kill(record.id, 9)


def _start_in_each_descriptor(containers: Containers, fds: range) -> None:
    for fd in fds:
        try:
            code, out = containers.run(
                "stat -c %d:%i /; cd ../../../../../../..; stat -c %d:%i .",
                working_dir=f"/proc/self/fd/{fd}")
        except StartError as e:
            refused = e.exit_code
        else:
            refused = 0
        if refused:
            assert refused == 125, f"fd {fd}"
            continue
        root, climbed = out.split()
        assert (code, climbed) == (0, root), f"fd {fd}: the command started outside its root"


# ---------------------------------------------------------------- a racing volume (200x)

RENAME_EXCHANGE = 2
SWAPPER = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    a, b = (os.fsencode(p) for p in sys.argv[1:3])
    print("swapping", flush=True)
    while True:
        libc.renameat2(-100, a, -100, b, 2)
""")


@pytest.fixture
def racing_volume(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The attacker's shared volume: `dir` and `link` (-> a host "secret" directory)
    swapped without pause by another process (RENAME_EXCHANGE, so one of the two names is
    always a directory and the other a link). Yields (volume, secret)."""
    assert ctypes.util.find_library("c")
    volume, secret = tmp_path / "shared", tmp_path / "secret"
    volume.mkdir()
    secret.mkdir()
    (secret / "token").write_text("host secret\n")
    (volume / "dir").mkdir()
    (volume / "link").symlink_to(secret)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(volume / "dir"),
                                str(volume / "link")], stdout=subprocess.PIPE, text=True)
    try:
        assert swapper.stdout is not None
        assert swapper.stdout.readline().strip() == "swapping"
        yield volume, secret
    finally:
        swapper.kill()
        swapper.wait()
        if swapper.stdout is not None:
            swapper.stdout.close()


def test_a_volume_swapped_for_a_link_while_containers_start_gains_nothing_in_200_starts(
        tmp_path: Path, racing_volume: tuple[Path, Path]) -> None:
    """Each start binds the shared volume, a subpath of it (`dir`) and a second volume onto
    a path inside it (`/shared/dir`), while `dir` flips to a link to the host's secret
    directory and back. No start may show the secret, or mount on it."""
    volume, secret = racing_volume
    other = tmp_path / "other"
    other.mkdir()
    (other / "marker").write_text("other volume\n")
    root = busybox_rootfs(tmp_path / "image")
    mounts = (DataMount("/shared", str(volume)), DataMount("/sub", str(volume), "dir"),
              DataMount("/shared/dir", str(other)))
    script = "cat /sub/token /shared/dir/token /shared/link/token 2>/dev/null; echo done"
    spec = SandboxSpec(bundle=tmp_path / "bundle",
                       rootfs=(Mount("bind", str(root), "", ("rbind",)),),
                       process=ProcessSpec(args=("sh", "-c", script), env=("PATH=/bin",)),
                       hostname="racer", volumes=mounts)
    secret_before = sorted(os.listdir(secret))
    server = ForkServer()
    leaked, started = [], 0
    try:
        for _ in range(200):
            try:
                spawned = spawn(LinuxKernel(), spec, fork=server)
            except StartError:
                continue  # a start may fail when the mount point flips to a link: fine
            started += 1
            _, status = os.waitpid(spawned.pid, 0)
            record_exit(spec.bundle, status)
            out = spec.log_path.read_text()
            spec.log_path.unlink()
            spec.exit_path.unlink()
            if "host secret" in out or out.split()[-1:] != ["done"]:
                leaked.append(out)
    finally:
        server.close()
    assert leaked == []
    assert started >= 100, f"only {started} of 200 starts succeeded"
    assert sorted(os.listdir(secret)) == secret_before  # the canary
    assert (secret / "token").read_text() == "host secret\n"
