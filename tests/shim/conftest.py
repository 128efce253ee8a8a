"""Fixtures for node-shim tests: root gating and a leak check on the real kernel.

Tests marked `root` need root and the real kernel (namespaces, mounts, cgroups). They are
skipped, with the reason, only when the test process is not root; CI runs as root, so
there they always run. Every root test is wrapped in a leak check: the mounts, cgroups,
child processes and dockyard daemons after the test must be those before it.
The run's own cgroup parent (see tests/conftest.py) is not counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RUN_CGROUP_PARENT
from tests.shim.cgroupfs_fake import Children
from tests.shim.nodes import reap_adopted_zombies

IS_ROOT = os.geteuid() == 0
CGROUP_ROOT = Path("/sys/fs/cgroup")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") and not IS_ROOT:
            item.add_marker(pytest.mark.skip(reason="needs root: run the suite as root"))


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return {line.split()[4] for line in f}


def _dockyard_cgroups() -> set[str]:
    """Dockyard's cgroups, except the run's parent (the session removes that)."""
    found = set()
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        for path in hierarchy.glob("**/dockyard*"):
            if path.is_dir() and path.name != RUN_CGROUP_PARENT:
                found.add(str(path))
    return found


def _children() -> set[int]:
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.add(int(entry.name))
    return found


def _describe(pid: int) -> str:
    """`pid (state) command line`, for a leak report."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} ({state}) {command.strip() or '?'}"


def _daemons(base: Path) -> set[int]:
    """Dockyard daemons serving a state root under `base` (this run's temporary files).

    An autostarted daemon is no child of ours, so /proc is searched; other test runs on
    the same machine have their own `base` and are not counted.
    """
    found = set()
    marker = f"DOCKYARD_ROOT={base}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes() if b"shim" in cmdline else b""
            except OSError:
                continue
            if b"dockyard_cli\0shim" in cmdline and marker in environ:
                found.add(int(entry.name))
    return found


@pytest.fixture
def children() -> Iterator[Children]:
    """Python child processes for a test, each killed (if still running) and reaped."""
    with Children() as started:
        yield started


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail a root test that leaves mounts, dockyard cgroups or child processes behind."""
    if not (IS_ROOT and request.node.get_closest_marker("root")):
        yield
        return
    mounts, cgroups, children = _mount_points(), _dockyard_cgroups(), _children()
    base = tmp_path_factory.getbasetemp()
    daemons = _daemons(base)
    yield
    assert _mount_points() - mounts == set(), "the test leaked mounts"
    assert _dockyard_cgroups() - cgroups == set(), "the test leaked cgroups"
    # Once a `Runtime` was opened in this process (a security or runtime test), it is a
    # child subreaper: processes a test's children forked and left are reparented to it
    # when they end, as zombies. Dead, not leaked: reap them, whatever ran before.
    reap_adopted_zombies()
    leaked = _children() - children
    assert leaked == set(), "the test leaked child processes: " + "; ".join(
        _describe(pid) for pid in sorted(leaked))
    assert _daemons(base) - daemons == set(), "the test left a dockyard daemon running"
