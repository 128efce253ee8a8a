"""The device cgroup: a container may make device nodes, but open only the default ones.

Docker's default keeps CAP_MKNOD, so `mknod` succeeds; what must stop the attack is the
device cgroup refusing the open. Canaries on the host: a loop device over a scratch file
(a stand-in for the node's disk) whose bytes must not change, and the kernel log, which
must not receive a line written from inside through a home-made /dev/kmsg.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.cgroups import V1Cgroup, V2Driver, parse_mountinfo
from dockyard_shim.cgroups.devices import DEFAULT_RULES
from dockyard_shim.runtime.runtime import Runtime
from tests.security.harness import Containers
from tests.shim.cgroupfs_fake import Children, cleanup, unique_parent

pytestmark = pytest.mark.root

CANARY = b"the node's disk\n" * 256


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    """A loop device over a 4 KiB canary file: (backing file, major, minor)."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(CANARY)
    device = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        rdev = os.stat(device).st_rdev
        yield backing, os.major(rdev), os.minor(rdev)
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)


def test_a_containers_cgroup_allows_only_the_default_devices(runtime: Runtime) -> None:
    cgroup = runtime.cgroups.create("devices-probe")
    try:
        assert isinstance(cgroup, V1Cgroup)
        directory = Path(cgroup.hierarchy_dirs["devices"])
        listed = (directory / "devices.list").read_text().split("\n")
        assert [line for line in listed if line] == [rule.v1_line() for rule in DEFAULT_RULES]
    finally:
        cgroup.delete()


def test_a_block_device_made_inside_cannot_be_opened(
        containers: Containers, loop_device: tuple[Path, int, int]) -> None:
    """CAP_MKNOD makes the node; the device cgroup must refuse reading and writing it."""
    backing, major, minor = loop_device
    _, out = containers.run(
        f"mknod /tmp/disk b {major} {minor} && echo made; "
        "head -c 15 /tmp/disk 2>&1; echo; "
        "echo pwned | dd of=/tmp/disk conv=notrunc 2>&1 && echo wrote")
    assert backing.read_bytes() == CANARY  # the canary
    assert "made" in out  # Docker's default allows mknod: the open is the defence
    assert "the node's disk" not in out
    assert "wrote" not in out
    assert out.count("Operation not permitted") == 2, out


def test_dev_kmsg_is_absent_and_a_home_made_one_cannot_be_opened(
        containers: Containers) -> None:
    marker = f"dockyard-escape-{secrets.token_hex(6)}"
    _, out = containers.run(
        f"ls /dev/kmsg 2>/dev/null && echo present; "
        f"mknod /tmp/kmsg c 1 11 && echo made; echo {marker} > /tmp/kmsg && echo wrote; "
        "head -c 1 /tmp/kmsg > /dev/null && echo read; "
        "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem > /dev/null && echo read mem")
    kernel_log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert marker not in kernel_log  # the canary
    assert "present" not in out
    assert "made" in out
    assert "wrote" not in out
    assert "read" not in out


@pytest.fixture
def v2_driver() -> Iterator[V2Driver]:
    """The v2 driver on this host's real cgroup2 tree (beside the v1 hierarchies here)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        unified = parse_mountinfo(f.read()).unified
    if unified is None:
        pytest.skip("this host mounts no cgroup2 tree")
    made = V2Driver(unified.mount_point, unique_parent())
    yield made
    cleanup(made)


def test_a_v2_cgroup_gets_the_default_devices_as_an_ebpf_program(
        v2_driver: V2Driver, children: Children, tmp_path: Path,
        loop_device: tuple[Path, int, int]) -> None:
    """cgroup v2 has no devices files: the driver attaches an eBPF device program. A
    process of the cgroup (root, every capability) makes nodes, opens the default devices,
    and is refused the loop device and /dev/mem."""
    backing, major, minor = loop_device
    disk, mem = tmp_path / "disk", tmp_path / "mem"
    cgroup = v2_driver.create("devices")
    child = children.start_in(cgroup, textwrap.dedent(f"""
        import os
        os.mknod({str(disk)!r}, 0o600 | 0o060000, os.makedev({major}, {minor}))
        os.mknod({str(mem)!r}, 0o600 | 0o020000, os.makedev(1, 1))
        for path, flags in (({str(disk)!r}, os.O_RDWR), ({str(mem)!r}, os.O_RDONLY),
                            ("/dev/null", os.O_RDWR), ("/dev/urandom", os.O_RDONLY)):
            try:
                fd = os.open(path, flags)
            except PermissionError:
                print(path, "refused", flush=True)
                continue
            if path == {str(disk)!r}:
                os.write(fd, b"pwned")
            os.close(fd)
            print(path, "opened", flush=True)
        """))
    lines = [children.line(child) for _ in range(4)]
    assert lines == [f"{disk} refused", f"{mem} refused", "/dev/null opened",
                     "/dev/urandom opened"]
    assert backing.read_bytes() == CANARY  # the canary
