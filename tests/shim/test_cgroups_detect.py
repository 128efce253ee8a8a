"""The driver is chosen from /proc/self/mountinfo, for every cgroup layout there is."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_shim.cgroups import (
    CgroupFs,
    CgroupMount,
    V1Driver,
    V2Driver,
    detect,
    driver_for,
    parse_mountinfo,
)
from dockyard_shim.errors import UnavailableError

ROOTFS = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
PROC = "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"

# A systemd host in "legacy" mode: v1 only, cpu and cpuacct co-mounted (the usual way).
LEGACY = ROOTFS + PROC + """\
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup \
rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup \
cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup \
rw,memory
31 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup \
rw,pids
32 25 0:30 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup \
rw,freezer
33 25 0:31 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - \
cgroup cgroup rw,net_cls,net_prio
"""

# This machine: v1 hierarchies with cpu and cpuacct apart, and a cgroup2 tree beside them.
HYBRID = ROOTFS + PROC + """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

UNIFIED = ROOTFS + PROC + """\
27 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""


def test_a_legacy_host_gets_the_v1_driver_with_cpu_and_cpuacct_sharing_a_hierarchy() -> None:
    mounts = parse_mountinfo(LEGACY)
    assert mounts.layout == "legacy"
    assert mounts.unified is None
    hierarchies = mounts.hierarchies()
    assert hierarchies["cpu"] == hierarchies["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert hierarchies["net_prio"] == "/sys/fs/cgroup/net_cls,net_prio"
    assert "systemd" not in hierarchies
    assert "name=systemd" not in hierarchies

    driver = driver_for(mounts, "dockyard")
    assert isinstance(driver, V1Driver)
    assert driver.controllers == {"memory", "cpu", "cpuacct", "pids", "freezer"}
    assert len(driver.mounts()) == 4  # cpu,cpuacct once


def test_a_hybrid_host_gets_the_v1_driver_with_separate_cpu_and_cpuacct() -> None:
    mounts = parse_mountinfo(HYBRID)
    assert mounts.layout == "hybrid"
    assert mounts.unified == CgroupMount("/sys/fs/cgroup/unified", 2)
    systemd = [mount for mount in mounts.mounts if mount.name == "systemd"]
    assert systemd == [CgroupMount("/sys/fs/cgroup/systemd", 1, frozenset(), "systemd")]

    driver = detect(mountinfo=HYBRID)
    assert isinstance(driver, V1Driver)
    assert driver.hierarchies == {
        "cpu": Path("/sys/fs/cgroup/cpu"),
        "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
        "pids": Path("/sys/fs/cgroup/pids"),
    }


def test_a_unified_host_gets_the_v2_driver_on_sys_fs_cgroup() -> None:
    mounts = parse_mountinfo(UNIFIED)
    assert mounts.layout == "unified"
    assert mounts.hierarchies() == {}

    driver = detect("dockyard", UNIFIED)
    assert isinstance(driver, V2Driver)
    assert driver.mount == Path("/sys/fs/cgroup")
    assert driver.parent == "dockyard"


def test_cgroup2_elsewhere_with_only_a_named_v1_hierarchy_is_still_unified() -> None:
    text = ROOTFS + (
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    driver = detect(mountinfo=text)
    assert isinstance(driver, V2Driver)
    assert driver.mount == Path("/sys/fs/cgroup/unified")


def test_a_host_without_cgroups_is_unavailable() -> None:
    assert parse_mountinfo(ROOTFS + PROC).layout == "none"
    with pytest.raises(UnavailableError, match="no cgroup filesystem"):
        detect(mountinfo=ROOTFS + PROC)


def test_escaped_mount_points_and_bind_roots_are_decoded() -> None:
    text = ("50 22 0:40 /kubepods/pod1 /mnt/my\\040cgroups rw master:7 - cgroup cgroup "
            "rw,memory\n")
    (mount,) = parse_mountinfo(text).mounts
    assert mount.mount_point == "/mnt/my cgroups"
    assert mount.root == "/kubepods/pod1"
    assert mount.controllers == {"memory"}


def test_this_hosts_mountinfo_gives_a_driver_for_its_layout() -> None:
    text = Path("/proc/self/mountinfo").read_text()
    mounts = parse_mountinfo(text)
    driver = detect(mountinfo=text)
    assert isinstance(driver, V2Driver if mounts.layout == "unified" else V1Driver)
    assert isinstance(detect(), type(driver))


def test_co_mounted_controllers_share_one_directory(tmp_path: Path) -> None:
    cpu_cpuacct, memory = tmp_path / "cpu,cpuacct", tmp_path / "memory"
    cpu_cpuacct.mkdir()
    memory.mkdir()
    driver = V1Driver({"cpu": cpu_cpuacct, "cpuacct": cpu_cpuacct, "memory": memory},
                      "dockyard-test", CgroupFs())

    cgroup = driver.create("c1")

    assert cgroup.paths == [cpu_cpuacct / "dockyard-test/c1", memory / "dockyard-test/c1"]
    assert sorted(p.name for p in cpu_cpuacct.iterdir()) == ["dockyard-test"]
    cgroup.delete()
    assert not driver.exists("c1")


def test_a_v1_driver_needs_a_hierarchy_it_can_use() -> None:
    with pytest.raises(UnavailableError, match="no cgroup v1 hierarchy"):
        V1Driver({"cpuset": Path("/sys/fs/cgroup/cpuset"), "devices": Path("/x")})
