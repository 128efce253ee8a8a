"""`--security-opt no-new-privileges`: execve grants nothing, in the main process and execs.

The attack: a setuid-root program run by a non-root user of the container. Without
no_new_privs its effective uid becomes 0 (the control test shows it does, so the
defence is what stops it); with it, the uid stays the user's. The program is the probe
of `test_seccomp`, which prints its effective uid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_shim.daemon.client import Client
from dockyard_shim.kernel import RecordingKernel, libseccomp
from dockyard_shim.kernel import consts as k
from dockyard_shim.runtime.config import Bind
from dockyard_shim.runtime.process import ProcessSpec, drop_privileges
from dockyard_shim.runtime.runtime import Runtime
from tests.security.test_seccomp import build_probe, run, run_exec
from tests.shim.conftest import no_leaks
from tests.shim.nodes import Node, busybox_node
from tests.shim.runtimes import busybox_runtime

__all__ = ["no_leaks"]

STATUS = ("grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status")


@pytest.fixture(scope="module")
def setuid_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe, owned by root and setuid, where a bind keeps its setuid bit working."""
    probe = build_probe(tmp_path_factory.mktemp("probe"))
    shutil.chown(probe, 0, 0)
    os.chmod(probe, 0o4755)  # noqa: S103 -- the setuid-root program the attack runs
    return probe


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with busybox_runtime(tmp_path / "node") as opened:
        yield opened


def _setuid(probe: Path) -> dict[str, object]:
    return {"binds": (Bind(str(probe), "/suid", readonly=True),)}


@pytest.mark.root
def test_no_new_privs_is_set_in_the_main_process_and_execs_when_asked(
        runtime: Runtime) -> None:
    for output in (run(runtime, *STATUS, no_new_privileges=True),
                   run_exec(runtime, *STATUS, no_new_privileges=True)):
        assert output.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]


@pytest.mark.root
def test_no_new_privs_is_off_by_default_as_in_docker(runtime: Runtime) -> None:
    for output in (run(runtime, *STATUS), run_exec(runtime, *STATUS)):
        assert output.split() == ["NoNewPrivs:", "0", "Seccomp:", "2"]


@pytest.mark.root
def test_with_no_new_privs_and_unconfined_there_is_no_filter(runtime: Runtime) -> None:
    output = run(runtime, *STATUS, no_new_privileges=True, seccomp="unconfined")
    assert output.split() == ["NoNewPrivs:", "1", "Seccomp:", "0"]


@pytest.mark.root
def test_a_setuid_binary_gains_nothing_under_no_new_privileges(
        runtime: Runtime, setuid_probe: Path) -> None:
    options = {"user": "1000", "no_new_privileges": True, **_setuid(setuid_probe)}
    assert run(runtime, "/suid", "euid", **options).split() == ["euid=1000"]
    assert run_exec(runtime, "/suid", "euid", **options).split() == ["euid=1000"]


@pytest.mark.root
def test_without_no_new_privileges_the_setuid_binary_becomes_root(
        runtime: Runtime, setuid_probe: Path) -> None:
    """The control: the attack works when the defence is off, so the test above is the
    defence's."""
    options = {"user": "1000", **_setuid(setuid_probe)}
    assert run(runtime, "/suid", "euid", **options).split() == ["euid=0"]
    assert run_exec(runtime, "/suid", "euid", **options).split() == ["euid=0"]


@pytest.mark.root
def test_a_non_root_user_gets_the_filter_loaded_after_its_capabilities_are_gone(
        runtime: Runtime) -> None:
    """With no_new_privs the filter is loaded last, by a process that no longer holds
    CAP_SYS_ADMIN: allowed only because no_new_privs is set."""
    output = run(runtime, "sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' "
                 "/proc/self/status", user="1000", no_new_privileges=True)
    assert output.split() == ["1000", "CapEff:", "0000000000000000", "NoNewPrivs:", "1",
                              "Seccomp:", "2"]


@pytest.mark.root
@pytest.mark.e2e
def test_the_cli_flags_reach_the_container_show_in_inspect_and_outlive_the_server(
        tmp_path: Path) -> None:
    """`--security-opt` through the CLI and the daemon; kept in the container's config, so
    an exec after the server was killed and replaced gets the same filter and no_new_privs."""
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 122}]}))
    with busybox_node(tmp_path / "cli") as node:
        node.dockyard("run", "-d", "--name", "locked", "--security-opt", "no-new-privileges",
                      "--security-opt", f"seccomp={profile}", "busybox", "sleep", "300",
                      check=True)
        (record,) = json.loads(node.dockyard("inspect", "locked", check=True).stdout)
        assert record["config"]["no_new_privileges"] is True
        assert (record["config"]["seccomp"], record["config"]["seccomp_profile_path"]) == (
            "localhost", str(profile))
        profile.unlink()  # the container keeps its own copy
        server = node.server_pid()
        os.kill(server, signal.SIGKILL)
        client = Client(Path(node.env["DOCKYARD_HOST"]))
        deadline = time.monotonic() + 15
        while _server(node) in (server, None) or not client.ping():
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.05)
        result = node.dockyard("exec", "locked", "sh", "-c",
                               "mkdir /tmp/d; grep -E '^(NoNewPrivs|Seccomp):' "
                               "/proc/self/status")
        assert "Disk quota exceeded" in result.stderr + result.stdout
        assert result.stdout.split()[-4:] == ["NoNewPrivs:", "1", "Seccomp:", "2"]
        bad = node.dockyard("run", "--security-opt", "seccomp=/no/such.json", "busybox")
        assert bad.returncode == 2
        assert "cannot read the seccomp profile" in bad.stderr
        node.dockyard("rm", "-f", "locked", check=True)


def _server(node: Node) -> int | None:
    """The daemon's server, or None while the keeper is starting a new one."""
    try:
        return node.server_pid()
    except (ValueError, OSError):
        return None


# ----------------------------------------------------------------------------- no root


def _calls(no_new_privileges: bool) -> list[tuple[str, tuple[object, ...]]]:
    kernel = RecordingKernel()
    process = ProcessSpec(args=("true",), env=(), no_new_privileges=no_new_privileges,
                          seccomp=b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # ret ALLOW
    original = os.setgroups, os.setgid, os.setuid
    os.setgroups = os.setgid = os.setuid = lambda *_: None  # type: ignore[assignment]
    try:
        drop_privileges(kernel, process, last_cap=40)
    finally:
        os.setgroups, os.setgid, os.setuid = original
    return kernel.calls


def test_without_no_new_privs_the_filter_is_loaded_before_capabilities_are_dropped() -> None:
    calls = _calls(no_new_privileges=False)
    options = [args[0] for name, args in calls if name == "prctl"]
    assert options[0] == libseccomp.PR_SET_SECCOMP  # while CAP_SYS_ADMIN is still held
    assert k.PR_SET_NO_NEW_PRIVS not in options
    assert calls[-1][0] == "capset"


def test_with_no_new_privs_it_is_set_first_and_the_filter_left_for_last() -> None:
    calls = _calls(no_new_privileges=True)
    options = [args[0] for name, args in calls if name == "prctl"]
    assert options[0] == k.PR_SET_NO_NEW_PRIVS
    assert libseccomp.PR_SET_SECCOMP not in options  # exec_command loads it, just before exec
