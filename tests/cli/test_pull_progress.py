"""Pull progress: Docker's per-layer lines for people, nothing for programs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockyard_cli.distribution import _layer_progress
from dockyard_common import configure_logging

KNOWN = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging(lazy=True)


def test_on_a_terminal_each_layer_says_whether_it_was_there(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="console", lazy=True)
    show = _layer_progress({KNOWN})
    for line in ("Getting image source signatures", f"Copying blob {KNOWN}",
                 f"Copying blob {NEW}", f"Copying config {NEW}", "Writing manifest"):
        show(line)
    assert capsys.readouterr().err.splitlines() == [
        "aaaaaaaaaaaa: Already exists", "bbbbbbbbbbbb: Copying blob",
        "bbbbbbbbbbbb: Copying config"]


def test_with_json_logs_pull_shows_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", lazy=True)
    _layer_progress(set())(f"Copying blob {NEW}")
    assert capsys.readouterr().err == ""
