"""Friendly random container names, in Docker's `adjective_scientist` spirit."""

from __future__ import annotations

import secrets

_ADJECTIVES = ("brave", "calm", "eager", "gentle", "happy", "jolly", "keen", "lucid",
               "merry", "nifty", "proud", "quiet", "sharp", "swift", "tender", "vivid",
               "wise", "zen", "bold", "crisp")
_NAMES = ("hopper", "lovelace", "turing", "noether", "curie", "ritchie", "thompson",
          "liskov", "dijkstra", "knuth", "hamilton", "goldberg", "torvalds", "shannon",
          "babbage", "franklin", "meitner", "ride", "wozniak", "kay")


def random_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NAMES)}"
