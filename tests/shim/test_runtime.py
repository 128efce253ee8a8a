"""The runtime's verbs on real parts: overlay snapshots, cgroups and namespaces."""

from __future__ import annotations

import io
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common import configure_logging
from dockyard_shim.background import Background
from dockyard_shim.cgroups import detect
from dockyard_shim.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from dockyard_shim.kernel import LinuxKernel
from dockyard_shim.runtime.config import Bind, ContainerConfig
from dockyard_shim.runtime.process import StartError
from dockyard_shim.runtime.runtime import Runtime
from dockyard_shim.runtime.state import ContainerRecord, Status
from dockyard_shim.snapshots import OverlaySnapshotter
from tests.shim.runtimes import LayerImages, busybox_runtime, config

pytestmark = pytest.mark.root


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with busybox_runtime(tmp_path / "node") as opened:
        yield opened



def test_run_wait_and_read_the_log(runtime: Runtime) -> None:
    record = runtime.run(config("sh", "-c", "echo hello; exit 3", name="greeter"))
    final = runtime.wait(record.id, timeout=10)
    assert (final.status, final.exit_code) == (Status.STOPPED, 3)
    assert runtime.log_path("greeter").read_text() == "hello\n"


def test_writes_go_to_the_containers_own_layer_only(runtime: Runtime) -> None:
    one = runtime.run(config("sh", "-c", "echo mine > /bin/marker"))
    runtime.wait(one.id, timeout=10)
    two = runtime.run(config("sh", "-c", "cat /bin/marker 2>&1 || true"))
    runtime.wait(two.id, timeout=10)
    assert "No such file" in runtime.log_path(two.id).read_text()


def test_a_name_in_use_is_refused_and_nothing_is_left(runtime: Runtime) -> None:
    runtime.create(config("true", name="twin"))
    before = sorted(p.name for p in (runtime.root / "containers").iterdir())
    with pytest.raises(AlreadyExistsError, match="already in use"):
        runtime.create(config("true", name="twin"))
    assert sorted(p.name for p in (runtime.root / "containers").iterdir()) == before


def test_an_unknown_image_is_refused_before_anything_is_made(runtime: Runtime) -> None:
    with pytest.raises(NotFoundError, match="no such image: nginx"):
        runtime.create(ContainerConfig(image="nginx"))
    assert runtime.store.all() == []


def test_a_missing_command_exits_127_and_the_container_is_stopped(runtime: Runtime) -> None:
    record = runtime.create(config("no-such-command"))
    with pytest.raises(StartError, match="executable file not found"):
        runtime.start(record.id)
    final = runtime.store.get(record.id)
    assert (final.status, final.exit_code) == (Status.STOPPED, 127)


def test_stop_sends_term_then_kill_after_the_timeout(runtime: Runtime) -> None:
    record = runtime.run(config("sh", "-c", "trap '' TERM; sleep 60"))
    time.sleep(0.2)
    started = time.monotonic()
    final = runtime.stop(record.id, timeout=0.5)
    assert final.status is Status.STOPPED
    assert final.exit_code == 137
    assert time.monotonic() - started < 5


def test_a_term_handler_gets_to_exit_cleanly(runtime: Runtime) -> None:
    record = runtime.run(config("sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"))
    time.sleep(0.3)
    assert runtime.stop(record.id, timeout=5).exit_code == 0


def test_kill_sends_the_chosen_signal(runtime: Runtime) -> None:
    record = runtime.run(config("sh", "-c", "trap 'exit 5' USR1; while true; do sleep 0.05; done"))
    time.sleep(0.3)
    runtime.kill(record.id, signal.SIGUSR1)
    assert runtime.wait(record.id, timeout=5).exit_code == 5


def test_pid_1_without_a_handler_ignores_term_as_under_docker(runtime: Runtime) -> None:
    record = runtime.run(config("sleep", "60"))
    runtime.kill(record.id, signal.SIGTERM)
    time.sleep(0.3)
    assert runtime.observe(runtime.store.get(record.id)).status is Status.RUNNING


def test_pause_freezes_and_unpause_resumes(runtime: Runtime) -> None:
    record = runtime.run(config("sh", "-c", "while true; do echo t; sleep 0.05; done"))
    time.sleep(0.3)
    assert runtime.pause(record.id).status is Status.PAUSED
    frozen_size = runtime.log_path(record.id).stat().st_size
    time.sleep(0.4)
    assert runtime.log_path(record.id).stat().st_size == frozen_size
    assert runtime.list()[0].status is Status.PAUSED
    assert runtime.unpause(record.id).status is Status.RUNNING
    time.sleep(0.4)
    assert runtime.log_path(record.id).stat().st_size > frozen_size


def test_removing_a_running_container_needs_force(runtime: Runtime) -> None:
    record = runtime.run(config("sleep", "60"))
    with pytest.raises(FailedPreconditionError, match="stop it first or force"):
        runtime.delete(record.id)
    runtime.delete(record.id, force=True)
    assert runtime.store.all() == []
    assert not Path(record.bundle).exists()


def test_an_allocation_beyond_the_memory_limit_is_oom_killed_and_reported(
        runtime: Runtime) -> None:
    # busybox has no allocator tool: build a 64 MiB string in the shell's memory.
    script = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"
    record = runtime.run(config("sh", "-c", script, memory_bytes=16 << 20))
    final = runtime.wait(record.id, timeout=30)
    assert final.oom_killed is True
    assert final.exit_code == 137


def test_a_fork_bomb_is_stopped_by_the_pids_limit(runtime: Runtime) -> None:
    script = "(for i in $(seq 1 40); do sleep 30 & done); sleep 30"
    record = runtime.run(config("sh", "-c", script, pids_limit=10))
    time.sleep(1.0)
    assert 8 <= (runtime.stats(record.id).pids_current or 0) <= 10  # saturated, never above
    assert "can't fork" in runtime.log_path(record.id).read_text()
    runtime.delete(record.id, force=True)


def test_stats_report_memory_cpu_and_pids(runtime: Runtime) -> None:
    record = runtime.run(config("sleep", "60", memory_bytes=64 << 20))
    stats = runtime.stats(record.id)
    assert stats.pids_current == 1
    assert stats.memory_limit_bytes == 64 << 20
    assert stats.memory_bytes is not None
    assert stats.memory_bytes > 0


def test_the_list_shows_running_containers_and_all_shows_stopped_ones(
        runtime: Runtime) -> None:
    running = runtime.run(config("sleep", "60", name="sleeper"))
    done = runtime.run(config("true", name="quick"))
    runtime.wait(done.id, timeout=5)
    assert [r.name for r in runtime.list()] == ["sleeper"]
    assert {r.name for r in runtime.list(all_=True)} == {"sleeper", "quick"}
    runtime.delete(running.id, force=True)


def test_a_container_removed_while_the_list_is_read_is_left_out_not_an_error(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # The interleaving a node agent met in CI: the list reads the rows, then a concurrent
    # `rm` removes a container whose process had ended, before the list observes it.
    kept = runtime.run(config("sleep", "60", name="kept"))
    gone = runtime.run(config("sleep", "0.2", name="gone"))
    read_rows = runtime.store.all

    def rows_then_remove() -> list[ContainerRecord]:
        rows = read_rows()  # "gone" still reads running here
        runtime.wait(gone.id, timeout=5)
        runtime.delete(gone.id)
        return rows

    monkeypatch.setattr(runtime.store, "all", rows_then_remove)
    assert [r.name for r in runtime.list(all_=True)] == [kept.name]
    runtime.delete(kept.id, force=True)


def test_a_config_the_image_cannot_run_is_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidArgumentError, match="-w"):
        runtime.create(config("true", working_dir="relative"))


def test_exec_runs_in_the_containers_namespaces_and_cgroup(runtime: Runtime) -> None:
    record = runtime.run(config("sh", "-c", "echo inside > /tmp/marker; sleep 60",
                                 hostname="box", env=("FROM_CONTAINER=1",)))
    time.sleep(0.2)
    exec_id = runtime.execs.start(record.id, ("sh", "-c", "hostname; cat /tmp/marker; "
                                       "echo $FROM_CONTAINER $EXTRA; cat /proc/1/comm; "
                                       "cat /proc/self/cgroup | grep -c " + record.id[:12]),
                           env=("EXTRA=2",))
    assert runtime.execs.wait(exec_id, timeout=10) == 0
    lines = runtime.execs.log_path(exec_id).read_text().split("\n")
    # hostname, files, env, and PID 1 is the container's own (busybox sh exec'd sleep)
    assert lines[:4] == ["box", "inside", "1 2", "sleep"]
    assert int(lines[4]) >= 1  # listed in the container's cgroups


def test_exec_reports_the_exit_code_and_127_for_a_missing_command(runtime: Runtime) -> None:
    record = runtime.run(config("sleep", "60"))
    exec_id = runtime.execs.start(record.id, ("sh", "-c", "exit 9"))
    assert runtime.execs.wait(exec_id, timeout=10) == 9
    with pytest.raises(StartError, match="executable file not found") as caught:
        runtime.execs.start(record.id, ("no-such-command",))
    assert caught.value.exit_code == 127


def test_exec_in_a_stopped_container_is_refused(runtime: Runtime) -> None:
    record = runtime.run(config("true"))
    runtime.wait(record.id, timeout=10)
    with pytest.raises(FailedPreconditionError, match="exec needs it running"):
        runtime.execs.start(record.id, ("true",))


def test_exec_runs_with_the_containers_capabilities_and_user(runtime: Runtime) -> None:
    record = runtime.run(config("sleep", "60"))
    exec_id = runtime.execs.start(record.id, ("sh", "-c", "id -u; grep CapEff /proc/self/status"),
                           user="1000")
    assert runtime.execs.wait(exec_id, timeout=10) == 0
    assert runtime.execs.log_path(exec_id).read_text().split() == [
        "1000", "CapEff:", "0000000000000000"]


def test_binds_are_mounted_read_write_or_read_only(runtime: Runtime, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in").write_text("from the host\n")
    record = runtime.run(config(
        "sh", "-c", "cat /data/in; echo back > /data/out; touch /ro/x 2>&1; exit 0",
        binds=(Bind(str(data), "/data"), Bind(str(data), "/ro", readonly=True))))
    assert runtime.wait(record.id, timeout=10).exit_code == 0
    log = runtime.log_path(record.id).read_text()
    assert "from the host" in log
    assert "Read-only file system" in log
    assert (data / "out").read_text() == "back\n"
    assert not (data / "x").exists()


def test_commands_that_exit_at_once_still_report_their_code(runtime: Runtime) -> None:
    """Their start time is read before they may exec: a zombie must still be matched."""
    holder = runtime.run(config("sleep", "60"))
    for code in range(20):
        record = runtime.run(config("sh", "-c", f"exit {code}"))
        assert runtime.wait(record.id, timeout=10).exit_code == code
        exec_id = runtime.execs.start(holder.id, ("sh", "-c", f"exit {code}"))
        assert runtime.execs.wait(exec_id, timeout=10) == code


def test_in_the_background_delete_returns_before_the_disk_is_freed_and_nothing_is_left(
        tmp_path: Path) -> None:
    background = Background()
    snapshots = OverlaySnapshotter(tmp_path / "snapshots", sweep=background)
    cgroups = detect(parent=f"dockyard-test-{secrets.token_hex(4)}")
    crashed = tmp_path / "containers" / "trash-0123"  # a bundle a crash left renamed
    (crashed / "rootfs").mkdir(parents=True)
    runtime = Runtime(tmp_path, kernel=LinuxKernel(), images=LayerImages(snapshots, tmp_path),
                      snapshots=snapshots, cgroups=cgroups, later=background)
    try:
        record = runtime.run(config("true"))
        runtime.wait(record.id, timeout=10)
        runtime.delete(record.id)
        assert not Path(record.bundle).exists()  # out of the way at once
    finally:
        background.close()  # waits for the queued deletions
        cgroups.delete_parent()
    assert list((tmp_path / "containers").iterdir()) == []
    assert len(list((tmp_path / "snapshots" / "snapshots").iterdir())) == 2  # image, init


def test_a_failing_background_chore_is_logged_and_the_next_ones_run() -> None:
    logged = io.StringIO()
    configure_logging(fmt="json", stream=logged)
    try:
        background, done = Background(), []

        def fail() -> None:
            raise OSError("disk gone")

        background(fail)
        background(lambda: done.append(True))
        background.close()
    finally:
        configure_logging(lazy=True)  # back to the default, applied on next use
    assert done == [True]
    assert '"event": "a background chore failed"' in logged.getvalue()
