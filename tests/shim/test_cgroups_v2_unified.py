"""The v2 driver on this host's real cgroup2 tree, for what the tree really supports.

On this hybrid host the tree at /sys/fs/cgroup/unified offers none of memory, cpu and
pids (they are bound to v1), but its core files work: cgroup.procs, cgroup.freeze,
cgroup.events, cgroup.kill and cpu.stat. The controller files are tested against a
scratch tree in test_cgroups_v2_files.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.cgroups import Limits, V2Driver, parse_mountinfo
from dockyard_shim.errors import UnavailableError
from tests.shim.cgroupfs_fake import Children, RecordingFs, cleanup, forking_sleepers, unique_parent

pytestmark = pytest.mark.root


@pytest.fixture
def fs() -> RecordingFs:
    return RecordingFs()


@pytest.fixture
def driver(fs: RecordingFs) -> Iterator[V2Driver]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        unified = parse_mountinfo(f.read()).unified
    if unified is None:
        pytest.skip("this host has no cgroup2 mount")
    made = V2Driver(unified.mount_point, unique_parent(), fs)
    yield made
    cleanup(made)


def _events(driver: V2Driver, name: str) -> dict[str, str]:
    text = (Path(driver.mount) / driver.parent / name / "cgroup.events").read_text()
    return dict(line.split() for line in text.splitlines())


def test_limits_that_need_a_controller_the_tree_lacks_are_refused_naming_it(
    driver: V2Driver,
) -> None:
    if "memory" in driver.controllers:
        pytest.skip("this cgroup2 tree offers the memory controller")
    cgroup = driver.create("c1")
    with pytest.raises(UnavailableError, match=r"the memory cgroup controller .*memory_bytes"):
        cgroup.set_limits(Limits(memory_bytes=64 << 20))
    cgroup.set_limits(Limits())  # nothing to enforce: accepted


def test_create_enables_only_controllers_the_tree_offers(
    driver: V2Driver, fs: RecordingFs
) -> None:
    offered = set((Path(driver.mount) / "cgroup.controllers").read_text().split())
    wanted = {"memory", "cpu", "pids"} & offered

    cgroup = driver.create("c1")

    enabled = [
        {token.removeprefix("+") for token in text.split()}
        for file, text in fs.writes if file == "cgroup.subtree_control"
    ]
    assert all(controllers <= wanted for controllers in enabled)
    if not wanted:  # this hybrid host: memory, cpu and pids are all bound to v1
        assert enabled == []
    assert cgroup.enabled_controllers() & {"memory", "cpu", "pids"} == wanted


def test_freeze_and_thaw_are_confirmed_by_cgroup_events(
    driver: V2Driver, fs: RecordingFs, children: Children
) -> None:
    cgroup = driver.create("c1")
    cgroup.add_process(children.start("").pid)

    cgroup.freeze()
    assert ("cgroup.freeze", "1") in fs.writes
    assert _events(driver, "c1")["frozen"] == "1"

    cgroup.thaw()
    assert ("cgroup.freeze", "0") in fs.writes
    assert _events(driver, "c1")["frozen"] == "0"


def test_kill_all_uses_cgroup_kill_and_the_cgroup_becomes_unpopulated(
    driver: V2Driver, fs: RecordingFs, children: Children
) -> None:
    cgroup = driver.create("c1")
    started = [children.start("import time\ntime.sleep(60)") for _ in range(3)]
    for child in started:
        cgroup.add_process(child.pid)
    assert _events(driver, "c1")["populated"] == "1"

    cgroup.kill_all()

    assert ("cgroup.kill", "1") in fs.writes
    assert _events(driver, "c1")["populated"] == "0"
    assert [child.wait(timeout=5) for child in started] == [-9, -9, -9]


def test_without_cgroup_kill_kill_all_freezes_signals_and_thaws_until_empty(
    driver: V2Driver, children: Children
) -> None:
    old_kernel = RecordingFs(hidden=frozenset({"cgroup.kill"}))
    cgroup = V2Driver(driver.mount, driver.parent, old_kernel).create("c1")
    child = children.start_in(cgroup, forking_sleepers(3))
    assert children.line(child) == "forked"

    cgroup.kill_all()

    assert cgroup.pids() == []
    assert child.wait(timeout=5) == -9
    written = [write for write in old_kernel.writes if write[0] != "cgroup.procs"]
    assert written[:2] == [("cgroup.freeze", "1"), ("cgroup.freeze", "0")]
    assert not cgroup.is_frozen()


def test_cpu_usage_comes_from_cpu_stat(driver: V2Driver, children: Children) -> None:
    cgroup = driver.create("c1")
    # Blocks on stdin after "done": idle, not exiting (an exit burns cpu between readings).
    child = children.start_in(cgroup, "import time\nend = time.monotonic() + 0.2\n"
                                      "while time.monotonic() < end: pass\n"
                                      "print('done', flush=True)\nsys.stdin.readline()")
    assert children.line(child) == "done"

    usage = cgroup.stats().cpu_usage_ns
    cpu_stat = (Path(driver.mount) / driver.parent / "c1" / "cpu.stat").read_text()
    usage_usec = int(dict(line.split() for line in cpu_stat.splitlines())["usage_usec"])

    assert usage is not None
    assert usage >= 100_000_000
    assert usage == usage_usec * 1000  # nothing ran in between: the process is idle


def test_without_the_pids_controller_tasks_are_counted_from_cgroup_threads(
    driver: V2Driver, children: Children
) -> None:
    if "pids" in driver.controllers:
        pytest.skip("this cgroup2 tree offers the pids controller")
    cgroup = driver.create("c1")
    child = children.start_in(
        cgroup,
        "import threading, time\n"
        "for _ in range(3):\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "print('threads', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert children.line(child) == "threads"

    assert cgroup.stats().pids_current == 4
    assert cgroup.pids() == [child.pid]


def test_delete_removes_the_directory_once_killed_processes_are_gone(
    driver: V2Driver, children: Children
) -> None:
    cgroup = driver.create("c1")
    cgroup.add_process(children.start("import time\ntime.sleep(60)").pid)
    cgroup.kill_all()
    started = time.monotonic()

    cgroup.delete()

    assert not (Path(driver.mount) / driver.parent / "c1").exists()
    assert time.monotonic() - started < 1.0
