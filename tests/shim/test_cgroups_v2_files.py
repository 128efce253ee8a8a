"""The v2 driver's controller files, against a scratch tree that imitates cgroup2.

This host's cgroup2 tree offers no memory, cpu or pids controller, so what the driver
writes to memory.max, memory.swap.max, cpu.max, cpu.weight, pids.max and
cgroup.subtree_control, and how it parses memory.current, memory.events, pids.current and
cpu.stat, is checked here, string for string, on `ScratchCgroup2`. No root needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard_shim.cgroups import Limits, Stats, V2Driver
from dockyard_shim.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from tests.shim.cgroupfs_fake import ScratchCgroup2

PARENT = "dockyard-test"


@pytest.fixture
def tree(tmp_path: Path) -> ScratchCgroup2:
    return ScratchCgroup2(tmp_path / "cgroup")


@pytest.fixture
def driver(tree: ScratchCgroup2) -> V2Driver:
    return V2Driver(tree.root, PARENT, tree)


def test_create_enables_memory_cpu_and_pids_from_the_mount_down_to_the_parent(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    driver.create("c1")
    assert tree.writes[:2] == [
        ("cgroup.subtree_control", "+memory +cpu +pids"),
        (f"{PARENT}/cgroup.subtree_control", "+memory +cpu +pids"),
    ]
    assert tree.get(f"{PARENT}/c1", "cgroup.controllers").split() == ["cpu", "memory", "pids"]


def test_create_enables_only_the_controllers_the_level_offers(tmp_path: Path) -> None:
    tree = ScratchCgroup2(tmp_path / "cgroup", controllers=("cpu", "io", "memory"))
    driver = V2Driver(tree.root, PARENT, tree)
    assert driver.controllers == {"memory", "cpu"}

    driver.create("c1")

    assert tree.written("cgroup.subtree_control") == ["+memory +cpu", "+memory +cpu"]


def test_controllers_already_enabled_are_not_written_again(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    driver.create("c1")
    tree.writes.clear()
    driver.create("c2")
    assert tree.written("cgroup.subtree_control") == []


def test_a_parent_that_holds_processes_cannot_delegate_controllers(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    (tree.root / PARENT).mkdir()
    tree.set(PARENT, "cgroup.controllers", "cpu memory pids")
    tree.set(PARENT, "cgroup.subtree_control", "")
    tree.set(PARENT, "cgroup.procs", "4242\n")
    tree.set("", "cgroup.subtree_control", "cpu memory pids")
    with pytest.raises(FailedPreconditionError, match="processes of its own"):
        driver.create("c1")


def test_limits_are_written_as_the_kernel_expects_them(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    tree.writes.clear()

    cgroup.set_limits(Limits(memory_bytes=64 << 20, cpu_millis=500, cpu_shares=1024,
                             pids_max=100))

    assert tree.writes == [
        (f"{PARENT}/c1/memory.max", "67108864"),
        (f"{PARENT}/c1/memory.swap.max", "0"),
        (f"{PARENT}/c1/cpu.max", "50000 100000"),
        (f"{PARENT}/c1/cpu.weight", "100"),
        (f"{PARENT}/c1/pids.max", "100"),
    ]


def test_no_limits_are_written_as_max_and_the_default_weight(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    cgroup.set_limits(Limits(memory_bytes=1 << 30, cpu_millis=2000, cpu_shares=4096,
                             pids_max=7))
    tree.writes.clear()

    cgroup.set_limits(Limits())

    assert [text for _, text in tree.writes] == ["max", "max", "max 100000", "100", "max"]
    assert tree.get(f"{PARENT}/c1", "cpu.max") == "max 100000\n"


@pytest.mark.parametrize(("shares", "weight"), [(2, "1"), (512, "59"), (262144, "10000")])
def test_cpu_shares_become_a_cpu_weight(
    tree: ScratchCgroup2, driver: V2Driver, shares: int, weight: str
) -> None:
    driver.create("c1").set_limits(Limits(cpu_shares=shares))
    assert tree.written("cpu.weight") == [weight]


def test_without_swap_accounting_only_memory_max_is_written(tmp_path: Path) -> None:
    tree = ScratchCgroup2(tmp_path / "cgroup", swap=False)
    cgroup = V2Driver(tree.root, PARENT, tree).create("c1")
    cgroup.set_limits(Limits(memory_bytes=32 << 20))
    assert tree.written("memory.max") == [str(32 << 20)]
    assert tree.written("memory.swap.max") == []


def test_a_limit_whose_controller_is_not_enabled_is_refused_before_any_write(
    tmp_path: Path,
) -> None:
    tree = ScratchCgroup2(tmp_path / "cgroup", controllers=("cpu", "memory"))
    cgroup = V2Driver(tree.root, PARENT, tree).create("c1")
    tree.writes.clear()
    with pytest.raises(UnavailableError, match=r"the pids cgroup controller .*pids_max=10"):
        cgroup.set_limits(Limits(memory_bytes=1 << 30, pids_max=10))
    assert tree.writes == []


def test_a_quota_the_kernel_refuses_names_the_limit_and_the_value(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    # 5 millicores is a 500 us quota; the kernel's minimum is 1 ms.
    with pytest.raises(InvalidArgumentError,
                       match=r"cpu_millis=5 .*'500 100000' to cpu.max failed with EINVAL"):
        cgroup.set_limits(Limits(cpu_millis=5))


def test_stats_are_parsed_from_the_kernels_files(tree: ScratchCgroup2, driver: V2Driver) -> None:
    cgroup = driver.create("c1")
    where = f"{PARENT}/c1"
    tree.set(where, "memory.current", "52428800\n")
    tree.set(where, "memory.max", "67108864\n")
    tree.set(where, "pids.current", "7\n")
    tree.set(where, "cpu.stat", (
        "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n"
        "core_sched.force_idle_usec 0\nnr_periods 120\nnr_throttled 31\n"
        "throttled_usec 2500000\nnr_bursts 0\nburst_usec 0\n"
    ))
    tree.set(where, "memory.events",
             "low 0\nhigh 0\nmax 412\noom 3\noom_kill 2\noom_group_kill 0\n")

    assert cgroup.stats() == Stats(
        memory_bytes=52428800, memory_limit_bytes=67108864, cpu_usage_ns=1234567000,
        pids_current=7, oom_kills=2,
    )
    assert cgroup.oom_kills() == 2


def test_an_unlimited_memory_max_is_reported_as_no_limit(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    tree.set(f"{PARENT}/c1", "memory.max", "max\n")
    assert cgroup.stats().memory_limit_bytes is None


def test_without_the_memory_controller_memory_stats_are_unknown(tmp_path: Path) -> None:
    tree = ScratchCgroup2(tmp_path / "cgroup", controllers=("cpu", "pids"))
    cgroup = V2Driver(tree.root, PARENT, tree).create("c1")
    stats = cgroup.stats()
    assert (stats.memory_bytes, stats.memory_limit_bytes, stats.oom_kills) == (None,) * 3
    with pytest.raises(UnavailableError, match="memory"):
        cgroup.oom_kills()


def test_freeze_writes_cgroup_freeze_and_waits_for_the_frozen_event(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    cgroup.freeze()
    assert tree.written("cgroup.freeze") == ["1"]
    assert "frozen 1" in tree.get(f"{PARENT}/c1", "cgroup.events")


def test_a_freeze_that_never_completes_is_undone_and_reported(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    tree.freezes = False
    with pytest.raises(UnavailableError, match="did not freeze"):
        cgroup.freeze(timeout=0.05)
    assert tree.written("cgroup.freeze") == ["1", "0"]


def test_kill_all_writes_cgroup_kill_and_thaws(tree: ScratchCgroup2, driver: V2Driver) -> None:
    cgroup = driver.create("c1")
    tree.set(f"{PARENT}/c1", "cgroup.procs", "4242\n")
    tree.set(f"{PARENT}/c1", "cgroup.events", "populated 1\nfrozen 0\n")
    cgroup.kill_all()
    assert tree.written("cgroup.kill") == ["1"]
    assert tree.written("cgroup.freeze") == ["0"]
    assert cgroup.pids() == []


def test_delete_retries_while_exiting_processes_keep_the_cgroup_populated(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    cgroup.add_process(4242)  # a fake pid: the scratch tree only records it
    tree.busy_rmdirs = 3
    cgroup.delete()
    assert not driver.exists("c1")


def test_delete_gives_up_on_a_cgroup_that_stays_populated(
    tree: ScratchCgroup2, driver: V2Driver
) -> None:
    cgroup = driver.create("c1")
    cgroup.add_process(4242)
    with pytest.raises(FailedPreconditionError, match="still has processes"):
        cgroup.delete(timeout=0.05)
    assert driver.exists("c1")
