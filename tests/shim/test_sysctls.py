"""Sysctls: which a container may set (runc's rule), how names are read, and the one way
the runtime writes into a procfs (`procfs.write_verified`), refusing anything else.

The checks are pure. The writes are made on the real kernel in a child process with mount,
IPC, UTS and network namespaces of its own, so what it mounts and sets goes with it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from dockyard_cli.flags import FlagError, parse_sysctl, sysctl_config
from dockyard_shim.errors import FailedPreconditionError, InvalidArgumentError
from dockyard_shim.kernel import Kernel, LinuxKernel, RecordingKernel
from dockyard_shim.kernel import consts as k
from dockyard_shim.runtime import procfs
from dockyard_shim.runtime.config import ContainerConfig, container_sysctls, validate
from dockyard_shim.runtime.sysctls import Sysctl, check, check_all, dotted, path_of

# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("name", [
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue.msg_max",
    "fs.mqueue.queues_max", "kernel.domainname", "net.ipv4.ip_forward",
    "net.ipv4.ip_unprivileged_port_start", "net.core.somaxconn",
])
def test_the_namespaced_sysctls_are_accepted(name: str) -> None:
    assert check(name, "1", own_network=True) == Sysctl(name, name.replace(".", "/"), "1")


@pytest.mark.parametrize("name", [
    "kernel.core_pattern", "kernel.modprobe", "kernel.sysrq", "kernel.panic",
    "kernel.msg_next_id", "kernel.shm_next_id", "vm.overcommit_memory", "fs.file-max",
    "fs.mqueue", "kernel.pid_max", "user.max_user_namespaces", "kernel",
])
def test_a_sysctl_outside_the_namespaced_allowlist_is_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError,
                       match=rf"--sysctl {name}: not a namespaced sysctl: .*net\.\*"):
        check(name, "1", own_network=True)


def test_kernel_hostname_is_refused_for_hostname() -> None:
    for name in ("kernel.hostname", "kernel/hostname"):
        with pytest.raises(InvalidArgumentError, match=rf"--sysctl {name}: .*--hostname"):
            check(name, "evil", own_network=True)


def test_net_sysctls_need_a_network_of_the_containers_own() -> None:
    with pytest.raises(InvalidArgumentError,
                       match=r"--sysctl net.ipv4.ip_forward: .*--network host"):
        check("net.ipv4.ip_forward", "1", own_network=False)
    assert check("kernel.shmmax", "1", own_network=False).path == "kernel/shmmax"


@pytest.mark.parametrize(("value", "char"), [
    ("1+kernel.core_pattern=|/tmp/x", r"\+"),  # CRI-O's CVE-2022-0811, as one value
    ("1=2", "="), ("+1", r"\+"),
])
def test_a_value_with_plus_or_equals_is_refused(value: str, char: str) -> None:
    with pytest.raises(InvalidArgumentError,
                       match=rf"--sysctl kernel.shm_rmid_forced: .*contains '{char}'.*"
                             "CVE-2022-0811"):
        check("kernel.shm_rmid_forced", value, own_network=True)


@pytest.mark.parametrize(("value", "message"), [
    ("", "a value is required"), ("1\n2", "control character"),
    ("1\r", "control character"), ("1\0", "control character"),
    ("x" * 4096, "longer than a sysctl takes"), ("\ud800", "not valid text"),
])
def test_bad_values_are_refused(value: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"--sysctl kernel.shmmax: .*{message}"):
        check("kernel.shmmax", value, own_network=True)


def test_kernel_sem_keeps_its_tab_separated_four_numbers() -> None:
    assert check("kernel.sem", "250\t32000\t32\t128", own_network=True).value == \
        "250\t32000\t32\t128"


@pytest.mark.parametrize(("name", "message"), [
    ("", "a name is required"),
    ("net.ipv4..ip_forward", "an empty part"), ("net/ipv4/../../kernel/core_pattern", "'..'"),
    ("net.ipv4.", "an empty part"), (".net.ipv4", "an empty part"),
    ("/net/ipv4/ip_forward", "an empty part"), ("net/ipv4/./ip_forward", "'.'"),
    ("net.ipv4.ip forward", "only letters"), ("net.ipv4.ip_forward\n", "only letters"),
    ("net.ipv4.conf.eth0@1.rp_filter", "only letters"), ("net.é", "only letters"),
    ("net." + "x" * 300, "only letters"),
])
def test_malformed_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"--sysctl.*{message}"):
        check(name, "1", own_network=True)


def test_slashes_are_read_as_sysctl8_reads_them() -> None:
    """With a slash first, a dot belongs to a name (a VLAN interface's `eth0.100`)."""
    assert dotted("net/ipv4/ip_forward") == "net.ipv4.ip_forward"
    assert dotted("net/ipv4/conf/eth0.100/forwarding") == "net.ipv4.conf.eth0/100.forwarding"
    assert dotted("net.ipv4.conf.eth0/100.forwarding") == "net.ipv4.conf.eth0/100.forwarding"
    assert path_of("net.ipv4.conf.eth0/100.forwarding") == "net/ipv4/conf/eth0.100/forwarding"
    assert check("net/ipv4/conf/eth0.100/forwarding", "1", own_network=True) == Sysctl(
        "net.ipv4.conf.eth0/100.forwarding", "net/ipv4/conf/eth0.100/forwarding", "1")
    assert check("fs/mqueue/msg_max", "20", own_network=False).name == "fs.mqueue.msg_max"


def test_one_sysctl_given_twice_under_two_spellings_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="net/ipv4/ip_forward: given twice"):
        check_all({"net.ipv4.ip_forward": "1", "net/ipv4/ip_forward": "0"}, own_network=True)


def test_sysctls_keep_their_order() -> None:
    given = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs/mqueue/msg_max": "20"}
    assert [s.name for s in check_all(given, own_network=True)] == [
        "net.ipv4.ip_forward", "kernel.shmmax", "fs.mqueue.msg_max"]


def test_names_and_values_must_be_text() -> None:
    with pytest.raises(InvalidArgumentError, match="a name and a value are text"):
        check_all({"kernel.shmmax": 1}, own_network=True)  # type: ignore[dict-item]


# --------------------------------------------------------------------- the config, the CLI

GOOD = ContainerConfig(image="busybox", network="none",
                       sysctls={"kernel.shmmax": "268435456", "net/ipv4/ip_forward": "1"})


def test_a_config_with_sysctls_round_trips_through_json() -> None:
    assert validate(GOOD) is GOOD
    assert ContainerConfig.from_json(GOOD.to_json()) == GOOD
    assert [s.path for s in container_sysctls(GOOD)] == ["kernel/shmmax", "net/ipv4/ip_forward"]


@pytest.mark.parametrize(("change", "message"), [
    ({"sysctls": {"kernel.core_pattern": "|/tmp/x"}}, "--sysctl kernel.core_pattern: not a"),
    ({"network": "host"}, "--sysctl net/ipv4/ip_forward: a net.* sysctl needs"),
    ({"sysctls": [["kernel.shmmax", "1"]]}, "a map of NAME to VALUE"),
])
def test_a_config_with_a_bad_sysctl_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message.replace("*", r"\*")):
        validate(replace(GOOD, **change))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=message.replace("*", r"\*")):
        ContainerConfig.from_json({**GOOD.to_json(), **change})


def test_the_flag_is_name_equals_value_split_at_the_first_equals() -> None:
    assert parse_sysctl("kernel.shmmax=1") == ("kernel.shmmax", "1")
    assert parse_sysctl("kernel.sem=250 32000 32 128") == ("kernel.sem", "250 32000 32 128")
    # Split once: what follows is the value, which the daemon then refuses.
    assert parse_sysctl("kernel.shm_rmid_forced=1+kernel.core_pattern=|/x") == (
        "kernel.shm_rmid_forced", "1+kernel.core_pattern=|/x")
    for bad in ("kernel.shmmax", "=1", ""):
        with pytest.raises(FlagError, match="write NAME=VALUE"):
            parse_sysctl(bad)
    assert sysctl_config((("a.b", "1"), ("c.d", "2"), ("a.b", "3"))) == {"a.b": "3", "c.d": "2"}


# ------------------------------------------------------------- writing into a procfs only


def test_the_recording_kernel_has_no_filesystems_to_check() -> None:
    kernel = RecordingKernel()
    with pytest.raises(OSError, match="no filesystems"):
        procfs.write_verified(kernel, 7, "sys/kernel/shmmax", b"1")
    assert kernel.calls == [("fstatfs", (7,))]


Body = Callable[[Kernel, Path], str]


def _in_own_namespaces(scratch: Path, body: Body) -> str:
    """`body(kernel, scratch)` in a child with mount, IPC, UTS and network namespaces of
    its own (mounts private), so that its mounts and settings end with it; its result, or
    the exception it raised as `Name: message`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover -- the child; reports through the pipe
        try:
            os.close(read_end)
            kernel = LinuxKernel()
            kernel.unshare(k.CLONE_NEWNS | k.CLONE_NEWIPC | k.CLONE_NEWUTS | k.CLONE_NEWNET)
            kernel.mount("", "/", "", k.MS_REC | k.MS_PRIVATE, "")
            try:
                result = body(kernel, scratch)
            except Exception as e:  # reported to the test
                result = f"{type(e).__name__}: {e}"
            os.write(write_end, result.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return result


def _fresh_proc(kernel: Kernel, scratch: Path) -> Path:
    proc = scratch / "root" / "proc"
    proc.mkdir(parents=True)
    kernel.mount("proc", str(proc), "proc", k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, "")
    return proc


def _write_shmmax(kernel: Kernel, scratch: Path, value: bytes, **open_options: int) -> str:
    proc = procfs.open_procfs(kernel, str(scratch / "root"), "/proc", **open_options)
    try:
        procfs.write_verified(kernel, proc, "sys/kernel/shmmax", value)
    finally:
        os.close(proc)
    return "written"


@pytest.mark.root
def test_a_verified_write_reaches_the_procfs_file_it_names(tmp_path: Path) -> None:
    host = Path("/proc/sys/kernel/shmmax").read_text()

    def body(kernel: Kernel, scratch: Path) -> str:
        proc = _fresh_proc(kernel, scratch)
        device = os.stat(proc).st_dev
        _write_shmmax(kernel, scratch, b"123456789", device=device)
        return (proc / "sys/kernel/shmmax").read_text().strip()

    assert _in_own_namespaces(tmp_path, body) == "123456789"  # in the child's IPC namespace
    assert Path("/proc/sys/kernel/shmmax").read_text() == host


@pytest.mark.root
def test_a_verified_write_refuses_a_tmpfs_where_proc_should_be(tmp_path: Path) -> None:
    def body(kernel: Kernel, scratch: Path) -> str:
        fake = scratch / "root" / "proc"
        fake.mkdir(parents=True)
        kernel.mount("tmpfs", str(fake), "tmpfs", 0, "mode=755")
        (fake / "sys" / "kernel").mkdir(parents=True)
        (fake / "sys" / "kernel" / "shmmax").write_text("untouched")
        outcomes = []
        try:  # found by path, as a container's /proc is
            _write_shmmax(kernel, scratch, b"1")
        except FailedPreconditionError as e:
            outcomes.append(str(e))
        fd = os.open(fake, os.O_PATH | os.O_DIRECTORY)
        try:  # handed over as a descriptor
            procfs.write_verified(kernel, fd, "sys/kernel/shmmax", b"1")
        except FailedPreconditionError as e:
            outcomes.append(str(e))
        finally:
            os.close(fd)
        outcomes.append((fake / "sys" / "kernel" / "shmmax").read_text())
        return "\n".join(outcomes)

    refused_by_path, refused_by_fd, content = _in_own_namespaces(tmp_path, body).split("\n")
    assert refused_by_path.startswith("/proc is not on a procfs (filesystem type 0x1021994)")
    assert refused_by_fd.startswith("the directory is not on a procfs")
    assert content == "untouched"


@pytest.mark.root
def test_a_verified_write_refuses_a_file_bound_over_the_one_it_names(tmp_path: Path) -> None:
    """CVE-2025-52881's shape: a mount over the named file sends the write elsewhere, even
    to another procfs file (which fstatfs alone would accept)."""
    def body(kernel: Kernel, scratch: Path) -> str:
        proc = _fresh_proc(kernel, scratch)
        decoy = scratch / "decoy"
        decoy.write_text("untouched")
        shmmax = proc / "sys" / "kernel" / "shmmax"
        shmmni = (proc / "sys" / "kernel" / "shmmni").read_text()
        outcomes = []
        for source in (decoy, proc / "sys" / "kernel" / "shmmni"):
            kernel.mount(str(source), str(shmmax), "", k.MS_BIND, "")
            try:
                outcomes.append(_write_shmmax(kernel, scratch, b"1234"))
            except OSError as e:
                outcomes.append(errno.errorcode[e.errno or 0])
            except FailedPreconditionError:
                outcomes.append("not procfs")
            kernel.umount2(str(shmmax), 0)
        outcomes += [decoy.read_text(), str(shmmni == shmmax.with_name("shmmni").read_text())]
        return " ".join(outcomes)

    assert _in_own_namespaces(tmp_path, body) == "EXDEV EXDEV untouched True"


@pytest.mark.root
def test_a_proc_that_is_a_link_or_another_procfs_is_refused(tmp_path: Path) -> None:
    def body(kernel: Kernel, scratch: Path) -> str:
        proc = _fresh_proc(kernel, scratch)
        outcomes = []
        try:  # the node's procfs, not the one mounted there
            _write_shmmax(kernel, scratch, b"1", device=os.stat("/proc").st_dev)
        except FailedPreconditionError as e:
            outcomes.append("another procfs" if "is another procfs" in str(e) else str(e))
        kernel.umount2(str(proc), 0)
        proc.rmdir()
        elsewhere = scratch / "elsewhere"
        elsewhere.mkdir()
        kernel.mount("proc", str(elsewhere), "proc", 0, "")
        proc.symlink_to("../elsewhere")  # CVE-2019-16884's /proc
        try:
            _write_shmmax(kernel, scratch, b"1")
        except OSError as e:
            outcomes.append(errno.errorcode[e.errno or 0])
        return "; ".join(outcomes)

    assert _in_own_namespaces(tmp_path, body) == "another procfs; ELOOP"
