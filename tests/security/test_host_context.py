"""Nothing from the container's filesystem runs in the runtime's context.

Between pivot_root (or an exec's setns into the container's mounts) and execve, a
runtime process is still the node's root, and every path it opens is the image's. If
Python imported a module then, it would load the image's file at the interpreter's path
and run it as the node's root. The image here plants a trap module at every such path
(`harness._python_traps`); starts and execs, ordinary and failing ones, with every
option that adds steps after pivot_root, must leave no trap fired.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dockyard_shim.runtime.config import ContainerConfig
from dockyard_shim.runtime.process import StartError, seal_imports
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.runtime.state import ContainerRecord
from dockyard_shim.runtime.userns import SubordinateIds
from tests.security.harness import TRAP, Containers, security_runtime

IMAGE = "python-traps"


def _fired(runtime: Runtime, record: ContainerRecord) -> str:
    upper = runtime._snapshots.upper_dir(record.id)  # the bytes on disk
    trap = upper / TRAP
    return trap.read_text() if trap.exists() else ""


@pytest.mark.parametrize("options", [
    {},
    {"user": "nobody-here"},                 # fails in drop_privileges
    {"working_dir": "/no/such/dir"},         # fails in exec_command
    {"no_new_privileges": True, "read_only": False},
    {"seccomp": "unconfined", "cap_add": ("ALL",)},
    {"sysctls": {"kernel.shmmni": "1024"}},
], ids=["plain", "unknown-user", "bad-workdir", "no-new-privileges", "unconfined",
        "sysctl"])
def test_starts_load_nothing_from_the_image(containers: Containers, runtime: Runtime,
                                            options: dict[str, object]) -> None:
    record = runtime.create(containers.config("true", IMAGE, **options))
    try:
        runtime.start(record.id)
        runtime.wait(record.id, timeout=10)
    except StartError:
        pass  # the failing ones: what matters is what ran on the way
    assert _fired(runtime, record) == ""
    assert not Path("/", TRAP).exists()


def test_a_missing_command_loads_nothing_from_the_image(runtime: Runtime) -> None:
    with pytest.raises(StartError):
        runtime.run(ContainerConfig(image=IMAGE, command=("/no/such/command",),
                                    network="none"))
    (record,) = runtime.store.all()
    assert _fired(runtime, record) == ""


def test_execs_load_nothing_from_the_image(containers: Containers,
                                           runtime: Runtime) -> None:
    record = containers.start("sleep 60", IMAGE)
    assert containers.exec(record, "true")[0] == 0
    for user, workdir in (("nobody-here", ""), ("", "/no/such/dir")):
        with pytest.raises(StartError):
            containers.exec(record, "true", user=user, working_dir=workdir)
    assert _fired(runtime, record) == ""


def test_with_a_user_namespace_nothing_is_loaded_either(tmp_path: Path) -> None:
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text("dockyard:300000:65536\n")
    ids = SubordinateIds(tmp_path / "subuid", tmp_path / "subgid")
    with security_runtime(tmp_path / "node", subordinate_ids=ids) as runtime:
        containers = Containers(runtime)
        record = containers.start("sleep 60", IMAGE, userns="auto")
        assert containers.exec(record, "true")[0] == 0
        assert _fired(runtime, record) == ""


def test_a_sealed_process_refuses_every_import(tmp_path: Path) -> None:
    """The seal itself, in a child: a module that is there to import is refused."""
    (tmp_path / "sealed_probe.py").write_text("VALUE = 1\n")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sys.path.insert(0, str(tmp_path))
            seal_imports()
            try:
                import sealed_probe  # noqa: F401, PLC0415 -- the import under test
            except ImportError as e:
                os.write(write, str(e).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        message = answer.read()
    os.waitpid(pid, 0)
    assert message.startswith("import of sealed_probe refused: this process is inside")
