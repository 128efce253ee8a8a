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
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.cgroups import V1Cgroup
from dockyard_shim.cgroups.devices import DEFAULT_RULES
from dockyard_shim.runtime.runtime import Runtime
from tests.security.harness import Containers

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
