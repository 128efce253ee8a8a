"""The lifecycle is a guarded state machine whose records persist across processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dockyard_shim.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError
from dockyard_shim.runtime.state import (
    ContainerRecord,
    StateStore,
    Status,
    can_delete,
    can_kill,
    can_pause,
    can_start,
    can_unpause,
    require,
)


def _record(name: str = "web", cid: str = "a1b2c3" + "0" * 58) -> ContainerRecord:
    return ContainerRecord(id=cid, name=name, image="busybox", status=Status.CREATED,
                           bundle="/b", config={"args": ["true"]})


@pytest.mark.parametrize(("status", "allowed"), [
    (Status.CREATED, {"start", "delete"}),
    (Status.RUNNING, {"kill", "pause"}),
    (Status.PAUSED, {"kill", "unpause"}),
    (Status.STOPPED, {"start", "delete"}),
])
def test_each_status_allows_exactly_its_verbs(status: Status, allowed: set[str]) -> None:
    guards = {"start": can_start, "kill": can_kill, "pause": can_pause,
              "unpause": can_unpause, "delete": can_delete}
    assert {verb for verb, guard in guards.items() if guard(status)} == allowed


def test_a_refused_verb_says_what_the_state_is_and_what_to_do() -> None:
    record = _record().with_(status=Status.RUNNING)
    with pytest.raises(FailedPreconditionError,
                       match="cannot remove container web: it is running; stop it first"):
        require(can_delete(record.status), "remove", record, "stop it first")


def test_records_survive_reopening_the_store(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.add(_record())
    store.put(store.get("web").with_(status=Status.STOPPED, exit_code=3))
    store.close()
    again = StateStore(tmp_path / "state.db").get("web")
    assert (again.status, again.exit_code, again.config) == (Status.STOPPED, 3,
                                                             {"args": ["true"]})


def test_a_name_in_use_is_refused_with_a_fix(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.add(_record())
    with pytest.raises(AlreadyExistsError, match="'web' is already in use: remove"):
        store.add(_record(cid="f" * 64))


def test_containers_are_found_by_name_id_or_unique_prefix(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.add(_record("one", "abc1" + "0" * 60))
    store.add(_record("two", "abc2" + "0" * 60))
    assert store.get("abc1").name == "one"
    assert store.get("two").id.startswith("abc2")
    with pytest.raises(NotFoundError, match="ambiguous"):
        store.get("abc")
    with pytest.raises(NotFoundError, match="no such container: zzz"):
        store.get("zzz")


def test_deleted_records_are_gone(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.add(_record())
    store.delete(_record().id)
    assert store.all() == []


def test_the_store_is_safe_to_use_from_many_threads_at_once(tmp_path: Path) -> None:
    """The daemon runs verbs in worker threads that share one store (a --rm run once broke)."""
    store = StateStore(tmp_path / "state.db")

    def churn(worker: int) -> None:
        for step in range(40):
            record = _record(f"w{worker}-{step}", f"{worker:02d}{step:04d}" + "0" * 58)
            store.add(record)
            store.put(store.get(record.id).with_(status=Status.STOPPED, exit_code=step))
            assert store.get(record.name).exit_code == step
            store.all()
            store.delete(record.id)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(churn, worker) for worker in range(8)]:
            future.result()
    assert store.all() == []
