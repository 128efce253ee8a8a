"""The v1 driver on this host's real hierarchies: limits hold, counters count.

Every test starts real Python children, moves them into a cgroup under a parent of its
own, and leaves nothing behind (the autouse leak check in conftest.py verifies it).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.cgroups import Limits, V1Driver, detect
from dockyard_shim.errors import InvalidArgumentError, UnavailableError
from tests.shim.cgroupfs_fake import Children, cleanup, forking_sleepers, unique_parent

pytestmark = pytest.mark.root

CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def driver() -> Iterator[V1Driver]:
    made = detect(unique_parent())
    if not isinstance(made, V1Driver):
        pytest.skip("this host runs cgroup v2 only")
    yield made
    cleanup(made)


@pytest.fixture
def without_freezer_and_pids(driver: V1Driver) -> Iterator[V1Driver]:
    """The same parent, on a host that mounts neither the freezer nor the pids hierarchy."""
    made = V1Driver({controller: mount for controller, mount in driver.hierarchies.items()
                     if controller not in ("freezer", "pids")}, driver.parent)
    yield made
    cleanup(made)


def test_a_fork_bomb_is_stopped_by_pids_max(driver: V1Driver, children: Children) -> None:
    cgroup = driver.create("bomb")
    cgroup.set_limits(Limits(pids_max=10))
    child = children.start_in(
        cgroup,
        "import os, time\n"
        "made, refused = 0, set()\n"
        "for _ in range(50):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        refused.add(e.errno)\n"
        "        continue\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    made += 1\n"
        "print(made, *sorted(refused), flush=True)\n"
        "time.sleep(60)\n"
    )

    made, *refused = (int(word) for word in children.line(child).split())

    assert 1 <= made <= 9  # the child itself is one of the ten
    assert refused == [errno.EAGAIN]
    assert len(cgroup.pids()) < 11
    assert cgroup.stats().pids_current == made + 1


def test_an_allocation_beyond_the_memory_limit_is_oom_killed_and_counted(
    driver: V1Driver, children: Children
) -> None:
    cgroup = driver.create("hog")
    cgroup.set_limits(Limits(memory_bytes=32 << 20))
    assert cgroup.oom_kills() == 0
    # bytes * n writes every page; a bytearray(n) would stay untouched zero pages.
    child = children.start_in(cgroup, "data = b'x' * (256 << 20)\nprint('survived', flush=True)")

    assert child.wait(timeout=20) == -9
    assert cgroup.oom_kills() == 1
    assert cgroup.stats().oom_kills == 1


def test_a_cpu_quota_of_200m_holds_a_busy_loop_near_a_fifth_of_a_cpu(
    driver: V1Driver, children: Children
) -> None:
    cgroup = driver.create("spin")
    cgroup.set_limits(Limits(cpu_millis=200))
    children.start_in(cgroup, "while True: pass")
    time.sleep(0.2)  # past the interpreter's start

    used_before, wall_before = cgroup.stats().cpu_usage_ns, time.monotonic_ns()
    time.sleep(1.0)
    used_after, wall_after = cgroup.stats().cpu_usage_ns, time.monotonic_ns()

    assert used_before is not None
    assert used_after is not None
    share = (used_after - used_before) / (wall_after - wall_before)
    assert 0.05 < share < 0.45  # a noisy VM: well under a whole CPU is what matters


def test_stats_report_memory_cpu_and_pids(driver: V1Driver, children: Children) -> None:
    cgroup = driver.create("busy")
    child = children.start_in(
        cgroup,
        "import os, time\n"
        "data = b'x' * (40 << 20)\n"
        "end = time.monotonic() + 0.2\n"
        "while time.monotonic() < end: pass\n"
        "for _ in range(2):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert children.line(child) == "ready"

    stats = cgroup.stats()

    assert stats.memory_bytes is not None
    assert stats.memory_bytes >= 40 << 20
    assert stats.cpu_usage_ns is not None
    assert stats.cpu_usage_ns >= 100_000_000
    assert stats.pids_current == 3
    assert stats.memory_limit_bytes is None
    assert stats.oom_kills == 0


def test_each_limit_lands_in_its_v1_file_and_none_restores_the_default(
    driver: V1Driver,
) -> None:
    cgroup = driver.create("files")
    cgroup.set_limits(Limits(memory_bytes=64 << 20, cpu_millis=500, cpu_shares=512,
                             pids_max=10))
    assert _read(driver, "memory", "memory.limit_in_bytes") == str(64 << 20)
    if (driver.hierarchies["memory"] / driver.parent / "files/memory.memsw.limit_in_bytes"
            ).exists():
        assert _read(driver, "memory", "memory.memsw.limit_in_bytes") == str(64 << 20)
    assert _read(driver, "cpu", "cpu.cfs_period_us") == "100000"
    assert _read(driver, "cpu", "cpu.cfs_quota_us") == "50000"
    assert _read(driver, "cpu", "cpu.shares") == "512"
    assert _read(driver, "pids", "pids.max") == "10"

    cgroup.set_limits(Limits())

    assert int(_read(driver, "memory", "memory.limit_in_bytes")) >= 2**62
    assert _read(driver, "cpu", "cpu.cfs_quota_us") == "-1"
    assert _read(driver, "cpu", "cpu.shares") == "1024"
    assert _read(driver, "pids", "pids.max") == "max"


def test_a_memory_limit_below_current_usage_is_refused_naming_the_limit(
    driver: V1Driver, children: Children
) -> None:
    cgroup = driver.create("full")
    child = children.start_in(cgroup, "data = b'x' * (40 << 20)\nprint('ready', flush=True)\n"
                                      "sys.stdin.readline()")
    assert children.line(child) == "ready"

    with pytest.raises(InvalidArgumentError, match=r"memory_bytes=1048576.*EBUSY"):
        cgroup.set_limits(Limits(memory_bytes=1 << 20))
    assert child.poll() is None


def test_a_cpu_quota_below_the_kernels_minimum_is_refused_naming_the_limit(
    driver: V1Driver,
) -> None:
    cgroup = driver.create("tiny")
    # 1 millicore is a 100 us quota; the kernel's minimum is 1 ms.
    with pytest.raises(InvalidArgumentError, match=r"cpu_millis=1\b.*cpu.cfs_quota_us"):
        cgroup.set_limits(Limits(cpu_millis=1))


def test_delete_leaves_no_directory_in_any_hierarchy(driver: V1Driver) -> None:
    cgroup = driver.create("gone")
    everywhere = sorted(CGROUP_ROOT.glob(f"*/{driver.parent}/gone"))
    assert {path.parent.parent for path in everywhere} == set(driver.mounts())

    cgroup.delete()

    assert sorted(CGROUP_ROOT.glob(f"*/{driver.parent}/gone")) == []


def test_load_completes_a_cgroup_missing_from_some_hierarchies(driver: V1Driver) -> None:
    # A crash between the mkdirs of create leaves a partial cgroup behind.
    driver.create("partial")
    (driver.hierarchies["pids"] / driver.parent / "partial").rmdir()

    driver.load("partial").set_limits(Limits(pids_max=5))

    assert _read(driver, "pids", "pids.max", "partial") == "5"


def _read(driver: V1Driver, controller: str, file: str, name: str = "files") -> str:
    return (driver.hierarchies[controller] / driver.parent / name / file).read_text().strip()


def test_without_a_freezer_kill_all_still_kills_every_process(
    without_freezer_and_pids: V1Driver, children: Children
) -> None:
    cgroup = without_freezer_and_pids.create("c1")
    child = children.start_in(cgroup, forking_sleepers(3))
    assert children.line(child) == "forked"

    cgroup.kill_all()

    assert cgroup.pids() == []
    assert child.wait(timeout=5) == -9
    with pytest.raises(UnavailableError, match="freezer"):
        cgroup.freeze()


def test_without_a_pids_hierarchy_tasks_are_counted_and_pids_max_is_refused(
    without_freezer_and_pids: V1Driver, children: Children
) -> None:
    cgroup = without_freezer_and_pids.create("c1")
    child = children.start_in(
        cgroup,
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "print('threads', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert children.line(child) == "threads"

    assert cgroup.stats().pids_current == 2
    with pytest.raises(UnavailableError, match=r"the pids cgroup controller .*pids_max=5"):
        cgroup.set_limits(Limits(pids_max=5))
