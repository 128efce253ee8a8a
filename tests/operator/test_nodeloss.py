"""Node loss and fencing decisions."""

from __future__ import annotations

import datetime

from dockyard_api.container import RestartPolicy
from dockyard_operator.nodeloss import (
    Binding,
    Evictions,
    evictions,
    lost_nodes,
    renew_time,
)

NOW = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.UTC)


def _ago(seconds: float) -> datetime.datetime:
    return NOW - datetime.timedelta(seconds=seconds)


def test_a_node_is_lost_once_its_lease_is_older_than_the_grace() -> None:
    renewed = {"fresh": _ago(9), "late": _ago(39.9), "lost": _ago(40.1), "never": None}
    assert lost_nodes(renewed, NOW) == {"lost", "never"}
    assert lost_nodes(renewed, NOW, datetime.timedelta(seconds=20)) == {"late", "lost", "never"}


def test_the_renew_time_of_a_lease_object() -> None:
    lease = {"spec": {"holderIdentity": "n1", "renewTime": "2026-11-28T11:59:50.123456Z"}}
    assert renew_time(lease) == datetime.datetime(2026, 11, 28, 11, 59, 50, 123456,
                                                  tzinfo=datetime.UTC)
    assert renew_time({"spec": {"acquireTime": "2026-11-28T11:00:00Z"}}) == _ago(3600)
    assert renew_time({"spec": {}}) is None
    assert renew_time({}) is None


def test_containers_on_a_lost_node_move_or_fail_by_their_restart_policy() -> None:
    bindings = [Binding("ns/web", "n1", RestartPolicy.ALWAYS),
                Binding("ns/job", "n1", RestartPolicy.NEVER),
                Binding("ns/worker", "n1", RestartPolicy.ON_FAILURE),
                Binding("ns/elsewhere", "n2", RestartPolicy.ALWAYS),
                Binding("ns/pending", None, RestartPolicy.ALWAYS)]
    assert evictions(bindings, {"n1"}) == Evictions(reschedule=["ns/web", "ns/worker"],
                                                    fail=["ns/job"])
