"""A stage's ledger: which digest of each Image is in the stage, since when, and what was
there before (`Stage.status.images` and `.history`).

The promotion gates read it (a digest enters a stage only if it entered the upstream one;
soak time counts from its `since`), promotions write it. Pure computation on the status;
the caller reads the Stage and writes the result back under a lock per stage.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from dockyard_api.stage import PromotedImage, StageImage, StageStatus

HISTORY = 256
"""Entries kept in `status.history` (the schema's limit), newest first."""


@dataclass(frozen=True)
class Ledger:
    """A stage's current digests and history, as written to its status."""

    images: tuple[PromotedImage, ...]
    history: tuple[PromotedImage, ...]

    @classmethod
    def of(cls, status: StageStatus | None) -> Ledger:
        if status is None:
            return cls((), ())
        return cls(tuple(status.images), tuple(status.history))

    def current(self, names: Sequence[str]) -> list[StageImage]:
        """The digests these Images have in the stage now (those it has)."""
        return [StageImage(image=e.image, digest=e.digest) for e in self.images
                if e.image in names]

    def enter(self, images: Sequence[StageImage], promotion: str,
              now: datetime.datetime) -> Ledger:
        """The ledger after `images` entered through `promotion` (`namespace/name`): each
        replaces its Image's entry, which moves to the history. Entering again a digest
        that is there changes nothing."""
        return self._replace(images, promotion, now)

    def roll_back(self, failed: Sequence[StageImage], previous: Sequence[StageImage],
                  promotion: str, now: datetime.datetime) -> Ledger:
        """The ledger after `failed` was rolled back to `previous`: the failed digests go
        to the history marked `rolledBack` (so they are never promoted onward), the
        previous ones are current again. An Image that had no previous digest leaves the
        stage's ledger."""
        restored = {i.image for i in previous}
        dropped = {i.image for i in failed} - restored
        ledger = self._replace(previous, promotion, now)
        leaving = tuple(_ended(e, now) for e in ledger.images if e.image in dropped)
        return Ledger(tuple(e for e in ledger.images if e.image not in dropped),
                      _newest(_mark_rolled_back(leaving + ledger.history, failed)))

    def _replace(self, images: Sequence[StageImage], promotion: str, now: datetime.datetime
                 ) -> Ledger:
        by_name = {e.image: e for e in self.images}
        ended: list[PromotedImage] = []
        for image in images:
            old = by_name.get(image.image)
            if old is not None and old.digest == image.digest:
                continue
            if old is not None:
                ended.append(_ended(old, now))
            by_name[image.image] = PromotedImage(image=image.image, digest=image.digest,
                                                 since=now, promotion=promotion)
        return Ledger(tuple(sorted(by_name.values(), key=lambda e: e.image)),
                      _newest(tuple(ended) + self.history))

    def status(self) -> dict[str, object]:
        """The `status` fields to write (a merge patch replaces both lists whole)."""
        return {"images": [e.model_dump(mode="json", by_alias=True, exclude_none=True)
                           for e in self.images],
                "history": [e.model_dump(mode="json", by_alias=True, exclude_none=True)
                            for e in self.history]}


def _ended(entry: PromotedImage, now: datetime.datetime) -> PromotedImage:
    return entry.model_copy(update={"until": now})


def _mark_rolled_back(history: tuple[PromotedImage, ...], failed: Sequence[StageImage]
                      ) -> tuple[PromotedImage, ...]:
    bad = {(i.image, i.digest) for i in failed}
    return tuple(e.model_copy(update={"rolled_back": True}) if (e.image, e.digest) in bad
                 else e for e in history)


def _newest(history: tuple[PromotedImage, ...]) -> tuple[PromotedImage, ...]:
    return history[:HISTORY]
