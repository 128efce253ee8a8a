"""What every cgroup driver must do, checked against each of them.

Three drivers run here: v1 on this host's real hierarchies, v2 on the host's real cgroup2
tree (which on a hybrid host offers no memory, cpu or pids controller, but freezes, kills
and counts cpu for real), and v2 on a scratch tree that imitates a full cgroup2 mount.
Tests that need processes to really stop or die run on the two kernel drivers; tests of
limits run where the controllers exist (v1 here, and the scratch v2 tree).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockyard_shim.cgroups import (
    CgroupDriver,
    Limits,
    V1Driver,
    V2Driver,
    detect,
    parse_mountinfo,
)
from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from tests.shim.cgroupfs_fake import (
    Children,
    ScratchCgroup2,
    cleanup,
    forking_sleepers,
    unique_parent,
)

V1 = pytest.param("v1", marks=pytest.mark.root, id="v1")
V2_KERNEL = pytest.param("v2-kernel", marks=pytest.mark.root, id="v2-kernel")
V2_SCRATCH = pytest.param("v2-scratch", id="v2-scratch")

# Counts as fast as it can, publishing the count to COUNT_FILE every 1000 steps.
COUNTER = """
import os
fd = os.open(COUNT_FILE, os.O_RDWR | os.O_CREAT)
n = 0
while True:
    n += 1
    if n % 1000 == 0:
        os.pwrite(fd, b"%20d" % n, 0)
"""


def make_driver(kind: str, tmp_path: Path) -> CgroupDriver:
    if kind == "v2-scratch":
        return V2Driver(tmp_path / "cgroup2", unique_parent(), ScratchCgroup2(tmp_path / "cgroup2"))
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounts = parse_mountinfo(f.read())
    if kind == "v1":
        if not mounts.hierarchies():
            pytest.skip("this host has no cgroup v1 hierarchy")
        driver = detect(unique_parent())
        assert isinstance(driver, V1Driver)
        return driver
    if mounts.unified is None:
        pytest.skip("this host has no cgroup2 mount")
    return V2Driver(mounts.unified.mount_point, unique_parent())


@pytest.fixture(params=[V1, V2_KERNEL, V2_SCRATCH])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CgroupDriver]:
    made = make_driver(request.param, tmp_path)
    yield made
    cleanup(made)


@pytest.fixture(params=[V1, V2_KERNEL])
def kernel_driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CgroupDriver]:
    made = make_driver(request.param, tmp_path)
    yield made
    cleanup(made)


@pytest.fixture(params=[V1, V2_SCRATCH])
def limits_driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CgroupDriver]:
    made = make_driver(request.param, tmp_path)
    yield made
    cleanup(made)


# Every driver.

def test_a_created_cgroup_exists_is_listed_and_can_be_loaded(driver: CgroupDriver) -> None:
    assert not driver.exists("c1")
    created = driver.create("c1")
    assert driver.exists("c1")
    assert driver.names() == ["c1"]
    loaded = driver.load("c1")
    assert loaded.path == created.path == f"{driver.parent}/c1"


def test_a_name_in_use_is_refused_as_already_existing(driver: CgroupDriver) -> None:
    driver.create("c1")
    with pytest.raises(AlreadyExistsError, match="c1"):
        driver.create("c1")


def test_loading_a_missing_cgroup_is_not_found(driver: CgroupDriver) -> None:
    with pytest.raises(NotFoundError, match="c1"):
        driver.load("c1")


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "../escape", ".hidden", "x" * 129])
def test_names_that_are_not_one_safe_component_are_refused(
    driver: CgroupDriver, name: str
) -> None:
    with pytest.raises(InvalidArgumentError, match="not allowed"):
        driver.create(name)
    assert driver.names() == []


def test_a_new_cgroup_is_empty_thawed_and_without_a_memory_limit(driver: CgroupDriver) -> None:
    cgroup = driver.create("c1")
    assert cgroup.pids() == []
    assert not cgroup.is_frozen()
    stats = cgroup.stats()
    assert stats.pids_current == 0
    assert stats.memory_limit_bytes is None


def test_freeze_and_thaw_are_reported_by_is_frozen(driver: CgroupDriver) -> None:
    cgroup = driver.create("c1")
    cgroup.freeze()
    assert cgroup.is_frozen()
    cgroup.freeze()  # freezing a frozen cgroup is fine
    cgroup.thaw()
    assert not cgroup.is_frozen()


def test_kill_all_of_an_empty_frozen_cgroup_leaves_it_thawed(driver: CgroupDriver) -> None:
    cgroup = driver.create("c1")
    cgroup.freeze()
    cgroup.kill_all()
    assert not cgroup.is_frozen()
    assert cgroup.pids() == []


def test_delete_removes_the_cgroup_and_a_second_delete_is_harmless(
    driver: CgroupDriver,
) -> None:
    cgroup = driver.create("c1")
    cgroup.delete()
    assert not driver.exists("c1")
    assert driver.names() == []
    cgroup.delete()


def test_a_deleted_cgroup_reports_not_found_when_used(driver: CgroupDriver) -> None:
    cgroup = driver.create("c1")
    cgroup.delete()
    for operation in (cgroup.stats, cgroup.pids, cgroup.freeze, cgroup.is_frozen,
                      lambda: cgroup.set_limits(Limits())):
        with pytest.raises(NotFoundError, match="c1"):
            operation()


def test_the_parent_is_removed_only_once_it_is_empty(driver: CgroupDriver) -> None:
    cgroup = driver.create("c1")
    with pytest.raises(FailedPreconditionError, match="c1"):
        driver.delete_parent()
    cgroup.delete()
    driver.delete_parent()
    assert driver.names() == []
    driver.delete_parent()


# Drivers on the real kernel.

def test_an_added_process_is_listed_and_counted(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    cgroup = kernel_driver.create("c1")
    child = children.start("")
    cgroup.add_process(child.pid)
    assert cgroup.pids() == [child.pid]
    assert cgroup.stats().pids_current == 1


def test_a_process_joins_by_writing_0_to_each_join_file(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    """How a container's first process moves itself in before exec (see `join_files`)."""
    cgroup = kernel_driver.create("c1")
    files = [str(path) for path in cgroup.join_files()]
    child = children.start(f"for path in {files!r}:\n"
                           "    with open(path, 'w') as f: f.write('0')\n"
                           "print('joined', flush=True)\n"
                           "sys.stdin.readline()\n")
    children.go(child)
    assert child.stdout is not None
    assert child.stdout.readline() == "joined\n"
    assert cgroup.pids() == [child.pid]


def test_adding_a_process_that_does_not_exist_is_not_found(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    cgroup = kernel_driver.create("c1")
    gone = children.start("")
    gone.kill()
    gone.wait()
    with pytest.raises(NotFoundError, match=str(gone.pid)):
        cgroup.add_process(gone.pid)


def test_a_new_driver_finds_the_cgroup_and_its_processes_again(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    # What the daemon does after a restart: a fresh driver, the same parent.
    child = children.start("")
    kernel_driver.create("c1").add_process(child.pid)
    restarted: CgroupDriver = (
        V2Driver(kernel_driver.mount, kernel_driver.parent)
        if isinstance(kernel_driver, V2Driver) else detect(kernel_driver.parent)
    )
    assert restarted.names() == ["c1"]
    assert restarted.load("c1").pids() == [child.pid]


def test_freeze_stops_a_counting_process_and_thaw_resumes_it(
    kernel_driver: CgroupDriver, children: Children, tmp_path: Path
) -> None:
    count_file = tmp_path / "count"
    cgroup = kernel_driver.create("c1")
    children.start_in(cgroup, f"COUNT_FILE = {str(count_file)!r}\n" + COUNTER)
    _wait_for(lambda: _count(count_file) > 0)

    cgroup.freeze()
    assert cgroup.is_frozen()
    frozen_at = _count(count_file)
    time.sleep(0.3)
    assert _count(count_file) == frozen_at

    cgroup.thaw()
    assert not cgroup.is_frozen()
    _wait_for(lambda: _count(count_file) > frozen_at)


def test_kill_all_kills_every_process_including_forked_ones(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    cgroup = kernel_driver.create("c1")
    child = children.start_in(cgroup, forking_sleepers(4))
    assert children.line(child) == "forked"
    assert len(cgroup.pids()) == 5

    cgroup.kill_all()

    assert cgroup.pids() == []
    assert child.wait(timeout=5) == -9
    assert not cgroup.is_frozen()


def test_kill_all_kills_a_frozen_cgroup_and_leaves_it_thawed(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    cgroup = kernel_driver.create("c1")
    child = children.start("")
    cgroup.add_process(child.pid)
    cgroup.freeze()

    cgroup.kill_all()

    assert child.wait(timeout=5) == -9
    assert cgroup.pids() == []
    assert not cgroup.is_frozen()


def test_a_cgroup_can_be_deleted_right_after_kill_all(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    cgroup = kernel_driver.create("c1")
    for _ in range(3):
        cgroup.add_process(children.start("import time\ntime.sleep(60)").pid)
    cgroup.kill_all()
    cgroup.delete()
    assert not kernel_driver.exists("c1")


def test_deleting_a_cgroup_with_live_processes_is_a_failed_precondition(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    cgroup = kernel_driver.create("c1")
    child = children.start("")
    cgroup.add_process(child.pid)
    with pytest.raises(FailedPreconditionError, match="kill_all"):
        cgroup.delete(timeout=0.1)
    assert kernel_driver.exists("c1")
    assert child.poll() is None


def test_the_cpu_time_of_a_busy_process_is_counted(
    kernel_driver: CgroupDriver, children: Children
) -> None:
    cgroup = kernel_driver.create("c1")
    child = children.start("import time\nend = time.monotonic() + 0.3\n"
                           "while time.monotonic() < end: pass\nprint('done', flush=True)")
    cgroup.add_process(child.pid)
    before = cgroup.stats().cpu_usage_ns
    assert before is not None
    children.go(child)
    assert children.line(child) == "done"
    after = cgroup.stats().cpu_usage_ns
    assert after is not None
    assert after - before > 150_000_000  # most of the 0.3 s busy loop


# Drivers with the memory, cpu and pids controllers.

def test_limits_are_applied_and_the_memory_limit_is_read_back(
    limits_driver: CgroupDriver,
) -> None:
    cgroup = limits_driver.create("c1")
    cgroup.set_limits(Limits(memory_bytes=64 << 20, cpu_millis=500, cpu_shares=512,
                             pids_max=100))
    assert cgroup.stats().memory_limit_bytes == 64 << 20


def test_every_update_replaces_the_limits_and_none_removes_them(
    limits_driver: CgroupDriver,
) -> None:
    cgroup = limits_driver.create("c1")
    # Down, then up past the start: v1 must order memory and memory+swap both ways.
    for memory in (64 << 20, 32 << 20, 128 << 20):
        cgroup.set_limits(Limits(memory_bytes=memory, pids_max=10))
        assert cgroup.stats().memory_limit_bytes == memory
    cgroup.set_limits(Limits())
    assert cgroup.stats().memory_limit_bytes is None


def _count(path: Path) -> int:
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError:
        return 0
    return int(text) if text else 0


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)

