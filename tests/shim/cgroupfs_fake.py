"""Test helpers for the cgroups drivers: a fake cgroup2 tree, unique parents, children.

`ScratchCgroup2` is a `CgroupFs` over a scratch directory that imitates a cgroup2 mount,
because this host's unified tree offers none of memory, cpu and pids. Like the kernel, it
creates the interface files on mkdir (core files, plus those of the controllers the
parent enables in cgroup.subtree_control), removes them on rmdir, refuses what the kernel
refuses (a controller the level does not offer, a cpu.max quota under 1 ms, a weight out
of range, rmdir while populated) and records every write, so tests assert the exact
strings. It has no processes behind it: cgroup.procs, cgroup.freeze and cgroup.kill only
update the files the kernel would update.

`unique_parent` names a parent per test so parallel or crashed runs never collide, and
`cleanup` removes everything under it. `Children` starts Python children that wait for a
line on stdin before they act (so they can be put in a cgroup first) and always kills
and reaps them, for the root tests' leak check.
"""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from dockyard_shim.cgroups import Cgroup, CgroupDriver, CgroupFs

ROOT_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")

CORE_FILES = {
    "cgroup.controllers": "",
    "cgroup.subtree_control": "",
    "cgroup.procs": "",
    "cgroup.threads": "",
    "cgroup.type": "domain\n",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0\n",
    "cgroup.kill": "",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
}
CONTROLLER_FILES = {
    "memory": {
        "memory.current": "0\n",
        "memory.max": "max\n",
        "memory.high": "max\n",
        "memory.swap.current": "0\n",
        "memory.swap.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    },
    "cpu": {"cpu.max": "max 100000\n", "cpu.weight": "100\n", "cpu.weight.nice": "0\n"},
    "pids": {"pids.current": "0\n", "pids.max": "max\n", "pids.events": "max 0\n"},
}


class ScratchCgroup2(CgroupFs):
    """A scratch tree at `root` that behaves like a cgroup2 mount offering `controllers`."""

    def __init__(
        self, root: Path, controllers: tuple[str, ...] = ROOT_CONTROLLERS, *, swap: bool = True
    ) -> None:
        self.root = root
        self.swap = swap
        self.freezes = True
        """False: cgroup.freeze is accepted but cgroup.events never reports frozen."""
        self.busy_rmdirs = 0
        """How many rmdirs of a populated cgroup fail before its processes are gone."""
        self.writes: list[tuple[str, str]] = []
        root.mkdir(parents=True, exist_ok=True)
        self._put(root / "cgroup.controllers", " ".join(controllers))
        for file in ("cgroup.subtree_control", "cgroup.procs", "cgroup.threads"):
            self._put(root / file, "")
        self._put(root / "cpu.stat", CORE_FILES["cpu.stat"])

    # What the tests look at.

    def written(self, file: str) -> list[str]:
        """The texts written to files named `file`, in order."""
        return [text for path, text in self.writes if path.rsplit("/", 1)[-1] == file]

    def set(self, cgroup: str, file: str, text: str) -> None:
        """Put `text` in `<cgroup>/<file>`, as the kernel would while processes run."""
        self._put(self.root / cgroup / file, text)

    def get(self, cgroup: str, file: str) -> str:
        return (self.root / cgroup / file).read_text()

    # The CgroupFs interface.

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        offered = (path.parent / "cgroup.subtree_control").read_text().split()
        for file, text in CORE_FILES.items():
            self._put(path / file, text)
        self._put(path / "cgroup.controllers", " ".join(offered))
        for controller in offered:
            self._add_controller_files(path, controller)

    def rmdir(self, path: Path) -> None:
        if not path.is_dir():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        if self.subdirs(path):
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        if self._read(path / "cgroup.procs").split():
            if self.busy_rmdirs <= 0:
                raise OSError(errno.EBUSY, "Device or resource busy", str(path))
            self.busy_rmdirs -= 1
            if self.busy_rmdirs == 0:  # the last process has finished exiting
                self._set_procs(path, "")
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        for entry in path.iterdir():
            entry.unlink()
        os.rmdir(path)

    def write(self, path: Path, text: str) -> None:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        self.writes.append((str(path.relative_to(self.root)), text))
        handler = getattr(self, "_write_" + path.name.replace(".", "_"), None)
        if handler is None:
            self._put(path, text + "\n")
        else:
            handler(path, text)

    # The kernel's behaviour per file (Documentation/admin-guide/cgroup-v2.rst).

    def _write_cgroup_subtree_control(self, path: Path, text: str) -> None:
        offered = self._read(path.parent / "cgroup.controllers").split()
        enabled = self._read(path).split()
        for token in text.split():
            sign, controller = token[0], token[1:]
            if sign not in "+-" or controller not in offered:
                raise OSError(errno.ENOENT, "No such file or directory", str(path))
        if path.parent != self.root and self._read(path.parent / "cgroup.procs").split():
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        for token in text.split():
            if token[0] == "+" and token[1:] not in enabled:
                enabled.append(token[1:])
            elif token[0] == "-" and token[1:] in enabled:
                enabled.remove(token[1:])
        self._put(path, " ".join(c for c in offered if c in enabled))
        for child in self.subdirs(path.parent):
            child_path = path.parent / child
            self._put(child_path / "cgroup.controllers", " ".join(enabled))
            for controller in enabled:
                self._add_controller_files(child_path, controller)

    def _write_cgroup_procs(self, path: Path, text: str) -> None:
        if not text.isdigit():
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        self._set_procs(path.parent, self._read(path) + text + "\n")

    def _write_cgroup_freeze(self, path: Path, text: str) -> None:
        if text not in ("0", "1"):
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        self._put(path, text + "\n")
        if self.freezes or text == "0":
            self._set_event(path.parent, "frozen", text)

    def _write_cgroup_kill(self, path: Path, text: str) -> None:
        if text != "1":
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        self._set_procs(path.parent, "")

    def _write_memory_max(self, path: Path, text: str) -> None:
        self._put(path, _max_or_count(path, text) + "\n")

    _write_memory_swap_max = _write_memory_max
    _write_pids_max = _write_memory_max

    def _write_cpu_max(self, path: Path, text: str) -> None:
        quota, _, period = text.partition(" ")
        period = period or "100000"
        # The kernel's bounds: quota at least 1 ms, period between 1 ms and 1 s.
        if not period.isdigit() or not 1000 <= int(period) <= 1_000_000:
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        if quota != "max" and (not quota.isdigit() or int(quota) < 1000):
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        self._put(path, f"{quota} {period}\n")

    def _write_cpu_weight(self, path: Path, text: str) -> None:
        if not text.isdigit():
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        if not 1 <= int(text) <= 10_000:
            raise OSError(errno.ERANGE, "Numerical result out of range", str(path))
        self._put(path, text + "\n")

    # Plumbing.

    def _add_controller_files(self, path: Path, controller: str) -> None:
        for file, text in CONTROLLER_FILES.get(controller, {}).items():
            if file.startswith("memory.swap.") and not self.swap:
                continue
            if not (path / file).exists():
                self._put(path / file, text)

    def _set_procs(self, cgroup: Path, text: str) -> None:
        self._put(cgroup / "cgroup.procs", text)
        self._put(cgroup / "cgroup.threads", text)
        self._set_event(cgroup, "populated", "1" if text.split() else "0")

    def _set_event(self, cgroup: Path, key: str, value: str) -> None:
        lines = self._read(cgroup / "cgroup.events").splitlines()
        self._put(cgroup / "cgroup.events", "".join(
            f"{key} {value}\n" if line.split()[0] == key else line + "\n" for line in lines
        ))

    @staticmethod
    def _read(path: Path) -> str:
        return path.read_text()

    @staticmethod
    def _put(path: Path, text: str) -> None:
        path.write_text(text)


def _max_or_count(path: Path, text: str) -> str:
    if text != "max" and not text.isdigit():
        raise OSError(errno.EINVAL, "Invalid argument", str(path))
    return text


class RecordingFs(CgroupFs):
    """The real cgroupfs, recording each write as (file name, text).

    Files named in `hidden` look absent, to act as an older kernel would (no cgroup.kill
    before Linux 5.14).
    """

    def __init__(self, hidden: frozenset[str] = frozenset()) -> None:
        self.writes: list[tuple[str, str]] = []
        self.hidden = hidden

    def exists(self, path: Path) -> bool:
        return path.name not in self.hidden and super().exists(path)

    def write(self, path: Path, text: str) -> None:
        if path.name in self.hidden:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        self.writes.append((path.name, text))
        super().write(path, text)


def unique_parent() -> str:
    """A parent name of this run only; it starts with `dockyard` for the leak check."""
    return f"dockyard-test-{secrets.token_hex(4)}"


def cleanup(driver: CgroupDriver) -> None:
    """Kill and delete every cgroup under the driver's parent, then the parent."""
    for name in driver.names():
        cgroup = driver.load(name)
        cgroup.kill_all()
        cgroup.delete()
    driver.delete_parent()


def forking_sleepers(count: int, ready: str = "forked") -> str:
    """A script that forks `count` sleeping children, prints `ready`, then sleeps itself."""
    return ("import os, time\n"
            f"for _ in range({count}):\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(60)\n"
            "        os._exit(0)\n"
            f"print({ready!r}, flush=True)\n"
            "time.sleep(60)\n")


class Children:
    """Python children started by a test, each killed (if still running) and reaped."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for child in self.started:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()

    def start(self, script: str) -> subprocess.Popen[str]:
        """Run `script` after the child reads one line (see `go`)."""
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + script],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.started.append(child)
        return child

    def start_in(self, cgroup: Cgroup, script: str) -> subprocess.Popen[str]:
        """Start `script` as a process of `cgroup`: placed before it runs any of it."""
        child = self.start(script)
        cgroup.add_process(child.pid)
        self.go(child)
        return child

    @staticmethod
    def go(child: subprocess.Popen[str]) -> None:
        """Let `child` run its script."""
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()

    @staticmethod
    def line(child: subprocess.Popen[str]) -> str:
        """The next line `child` prints."""
        assert child.stdout is not None
        return child.stdout.readline().strip()
