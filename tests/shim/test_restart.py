"""Restart policies decide like Docker's, with a back-off for crash loops."""

from __future__ import annotations

import pytest

from dockyard_shim.runtime.restart import FIRST_DELAY, MAX_DELAY, restart_delay
from dockyard_shim.runtime.state import ContainerRecord, Status


def _stopped(policy: str, *, exit_code: int = 1, retries: int = 0, count: int = 0,
             ran: float = 1.0, backoff: float = 0.0, by_user: bool = False) -> ContainerRecord:
    return ContainerRecord(
        id="c" * 64, name="c", image="busybox", status=Status.STOPPED, bundle="/b",
        config={"restart": policy, "restart_max_retries": retries}, exit_code=exit_code,
        restart_count=count, started_at=100.0, finished_at=100.0 + ran, backoff=backoff,
        stopped_by_user=by_user)


@pytest.mark.parametrize(("record", "restarts"), [
    (_stopped("no"), False),
    (_stopped("always", exit_code=0), True),
    (_stopped("unless-stopped", exit_code=0), True),
    (_stopped("on-failure", exit_code=0), False),
    (_stopped("on-failure", exit_code=3), True),
    (_stopped("on-failure", exit_code=3, retries=2, count=1), True),
    (_stopped("on-failure", exit_code=3, retries=2, count=2), False),
    (_stopped("always", by_user=True), False),
    (_stopped("unless-stopped", by_user=True), False),
])
def test_the_policy_decides_whether_to_restart(record: ContainerRecord, restarts: bool) -> None:
    assert (restart_delay(record) is not None) is restarts


def test_a_running_or_created_container_is_never_restarted() -> None:
    for status in (Status.RUNNING, Status.CREATED, Status.PAUSED):
        assert restart_delay(_stopped("always").with_(status=status)) is None


def test_a_crash_loop_backs_off_doubling_up_to_a_minute() -> None:
    delays, backoff = [], 0.0
    for _ in range(12):
        delay = restart_delay(_stopped("always", backoff=backoff))
        assert delay is not None
        delays.append(delay)
        backoff = delay
    assert delays[:4] == [FIRST_DELAY, 0.2, 0.4, 0.8]
    assert delays[-1] == MAX_DELAY


def test_a_run_of_ten_seconds_resets_the_back_off() -> None:
    assert restart_delay(_stopped("always", backoff=30.0, ran=12.0)) == FIRST_DELAY
