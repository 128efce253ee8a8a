"""What a node agent writes into a Container's status: the local runtime's record of the
container, in the API's words.

Pure computation. The agent patches only the fields it owns (the operator owns `node`,
`imageDigest` and `phase: Pending` before a container is created), and only when
something changed, so a quiet node writes nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from dockyard_api.container import ContainerPhase
from dockyard_api.kube import time

_PHASES = {"created": ContainerPhase.CREATED, "running": ContainerPhase.RUNNING,
           "paused": ContainerPhase.PAUSED}
_RESTARTS: dict[str, Callable[[int | None], bool]] = {
    "always": lambda code: True, "on-failure": lambda code: code != 0}


def status_of(record: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """The status fields of a Container whose local container is `record` (an item of the
    daemon's GET /containers/json?all=1), made from the spec of `generation`. A field
    that no longer applies is None (a merge patch removes it)."""
    state = str(record["status"])
    exit_code = record.get("exit_code")
    phase = _PHASES.get(state)
    message = ""
    if phase is None:  # stopped
        phase = ContainerPhase.SUCCEEDED if exit_code == 0 else ContainerPhase.FAILED
        policy = str((record.get("config") or {}).get("restart") or "no")
        restarts = _RESTARTS.get(policy)
        if restarts is not None and restarts(exit_code) and not record.get("stopped_by_user"):
            message = f"exited with code {exit_code}; restarting (restartPolicy)"
    running = state in ("running", "paused")
    ready = _ready(state, record, generation)
    return {
        "phase": str(phase),
        "containerID": record["id"],
        "pid": (record.get("pid") or None) if running else None,
        "startedAt": _timestamp(record.get("started_at")),
        "finishedAt": None if running else _timestamp(record.get("finished_at")),
        "exitCode": None if running else exit_code,
        "oomKilled": bool(record.get("oom_killed")),
        "restartCount": int(record.get("restart_count") or 0),
        "message": message,
        "observedGeneration": generation,
        "conditions": [ready],
    }


def _ready(state: str, record: Mapping[str, Any], generation: int) -> dict[str, Any]:
    """The `Ready` condition: True while the container's process runs. Its transition time
    is the record's own (start, exit or creation), so it only changes on a transition."""
    if state == "running":
        status, reason, since = "True", "Running", record.get("started_at")
    elif state == "paused":
        status, reason, since = "False", "Paused", record.get("started_at")
    elif state == "created":
        status, reason, since = "False", "Created", record.get("created_at")
    else:
        reason = "OOMKilled" if record.get("oom_killed") else "Exited"
        status, since = "False", record.get("finished_at") or record.get("started_at")
    return {"type": "Ready", "status": status, "reason": reason,
            "message": f"{state} (exit code {record.get('exit_code')})"
            if state == "stopped" else state,
            "lastTransitionTime": _timestamp(since or record.get("created_at") or 0.0),
            "observedGeneration": generation}


def pending(message: str, generation: int | None = None) -> dict[str, Any]:
    """The status of a Container the node cannot run yet, and why."""
    return {"phase": str(ContainerPhase.PENDING), "message": message[:4096],
            "containerID": None, "pid": None, "observedGeneration": generation}


def changed(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `wanted` that `current` (the object's status) does not show yet.
    Conditions of other types than the agent's (the operator's `PolicyViolation`) are
    kept: a merge patch replaces the whole list."""
    if "conditions" in wanted:
        ours = {c["type"] for c in wanted["conditions"]}
        theirs = [c for c in current.get("conditions") or [] if c.get("type") not in ours]
        wanted = {**wanted, "conditions": [*wanted["conditions"], *theirs]}
    return {key: value for key, value in wanted.items()
            if current.get(key) != value and not (value is None and key not in current)}


def _timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time(datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC))
