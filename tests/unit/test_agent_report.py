"""What a node agent writes into a Container's status (pure: `dockyard_shim.agent.report`)."""

from __future__ import annotations

from typing import Any

from dockyard_shim.agent.report import changed, pending, status_of

ID = "a" * 64


def _record(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": ID, "status": status, "pid": 0, "started_at": 1_800_000_000.0,
            "finished_at": None, "exit_code": None, "oom_killed": False, "restart_count": 0,
            "config": {"restart": "no"}, **fields}


def test_a_running_container_reports_its_pid_and_no_exit() -> None:
    status = status_of(_record("running", pid=42), generation=3)
    assert status["phase"] == "Running"
    assert status["pid"] == 42
    assert status["containerID"] == ID
    assert status["startedAt"] == "2027-01-15T08:00:00Z"
    assert status["exitCode"] is None
    assert status["finishedAt"] is None
    assert status["observedGeneration"] == 3
    assert status["conditions"] == [{
        "type": "Ready", "status": "True", "reason": "Running", "message": "running",
        "lastTransitionTime": "2027-01-15T08:00:00Z", "observedGeneration": 3}]


def test_an_exit_is_succeeded_or_failed_and_says_when_a_restart_comes() -> None:
    done = status_of(_record("stopped", exit_code=0, finished_at=1_800_000_060.0), 1)
    assert (done["phase"], done["exitCode"], done["pid"]) == ("Succeeded", 0, None)
    assert done["finishedAt"] == "2027-01-15T08:01:00Z"
    assert done["message"] == ""
    crashed = status_of(_record("stopped", exit_code=137, oom_killed=True, restart_count=2,
                                config={"restart": "on-failure"}), 1)
    assert (crashed["phase"], crashed["oomKilled"], crashed["restartCount"]) == \
        ("Failed", True, 2)
    assert (crashed["conditions"][0]["status"], crashed["conditions"][0]["reason"]) == \
        ("False", "OOMKilled")
    assert "restarting" in crashed["message"]
    by_hand = status_of(_record("stopped", exit_code=1, stopped_by_user=True,
                                config={"restart": "always"}), 1)
    assert by_hand["message"] == ""


def test_only_what_changed_is_written_and_absent_nones_are_not() -> None:
    wanted = status_of(_record("running", pid=7), 2)
    current = {**wanted, "node": "n1"}
    assert changed(current, wanted) == {}
    assert changed({**current, "pid": 6}, wanted) == {"pid": 7}
    assert changed({}, pending("no image", None)) == {"phase": "Pending",
                                                      "message": "no image"}


def test_conditions_the_operator_wrote_are_kept_when_the_agent_writes_its_own() -> None:
    wanted = status_of(_record("running", pid=7), 2)
    violation = {"type": "PolicyViolation", "status": "True", "reason": "BreaksStagePolicy",
                 "message": "stage prod: spec.image: a tag", "lastTransitionTime": "x"}
    current = {**wanted, "conditions": [*wanted["conditions"], violation]}
    assert changed(current, wanted) == {}
    stopped = status_of(_record("stopped", exit_code=1), 2)
    assert changed(current, stopped)["conditions"] == [*stopped["conditions"], violation]
