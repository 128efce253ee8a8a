"""A stage's ledger: digests enter, replace each other into the history, and roll back."""

from __future__ import annotations

import datetime
import json

from dockyard_api.stage import PromotedImage, StageImage, StageStatus
from dockyard_operator.ledger import HISTORY, Ledger

T0 = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(hours=1)
T2 = T0 + datetime.timedelta(hours=2)
V1, V2, V3 = ("sha256:" + c * 64 for c in "123")


def _image(name: str, digest: str) -> StageImage:
    return StageImage(image=name, digest=digest)


def test_a_digest_enters_an_empty_stage() -> None:
    ledger = Ledger.of(None).enter([_image("web", V1)], "ci/p1", T0)
    assert ledger.images == (PromotedImage(image="web", digest=V1, since=T0,
                                           promotion="ci/p1"),)
    assert ledger.history == ()


def test_a_new_digest_replaces_the_old_one_which_moves_to_the_history() -> None:
    ledger = Ledger.of(None).enter([_image("web", V1), _image("api", V1)], "ci/p1", T0)
    ledger = ledger.enter([_image("web", V2)], "ci/p2", T1)
    assert [(e.image, e.digest, e.since) for e in ledger.images] == [
        ("api", V1, T0), ("web", V2, T1)]
    assert [(e.image, e.digest, e.since, e.until) for e in ledger.history] == [
        ("web", V1, T0, T1)]
    assert ledger.current(["web"]) == [_image("web", V2)]


def test_entering_a_digest_that_is_there_changes_nothing() -> None:
    ledger = Ledger.of(None).enter([_image("web", V1)], "ci/p1", T0)
    assert ledger.enter([_image("web", V1)], "ci/p2", T1) == ledger


def test_a_rollback_restores_the_previous_digest_and_marks_the_failed_one() -> None:
    ledger = Ledger.of(None).enter([_image("web", V1)], "ci/p1", T0)
    ledger = ledger.enter([_image("web", V2)], "ci/p2", T1)
    ledger = ledger.roll_back([_image("web", V2)], [_image("web", V1)], "ci/p2", T2)
    assert [(e.image, e.digest, e.since) for e in ledger.images] == [("web", V1, T2)]
    assert [(e.digest, e.until, e.rolled_back) for e in ledger.history] == [
        (V2, T2, True), (V1, T1, False)]


def test_a_rollback_with_nothing_before_takes_the_image_out_of_the_stage() -> None:
    ledger = Ledger.of(None).enter([_image("web", V1), _image("api", V3)], "ci/p1", T0)
    ledger = ledger.roll_back([_image("web", V1)], [], "ci/p1", T1)
    assert [e.image for e in ledger.images] == ["api"]
    assert [(e.digest, e.until, e.rolled_back) for e in ledger.history] == [(V1, T1, True)]


def test_the_history_is_bounded_newest_first() -> None:
    ledger = Ledger.of(None)
    for n in range(HISTORY + 10):
        digest = f"sha256:{n:064x}"
        ledger = ledger.enter([_image("web", digest)], f"ci/p{n}",
                              T0 + datetime.timedelta(minutes=n))
    assert len(ledger.history) == HISTORY
    assert ledger.history[0].digest == f"sha256:{HISTORY + 8:064x}"


def test_the_status_it_writes_reads_back_the_same() -> None:
    ledger = Ledger.of(None).enter([_image("web", V1)], "ci/p1", T0)
    ledger = ledger.enter([_image("web", V2)], "ci/p2", T1)
    assert Ledger.of(StageStatus.model_validate_json(json.dumps(ledger.status()))) == ledger
