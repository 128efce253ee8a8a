"""`--sysctl`: a namespaced setting reaches the container and only the container; anything
else is refused before a container exists.

Canaries on the host: the node's own value of every sysctl a container sets (IPC, UTS and
network ones), and /proc/sys/kernel/core_pattern, which the refused attempts aim at (a
`|program` there runs as root on the host at the next crash). An attempt that would change
a host setting if its defence were gone restores it afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.runtime.config import Bind, ContainerConfig
from dockyard_shim.runtime.process import StartError
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.runtime.state import Status
from tests.security.harness import Containers
from tests.shim.nodes import busybox_node

pytestmark = pytest.mark.root

PROC_SYS = Path("/proc/sys")
# Set in the container with these values, none of them the node's (checked below).
SETTINGS = {
    "kernel.shmmax": "268435456",                 # IPC namespace
    "kernel.shm_rmid_forced": "1",
    "fs.mqueue.msg_max": "42",
    "kernel.domainname": "sysctl.test",           # UTS namespace
    "net/ipv4/ip_unprivileged_port_start": "80",  # network namespace; sysctl(8)'s slashes
    "net.ipv4.ping_group_range": "0\t100",        # two numbers, written as sysctl prints them
}
CORE_PATTERN = PROC_SYS / "kernel" / "core_pattern"


def _host_path(name: str) -> Path:
    return PROC_SYS / name.replace(".", "/")


@pytest.fixture
def host_values() -> Iterator[dict[str, str]]:
    """The node's value of every sysctl the tests touch, restored after whatever happened."""
    paths = [_host_path(name) for name in SETTINGS] + [CORE_PATTERN]
    before = {str(path): path.read_text() for path in paths}
    yield before
    for path in paths:
        if path.read_text() != before[str(path)]:
            path.write_text(before[str(path)])


def _printed(text: str) -> str:
    """A sysctl's value as `cat` prints it, in the form given (tabs between numbers)."""
    return "\t".join(text.split())


def test_namespaced_sysctls_are_set_inside_and_the_nodes_stay_as_they_were(
        containers: Containers, host_values: dict[str, str]) -> None:
    for name, value in SETTINGS.items():
        assert _printed(_host_path(name).read_text()) != value, f"{name} is the node's too"
    reads = "".join(f"echo {name}=$(cat /proc/sys/{name.replace('.', '/')}); "
                    for name in SETTINGS)
    code, out = containers.run(
        reads + "echo 1 > /proc/sys/kernel/shmmax 2>/dev/null && echo wrote; true",
        sysctls=SETTINGS)
    assert code == 0, out
    seen = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert seen == {name: " ".join(value.split()) for name, value in SETTINGS.items()}
    assert "wrote" not in out  # /proc/sys made read-only after the runtime's writes
    for path, before in host_values.items():  # the canaries
        assert Path(path).read_text() == before, path


def test_sysctls_are_kept_in_the_config_and_written_again_at_each_start(
        runtime: Runtime, containers: Containers, host_values: dict[str, str]) -> None:
    made = ContainerConfig.from_json(containers.config(
        "cat /proc/sys/kernel/shmmax", sysctls={"kernel.shmmax": "268435456"}).to_json())
    record = runtime.create(made)
    assert runtime.store.get(record.id).config["sysctls"] == {"kernel.shmmax": "268435456"}
    for _ in range(2):  # its first start, then a start in fresh namespaces
        runtime.start(record.id)
        assert runtime.wait(record.id, timeout=10).exit_code == 0
    assert runtime.log_path(record.id).read_text() == "268435456\n" * 2
    assert _host_path("kernel.shmmax").read_text() == host_values[str(_host_path(
        "kernel.shmmax"))]


REFUSED = [
    ({"kernel.core_pattern": "|/tmp/pwn"}, "none", "kernel.core_pattern: not a namespaced"),
    ({"kernel/core_pattern": "|/tmp/pwn"}, "none", "kernel/core_pattern: not a namespaced"),
    ({"kernel.hostname": "evil"}, "none", "kernel.hostname: refused: .*--hostname"),
    ({"net.ipv4.ip_unprivileged_port_start": "0"}, "host",
     r"net.ipv4.ip_unprivileged_port_start: a net.\* sysctl needs a network"),
    ({"kernel.shm_rmid_forced": "1+kernel.core_pattern=|/tmp/pwn"}, "none",
     r"kernel.shm_rmid_forced: the value .* contains '\+'"),
    ({"kernel.shmmax": "1=kernel.core_pattern"}, "none",
     "kernel.shmmax: the value .* contains '='"),
    ({"net/ipv4/../../kernel/core_pattern": "|/tmp/pwn"}, "none",
     r"net/ipv4/\.\./\.\./kernel/core_pattern: an empty part, '\.' or '\.\.'"),
]


@pytest.mark.parametrize("refused", REFUSED)
def test_an_unsafe_sysctl_is_refused_before_anything_is_made(
        runtime: Runtime, containers: Containers, host_values: dict[str, str],
        refused: tuple[dict[str, str], str, str]) -> None:
    sysctls, network, message = refused
    with pytest.raises(InvalidArgumentError, match=f"^--sysctl {message}"):
        runtime.create(containers.config("true", sysctls=sysctls, network=network))
    assert runtime.store.all() == []
    assert list((runtime.root / "containers").glob("*")) == []
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(runtime.root) in line.split()[4]]
    assert CORE_PATTERN.read_text() == host_values[str(CORE_PATTERN)]  # the canary


def test_a_sysctl_this_kernel_lacks_fails_the_start_naming_it_and_nothing_runs(
        runtime: Runtime, containers: Containers, tmp_path: Path) -> None:
    """Allowed by name, missing from the container's network namespace: the start fails
    (125) with the sysctl named, and the command never ran."""
    marks = tmp_path / "marks"
    marks.mkdir()
    record = runtime.create(containers.config(
        "touch /marks/ran", sysctls={"kernel.shmmax": "268435456",
                                     "net.ipv4.no_such_setting": "1"},
        binds=(Bind(str(marks), "/marks"),)))
    with pytest.raises(StartError, match=r"--sysctl net.ipv4.no_such_setting=1: cannot "
                                         r"write /proc/sys/net/ipv4/no_such_setting: "
                                         "No such file or directory") as caught:
        runtime.start(record.id)
    assert caught.value.exit_code == 125
    stopped = runtime.observe(runtime.store.get(record.id))
    assert (stopped.status, stopped.exit_code) == (Status.STOPPED, 125)
    assert list(marks.iterdir()) == []


@pytest.mark.e2e
def test_the_cli_sets_a_sysctl_shows_it_and_refuses_an_unsafe_one_leaving_nothing(
        tmp_path: Path, host_values: dict[str, str]) -> None:
    with busybox_node(tmp_path) as node:
        result = node.dockyard("run", "--name", "ipc", "--sysctl", "kernel.shmmax=268435456",
                               "--sysctl", "fs/mqueue/msg_max=42", "busybox", "cat",
                               "/proc/sys/kernel/shmmax", "/proc/sys/fs/mqueue/msg_max")
        assert (result.returncode, result.stdout) == (0, "268435456\n42\n"), result.stderr
        (record,) = json.loads(node.dockyard("inspect", "ipc", check=True).stdout)
        assert record["config"]["sysctls"] == {"kernel.shmmax": "268435456",
                                               "fs/mqueue/msg_max": "42"}
        node.dockyard("rm", "ipc", check=True)
        for flag, value in (("--sysctl", "kernel.core_pattern=|/tmp/pwn"),
                            ("--sysctl", "kernel.shm_rmid_forced=1+kernel.core_pattern=|/x")):
            refused = node.dockyard("run", flag, value, "busybox", "true")
            assert refused.returncode == 1, refused.stderr
            assert f"--sysctl {value.split('=')[0]}:" in refused.stderr
        usage = node.dockyard("run", "--sysctl", "kernel.shmmax", "busybox", "true")
        assert usage.returncode == 2
        assert "write NAME=VALUE" in usage.stderr
        assert node.dockyard("ps", "-a", "-q").stdout == ""
    for path, before in host_values.items():
        assert Path(path).read_text() == before, path
