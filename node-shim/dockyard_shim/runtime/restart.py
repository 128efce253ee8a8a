"""Restart policies, Docker's way: whether and when a stopped container starts again.

    no              never
    on-failure[:N]  after a non-zero exit, at most N times (no limit when N is 0)
    always          after any exit
    unless-stopped  like always, except after the user stopped it

A container a user stopped or killed is not restarted by `always` either, until it is
started again by hand (Docker's rule). The delay doubles from 100 ms after each restart
of a container that ran less than 10 s, up to a minute, and falls back to 100 ms once a
run lasts 10 s: a crash loop backs off, an occasional crash restarts at once.

Pure computation: no I/O.
"""

from __future__ import annotations

from dockyard_shim.runtime.state import ContainerRecord, Status

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
STABLE_RUN = 10.0


def restart_delay(record: ContainerRecord) -> float | None:
    """Seconds to wait before restarting `record`, or None when its policy says no."""
    if record.status is not Status.STOPPED or record.stopped_by_user:
        return None
    policy = record.config.get("restart", "no")
    if policy == "no":
        return None
    if policy == "on-failure":
        retries = int(record.config.get("restart_max_retries", 0))
        if record.exit_code == 0 or (retries and record.restart_count >= retries):
            return None
    ran = (record.finished_at or 0) - (record.started_at or 0)
    if ran >= STABLE_RUN:
        return FIRST_DELAY
    return min(max(FIRST_DELAY, record.backoff * 2), MAX_DELAY)
