"""Seccomp as Docker applies it: the default profile, `unconfined`, custom profiles.

Each refused syscall is called from inside a real container by `probe`, a small static
program compiled here (busybox has no applet for keyctl or bpf), bound read-only at
/probe. It prints `NAME=ERRNO` (0: the call succeeded). Its arguments are chosen so that
the kernel itself, without the filter, gives another answer (EFAULT for a NULL pointer,
EBADF for a bad descriptor, ENOSYS for kexec on this kernel, success for a user
namespace): `test_without_the_filter_every_probe_gets_another_answer` checks exactly that,
so each refusal seen under the profile is the filter's, and removing the filter fails the
tests.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_api.converge import ManifestSetError
from dockyard_cli.flags import FlagError, parse_security_opt, security_config
from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.runtime import seccomp
from dockyard_shim.runtime.config import Bind, ContainerConfig, validate
from dockyard_shim.runtime.process import StartError
from dockyard_shim.runtime.runtime import Runtime
from tests.operator import container, one
from tests.shim.conftest import no_leaks
from tests.shim.runtimes import busybox_runtime, config

__all__ = ["no_leaks"]

PROBE_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long probe(const char *name) {
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0, -3, 0);
    if (!strcmp(name, "add_key")) return syscall(SYS_add_key, NULL, NULL, NULL, 0, -2);
    if (!strcmp(name, "request_key")) return syscall(SYS_request_key, NULL, NULL, NULL, 0);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, 1000, NULL, 0);
    if (!strcmp(name, "perf_event_open"))
        return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
    if (!strcmp(name, "kexec_load"))
        return syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL);
    if (!strcmp(name, "open_by_handle_at"))
        return syscall(SYS_open_by_handle_at, -1, NULL, 0);
    if (!strcmp(name, "mount")) return syscall(SYS_mount, "none", "/", (char *)1, 0, NULL);
    if (!strcmp(name, "unshare_user")) return syscall(SYS_unshare, CLONE_NEWUSER);
    if (!strcmp(name, "clone3")) return syscall(435, NULL, 0);
    if (!strcmp(name, "mseal")) return syscall(462, 0, 0, 0);
    if (!strcmp(name, "clone_newuser") || !strcmp(name, "clone_plain")) {
        unsigned long flags = SIGCHLD | (name[6] == 'n' ? CLONE_NEWUSER : 0);
        long pid = syscall(SYS_clone, flags, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid((pid_t)pid, NULL, 0);
        return pid < 0 ? -1 : 0;
    }
    if (!strcmp(name, "euid")) return geteuid();
    return -2;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long result = probe(argv[i]);
        if (result == -2) { fprintf(stderr, "unknown probe %s\n", argv[i]); return 2; }
        if (!strcmp(argv[i], "euid")) printf("euid=%ld\n", result);
        else printf("%s=%d\n", argv[i], result < 0 ? errno : 0);
    }
    return 0;
}
"""

REFUSED = {  # what Docker's default profile answers a container without extra capabilities
    "keyctl": errno.EPERM, "add_key": errno.EPERM, "request_key": errno.EPERM,
    "bpf": errno.EPERM, "perf_event_open": errno.EPERM, "kexec_load": errno.EPERM,
    "open_by_handle_at": errno.EPERM, "mount": errno.EPERM,
    # clone before unshare: once in a new user namespace (without an id map) no further
    # one can be made, whatever the filter says
    "clone_newuser": errno.EPERM, "unshare_user": errno.EPERM,
    "clone3": errno.ENOSYS,  # so that glibc falls back to clone, whose flags are checked
    "mseal": errno.ENOSYS,   # Linux 6.10: newer than every syscall the profile knows
}


def build_probe(directory: Path) -> Path:
    """Compile the probe, statically (the container has no libc)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("these tests need a C compiler (Debian's gcc) to build their probe")
    source = directory / "probe.c"
    source.write_text(PROBE_SOURCE)
    binary = directory / "probe"
    subprocess.run([compiler, "-static", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def answers(log: str) -> dict[str, int]:
    """`NAME=N` lines of the probe's output."""
    found = {}
    for line in log.splitlines():
        name, eq, value = line.partition("=")
        if eq and value.lstrip("-").isdigit():
            found[name] = int(value)
    return found


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_probe(tmp_path_factory.mktemp("probe"))


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with busybox_runtime(tmp_path / "node") as opened:
        yield opened


def run(runtime: Runtime, *command: str, **options: object) -> str:
    """Run `command` in a new container to its end; its output (exit code 0 required)."""
    record = runtime.run(config(*command, **options))
    log = runtime.log_path(record.id)
    assert runtime.wait(record.id, timeout=10).exit_code == 0, log.read_text()
    return log.read_text()


def run_exec(runtime: Runtime, *command: str, **options: object) -> str:
    """Run `command` by exec in a running container made with `options`; its output."""
    record = runtime.run(config("sleep", "60", **options))
    exec_id = runtime.execs.start(record.id, command)
    code = runtime.execs.wait(exec_id, timeout=10)
    output = runtime.execs.log_path(exec_id).read_text()
    runtime.delete(record.id, force=True)
    assert code == 0, output
    return output


def _bind(probe: Path) -> dict[str, object]:
    return {"binds": (Bind(str(probe), "/probe", readonly=True),)}


STATUS = ("grep", "-E", "^Seccomp:", "/proc/self/status")


# --------------------------------------------------------------------------- root tests


@pytest.mark.root
def test_the_main_process_and_execs_run_under_a_filter_by_default(runtime: Runtime) -> None:
    assert run(runtime, *STATUS).split() == ["Seccomp:", "2"]
    assert run_exec(runtime, *STATUS).split() == ["Seccomp:", "2"]


@pytest.mark.root
def test_unconfined_means_no_filter_in_the_main_process_and_execs(runtime: Runtime) -> None:
    assert run(runtime, *STATUS, seccomp="unconfined").split() == ["Seccomp:", "0"]
    assert run_exec(runtime, *STATUS, seccomp="unconfined").split() == ["Seccomp:", "0"]


@pytest.mark.root
def test_the_default_profile_refuses_what_docker_refuses(runtime: Runtime,
                                                         probe: Path) -> None:
    command = ("/probe", *REFUSED, "clone_plain")
    for output in (run(runtime, *command, **_bind(probe)),
                   run_exec(runtime, *command, **_bind(probe))):
        got = answers(output)
        assert {name: got.get(name) for name in REFUSED} == REFUSED, output
        assert got["clone_plain"] == 0  # a fork-like clone is allowed


@pytest.mark.root
def test_without_the_filter_every_probe_gets_another_answer(runtime: Runtime,
                                                            probe: Path) -> None:
    """The control: under `unconfined` the kernel answers each probe differently, so the
    answers of the test above are the filter's."""
    got = answers(run(runtime, "/probe", *REFUSED, seccomp="unconfined", **_bind(probe)))
    same = {name for name, code in REFUSED.items() if got.get(name) == code}
    assert same == set(), got


@pytest.mark.root
def test_cap_sys_admin_opens_mount_and_namespaces_again(runtime: Runtime,
                                                        probe: Path) -> None:
    output = run(runtime, "sh", "-c",
                 "mkdir /tmp/m && mount -t tmpfs none /tmp/m && echo mounted && "
                 "umount /tmp/m && /probe clone_newuser unshare_user clone3",
                 cap_add=("SYS_ADMIN",), **_bind(probe))
    assert "mounted" in output
    got = answers(output)
    assert (got["unshare_user"], got["clone_newuser"]) == (0, 0)
    assert got["clone3"] == errno.EINVAL  # the kernel's answer to a NULL clone_args


def _no_mkdir_profile(tmp_path: Path) -> Path:
    """A Docker-format profile that allows everything but mkdir, refused with EDQUOT (an
    errno the default profile never gives)."""
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": errno.EDQUOT}]}))
    return profile


@pytest.mark.root
def test_a_custom_profile_refuses_mkdir_with_its_errno(runtime: Runtime,
                                                       tmp_path: Path) -> None:
    profile = _no_mkdir_profile(tmp_path)
    options = {"seccomp": "localhost", "seccomp_profile_path": str(profile)}
    script = ("sh", "-c", "mkdir /tmp/d 2>&1; grep ^Seccomp: /proc/self/status")
    for output in (run(runtime, *script, **options), run_exec(runtime, *script, **options)):
        assert "Disk quota exceeded" in output  # EDQUOT: the profile's errno, not EPERM
        assert "Seccomp:\t2" in output


@pytest.mark.root
def test_the_profile_is_kept_in_the_config_and_survives_a_restart(runtime: Runtime,
                                                                  tmp_path: Path) -> None:
    profile = _no_mkdir_profile(tmp_path)
    made = ContainerConfig.from_json({**config("sh", "-c", "mkdir /tmp/d").to_json(),
                                      "seccomp": "localhost",
                                      "seccomp_profile_path": str(profile)})
    record = runtime.create(made)
    profile.unlink()  # the container keeps its copy, as Docker's does
    assert runtime.store.get(record.id).config["seccomp_profile"]
    for _ in range(2):  # its first start, then a start after it stopped
        runtime.start(record.id)
        assert runtime.wait(record.id, timeout=10).exit_code == 1


@pytest.mark.root
def test_a_profile_that_blocks_what_the_runtime_needs_fails_the_start(
        runtime: Runtime, tmp_path: Path) -> None:
    """Without no-new-privileges the filter is loaded before the runtime's last steps
    (capset, setuid), as runc does: a profile refusing them cannot start a container."""
    text = json.dumps({"defaultAction": "SCMP_ACT_ALLOW",
                       "syscalls": [{"names": ["capset"], "action": "SCMP_ACT_ERRNO"}]})
    record = runtime.create(config("true", seccomp="localhost", seccomp_profile=text))
    with pytest.raises(StartError, match="Operation not permitted") as caught:
        runtime.start(record.id)
    assert caught.value.exit_code == 125


# ----------------------------------------------------------------------------- no root


def test_a_bad_profile_is_refused_naming_the_field() -> None:
    cases = {
        '{"defaultAction": "SCMP_ACT_NOPE"}': "defaultAction",
        '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], '
        '"action": "SCMP_ACT_ALLOW"}, {"names": ["mkdir"], "action": "ALLOW"}]}':
            r"syscalls\[1\]\.action",
        '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], '
        '"action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1, '
        '"op": "SCMP_CMP_EQ"}]}]}': r"syscalls\[0\]\.args\[0\]\.index",
        '{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}':
            r"architectures\[0\]",
        '{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "EPERM"}': "defaultErrnoRet",
        '{"defaultAction": "SCMP_ACT_ERRNO", "sycalls": []}': "sycalls: unknown field",
        "[1, 2]": "must be a JSON object",
        "{": "not JSON",
    }
    for text, field in cases.items():
        with pytest.raises(InvalidArgumentError, match=field):
            validate(ContainerConfig(image="busybox", seccomp="localhost",
                                     seccomp_profile=text, seccomp_profile_path="/p.json"))


def test_seccomp_options_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="not one of default, unconfined"):
        validate(ContainerConfig(image="busybox", seccomp="strict"))
    with pytest.raises(InvalidArgumentError, match="localhost needs a profile"):
        validate(ContainerConfig(image="busybox", seccomp="localhost"))
    with pytest.raises(InvalidArgumentError, match="not localhost"):
        validate(ContainerConfig(image="busybox", seccomp_profile="{}"))
    with pytest.raises(InvalidArgumentError, match="cannot read the seccomp profile"):
        ContainerConfig.from_json({"image": "busybox", "seccomp": "localhost",
                                   "seccomp_profile_path": "/no/such/profile.json"})


def test_the_default_profile_opens_doors_only_with_their_capability() -> None:
    """The capability-conditional parts: the program differs with the capability."""
    profile = seccomp.default_profile()
    base = frozenset({"CHOWN", "SETUID"})
    plain = seccomp.compile_profile(profile, base)
    for cap in ("SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "SYS_BOOT", "SYS_TIME",
                "DAC_READ_SEARCH", "BPF", "PERFMON", "SYSLOG"):
        assert seccomp.compile_profile(profile, base | {cap}) != plain, cap
    assert seccomp.compile_profile(profile, base | {"NET_ADMIN"}) == plain


def test_the_default_profile_is_docker_json_that_round_trips() -> None:
    text = json.dumps(seccomp.DEFAULT_PROFILE)
    assert seccomp.parse_json(text) == seccomp.default_profile()
    names = {name for rule in seccomp.default_profile().rules for name in rule.names}
    for never in ("keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load",
                  "userfaultfd", "swapon"):
        assert never not in names


def test_the_api_fields_translate_to_the_runtime_config() -> None:
    plain = one(container("web", "shop"))
    fields = ("no_new_privileges", "seccomp", "seccomp_profile", "seccomp_profile_path")
    assert [plain.config[k] for k in fields] == [False, "default", "", ""]
    locked = one(container("web", "shop", noNewPrivileges=True, seccompProfile={
        "type": "Localhost", "localhostProfile": "/etc/dockyard/seccomp/web.json"}))
    assert [locked.config[k] for k in fields] == [
        True, "localhost", "", "/etc/dockyard/seccomp/web.json"]
    loose = one(container("web", "shop", seccompProfile={"type": "Unconfined"}))
    assert loose.config["seccomp"] == "unconfined"
    for want in (plain, loose):  # the runtime takes each as it is
        validate(ContainerConfig.from_json(dict(want.config)))


def test_a_localhost_profile_needs_its_path_and_only_then() -> None:
    with pytest.raises(ManifestSetError, match="localhostProfile is required"):
        one(container("web", "shop", seccompProfile={"type": "Localhost"}))


def test_security_opt_is_read_as_docker_reads_it(tmp_path: Path) -> None:
    profile = tmp_path / "p.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert parse_security_opt("no-new-privileges") == {"no_new_privileges": True}
    assert parse_security_opt("no-new-privileges:false") == {"no_new_privileges": False}
    assert parse_security_opt("no-new-privileges=true") == {"no_new_privileges": True}
    assert parse_security_opt("seccomp=unconfined") == {"seccomp": "unconfined"}
    assert parse_security_opt(f"seccomp={profile}") == {
        "seccomp": "localhost", "seccomp_profile_path": str(profile),
        "seccomp_profile": '{"defaultAction": "SCMP_ACT_ALLOW"}'}
    assert security_config(({"seccomp": "localhost", "seccomp_profile": "{}",
                             "seccomp_profile_path": "/p"}, {"seccomp": "unconfined"},
                            {"no_new_privileges": True})) == {
        "seccomp": "unconfined", "no_new_privileges": True}
    for bad, words in (("apparmor=unconfined", "not supported"),
                       ("no-new-privileges=maybe", "no-new-privileges=false"),
                       ("seccomp=/no/such/file.json", "cannot read"),
                       ("selinux", "write no-new-privileges")):
        with pytest.raises(FlagError, match=words):
            parse_security_opt(bad)
