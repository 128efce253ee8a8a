"""Hypothesis profiles for the fuzz tests: brief and reproducible in CI, long on demand.

`ci` (the default) runs a few dozen examples per test, derandomized, so a run is the same
run everywhere and the whole of tests/fuzz stays under a minute. `long` runs thousands of
random examples per test and keeps the failures it finds in an example database outside the
repository, so the next run tries them first. Pick it with `DOCKYARD_FUZZ=long` or with
`--hypothesis-profile=long` (`docs/testing.md`, "Fuzzing").

Tests marked `root` (the layer unpacker: it chowns, and makes whiteout devices) are skipped
with the reason when the run is not root, as in tests/shim.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, database, settings

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large,
                 HealthCheck.filter_too_much]

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, database=None,
    print_blob=True, suppress_health_check=_SLOW_IS_FINE)
settings.register_profile(
    "long", max_examples=5000, deadline=None, print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
    database=database.DirectoryBasedExampleDatabase(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "dockyard" / "hypothesis"))


def pytest_configure(config: pytest.Config) -> None:
    """`ci` unless the command line chose a profile; `long` when DOCKYARD_FUZZ=long."""
    if config.getoption("hypothesis_profile", None):
        return  # --hypothesis-profile=…, loaded by Hypothesis's own plugin
    settings.load_profile("long" if os.environ.get("DOCKYARD_FUZZ") == "long" else "ci")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    here = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("root") and here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason="needs root: run the suite as root"))
