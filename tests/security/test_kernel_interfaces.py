"""/proc and /sys from inside: masked paths hide, read-only paths refuse, nothing reaches
the host's kernel settings, and the container's cgroups cannot be left or re-rooted.

Canaries on the host: /proc/sys/kernel/core_pattern (a `|program` there runs as root on
the host at the next crash), the release_agent of every cgroup v1 hierarchy (run as root
on the host when a cgroup empties: the 2019 "cgroup escape"), and the container's own
cgroup membership seen from the host. Attacks that would change a host setting if their
defence were gone restore it afterwards, so a mutation run leaves the machine sane.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.cgroups import V1Cgroup
from tests.security.harness import Containers

pytestmark = pytest.mark.root

# Masked paths of runc's and Docker's list that this host has, with content to hide.
MASKED_FILES = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list",
                            "/proc/interrupts", "/proc/sched_debug", "/proc/latency_stats")
                if Path(p).is_file() and Path(p).read_bytes()]
MASKED_DIRS = [p for p in ("/sys/firmware", "/proc/acpi", "/proc/scsi", "/proc/asound",
                           "/sys/devices/virtual/powercap")
               if Path(p).is_dir() and any(Path(p).iterdir())]
READONLY = [p for p in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                        "/proc/sysrq-trigger") if Path(p).exists()]


def test_this_host_has_masked_paths_worth_hiding() -> None:
    """The tests below need at least one non-empty masked file and directory."""
    assert MASKED_FILES
    assert MASKED_DIRS


def test_masked_files_read_empty_and_writes_never_reach_them(containers: Containers) -> None:
    """As under Docker, a masked file is /dev/null: a write is swallowed (it succeeds and
    goes nowhere) and the file still reads empty after it."""
    script = "".join(f"echo x > {p}; echo {p} $(cat {p} | wc -c) "
                     f"$(stat -c %t:%T {p}); " for p in MASKED_FILES)
    _code, out = containers.run(script)
    assert [line.split() for line in out.splitlines()] == [[p, "0", "1:3"]
                                                           for p in MASKED_FILES]


def test_masked_directories_list_empty_and_refuse_new_files(containers: Containers) -> None:
    script = "".join(f"echo {p} $(ls -A {p} | wc -l); touch {p}/x 2>/dev/null && "
                     f"echo wrote {p}; " for p in MASKED_DIRS)
    _code, out = containers.run(script)
    assert [line.split() for line in out.splitlines()] == [[p, "0"] for p in MASKED_DIRS]


def test_a_mask_cannot_be_unmounted(containers: Containers) -> None:
    """Without CAP_SYS_ADMIN umount(2) fails, and the masked content stays hidden."""
    paths = [*MASKED_FILES, *MASKED_DIRS]
    script = "".join(f"umount {p} 2>/dev/null && echo unmounted {p}; "
                     f"umount -l {p} 2>/dev/null && echo unmounted {p}; "
                     f"echo {p} $(cat {p} 2>/dev/null | wc -c) $(ls -A {p} | wc -l); "
                     for p in paths)
    _code, out = containers.run(script)
    assert "unmounted" not in out
    for line in out.splitlines():
        _path, size, entries = line.split()
        assert (size, entries) in (("0", "1"), ("0", "0")), line  # a file lists itself


def test_read_only_paths_are_read_only_mounts_and_refuse_writes(
        containers: Containers) -> None:
    script = ("awk '{print $5, substr($6, 1, 2)}' /proc/self/mountinfo; " + "".join(
        f"touch {p}/x 2>/dev/null && echo wrote {p}; " for p in READONLY))
    _code, out = containers.run(script)
    mounts = dict(line.split() for line in out.splitlines() if not line.startswith("wrote"))
    for path in READONLY:
        assert mounts.get(path) == "ro", (path, out)
    assert "wrote" not in out


@pytest.fixture
def core_pattern() -> Iterator[str]:
    """The host's core_pattern, restored after the test whatever happened."""
    path = Path("/proc/sys/kernel/core_pattern")
    before = path.read_text()
    yield before
    if path.read_text() != before:
        path.write_text(before)


def test_core_pattern_cannot_be_written_from_inside(containers: Containers,
                                                    core_pattern: str) -> None:
    """A `|program` core_pattern runs the program as root on the host at the next crash."""
    _code, out = containers.run(
        "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern && echo wrote; "
        "mount -o remount,rw /proc/sys 2>/dev/null && echo remounted; "
        "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern 2>/dev/null && echo wrote again")
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern  # the canary
    assert "wrote" not in out
    assert "remounted" not in out
    assert "Read-only file system" in out


@pytest.mark.skipif(not Path("/proc/sysrq-trigger").exists(),
                    reason="this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ off)")
def test_sysrq_trigger_cannot_be_written_from_inside(containers: Containers) -> None:
    """`h` only prints the help to the kernel log: the canary, and harmless if it lands."""
    marker = "sysrq: HELP"
    before = _kernel_log().count(marker)
    _code, out = containers.run("echo h > /proc/sysrq-trigger && echo wrote")
    assert _kernel_log().count(marker) == before
    assert "wrote" not in out


def _kernel_log() -> str:
    import subprocess  # noqa: PLC0415 -- only where the kernel has sysrq
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def test_sys_fs_cgroup_is_read_only_inside(containers: Containers) -> None:
    record = containers.start(
        "touch /sys/fs/cgroup/x 2>/dev/null && echo wrote; "
        "for h in /sys/fs/cgroup/*/; do mkdir $h/escape 2>/dev/null && echo made $h; done; "
        "grep ' /sys/fs/cgroup' /proc/self/mountinfo | awk '{print $5, substr($6,1,2)}'; "
        "sleep 60")
    log = containers.runtime.log_path(record.id)
    out = _await_output(log, "/sys/fs/cgroup")
    for line in out.splitlines():
        assert line.endswith(" ro"), out
    assert "wrote" not in out
    assert "made" not in out
    cgroup = containers.runtime.cgroup_of(record)
    assert isinstance(cgroup, V1Cgroup)  # this host is cgroup v1 (hybrid)
    for path in cgroup.paths:  # the canary: no child cgroup made from inside
        assert not (path / "escape").exists()


def test_the_parent_cgroups_procs_cannot_be_written_from_inside(
        containers: Containers) -> None:
    """Moving itself to the parent (or root) cgroup would shed every limit."""
    record = containers.start(
        "for h in /sys/fs/cgroup/*/; do echo 1 > $h/../cgroup.procs 2>/dev/null && "
        "echo moved $h; done; "
        "echo 1 > /sys/fs/cgroup/cgroup.procs 2>/dev/null && echo moved root; "
        "mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>/dev/null && "
        "echo 1 > /tmp/cg/cgroup.procs && echo moved memory; "
        "echo attacked; sleep 60")
    out = _await_output(containers.runtime.log_path(record.id), "attacked")
    assert "moved" not in out
    cgroup = containers.runtime.cgroup_of(record)
    assert cgroup is not None
    assert record.pid in cgroup.pids()  # the canary: still in its own cgroup everywhere
    for line in Path(f"/proc/{record.pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("memory", "pids", "cpu", "cpuacct", "freezer", "devices"):
            assert path.endswith(record.id), line


@pytest.fixture
def release_agents() -> Iterator[dict[Path, str]]:
    """Every v1 hierarchy's release_agent, restored after the test whatever happened."""
    found = {path: path.read_text() for path in Path("/sys/fs/cgroup").glob("*/release_agent")}
    yield found
    for path, text in found.items():
        if path.read_text() != text:
            path.write_text(text or "\n")


def test_a_cgroup_v1_release_agent_cannot_be_set_from_inside(
        containers: Containers, release_agents: dict[Path, str]) -> None:
    _code, out = containers.run(
        "mkdir -p /tmp/a /tmp/b; "
        "mount -t cgroup -o none,name=dyescape,release_agent=/tmp/pwn cgroup /tmp/a "
        "2>/dev/null && echo mounted named; "
        "mount -t cgroup -o memory cgroup /tmp/b 2>/dev/null && echo mounted memory && "
        "echo /tmp/pwn > /tmp/b/release_agent && echo wrote; "
        "for h in /sys/fs/cgroup/*/; do echo /tmp/pwn > $h/release_agent 2>/dev/null && "
        "echo wrote $h; done; echo done")
    assert out.strip().endswith("done"), out
    assert "mounted" not in out
    assert "wrote" not in out
    for path, text in release_agents.items():  # the canaries
        assert path.read_text() == text, path


def _await_output(log: Path, marker: str, timeout: float = 10) -> str:
    import time  # noqa: PLC0415
    deadline = time.monotonic() + timeout
    while marker not in (text := log.read_text()):
        assert time.monotonic() < deadline, f"no {marker!r} in the log: {text}"
        time.sleep(0.02)
    return text
