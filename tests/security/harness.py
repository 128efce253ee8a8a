"""Containers to attack: a runtime on real parts whose images an attack can shape.

`security_runtime` is `tests.shim.runtimes.busybox_runtime` with more images: each is the
busybox root filesystem changed by a function (a /proc that is a link, a volume path that
points at /), committed as one layer. `Containers` runs a shell script in a container and
returns its exit code and output, or runs it in the background for `exec` attacks.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dockyard_common
import dockyard_shim
from dockyard_shim.errors import NotFoundError
from dockyard_shim.runtime.config import ContainerConfig
from dockyard_shim.runtime.ports import RunnableImage
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.runtime.state import ContainerRecord
from dockyard_shim.snapshots import OverlaySnapshotter
from tests.shim.rootfs_dir import busybox_rootfs
from tests.shim.runtimes import runtime_with

Tweak = Callable[[Path], None]


def _link(path: str, target: str) -> Tweak:
    def tweak(root: Path) -> None:
        where = root / path.lstrip("/")
        if where.is_dir() and not where.is_symlink():
            where.rmdir()
        where.symlink_to(target)
    return tweak


TRAP = "TRAP-FIRED"
"""What a trap module writes in the root it runs in: its name, one line per import."""


def _python_traps(root: Path) -> None:
    """A trap module at every place the runtime's interpreter could import from after its
    root became the container's: each stdlib name in each directory of `sys.path`, and
    each module of the runtime's own packages at its path. Any import of one appends the
    module's name to /TRAP-FIRED, in whatever root it runs in."""
    trap = f'open("/{TRAP}", "a").write(__name__ + "\\n")\n'
    for directory in {p for p in sys.path if os.path.isdir(p)}:
        here = root / directory.lstrip("/")
        here.mkdir(parents=True, exist_ok=True)
        for name in sys.stdlib_module_names:
            (here / f"{name}.py").write_text(trap)
    for package in (dockyard_shim, dockyard_common):
        for directory in package.__path__:
            for module in Path(directory).rglob("*.py"):
                planted = root / str(module).lstrip("/")
                planted.parent.mkdir(parents=True, exist_ok=True)
                planted.write_text(trap)


IMAGES: dict[str, Tweak] = {
    "busybox": lambda root: None,
    "proc-link": _link("/proc", "/tmp"),                 # CVE-2019-16884's image
    "sys-link": _link("/sys", "/tmp"),
    "data-link-to-root": _link("/data", "/"),            # a volume destination -> /
    "data-link-up": _link("/data", "../../../../../.."),
    "work-link-to-root": _link("/work", "/"),            # a working directory -> /
    "work-link-up": _link("/work", "../../../../../.."),
    "python-traps": _python_traps,                       # modules the runtime might load
}


class AttackImages:
    """The images of `IMAGES`, each one layer in the snapshotter, made when first asked
    for: most tests run one or two of them, and the trap image alone writes thousands of
    files."""

    def __init__(self, snapshots: OverlaySnapshotter, scratch: Path) -> None:
        self._snapshots = snapshots
        self._base = busybox_rootfs(scratch / "busybox")
        self._made: set[str] = set()

    def runnable(self, name: str) -> RunnableImage:
        if name not in IMAGES:
            raise NotFoundError(f"no such image: {name}")
        if name not in self._made:
            self._make(name)
        return RunnableImage(id=f"sha256:{name}", name=name, top_layer=f"sha256:{name}-layer",
                             cmd=("sh",), env=("PATH=/bin", "HOME=/root"))

    def _make(self, name: str) -> None:
        key = f"extract-{name}"
        self._snapshots.prepare(key)
        upper = self._snapshots.upper_dir(key)
        shutil.copytree(self._base, upper, symlinks=True, dirs_exist_ok=True)
        IMAGES[name](upper)
        self._snapshots.commit(f"sha256:{name}-layer", key)
        self._made.add(name)


@contextmanager
def security_runtime(root: Path, **options: Any) -> Iterator[Runtime]:
    """A runtime under `root` with the attack images; everything is removed after.
    `options` go to `Runtime`."""
    with runtime_with(root, AttackImages, prefix="dockyard-sec", **options) as runtime:
        yield runtime


class Containers:
    """Run attack scripts in containers of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def config(self, script: str, image: str = "busybox", **options: object) -> ContainerConfig:
        return ContainerConfig(image=image, command=("sh", "-c", script),
                               **{"network": "none", **options})  # type: ignore[arg-type]

    def run(self, script: str, image: str = "busybox", *, timeout: float = 30,
            **options: object) -> tuple[int, str]:
        """Run `script` with `sh -c` to its end; its exit code and output."""
        record = self.runtime.run(self.config(script, image, **options))
        record = self.runtime.wait(record.id, timeout)
        assert record.exit_code is not None
        return record.exit_code, self.runtime.log_path(record.id).read_text()

    def start(self, script: str, image: str = "busybox", **options: object) -> ContainerRecord:
        """Start `script` in the background; the running container's record."""
        return self.runtime.run(self.config(script, image, **options))

    def exec(self, record: ContainerRecord, script: str, *, timeout: float = 30,
             user: str = "", working_dir: str = "") -> tuple[int, str]:
        """`docker exec` of `script` in a running container; its exit code and output."""
        exec_id = self.runtime.execs.start(record.id, ("sh", "-c", script), user=user,
                                           working_dir=working_dir)
        code = self.runtime.execs.wait(exec_id, timeout)
        return code, self.runtime.execs.log_path(exec_id).read_text()


def status_fields(text: str) -> dict[str, str]:
    """`Name:\\tvalue` lines of /proc/PID/status, as printed by `cat`."""
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
