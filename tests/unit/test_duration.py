"""Durations are written the Kubernetes way and read back the same."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dockyard_api.duration import format_duration, parse_duration


@pytest.mark.parametrize(("text", "value"), [
    ("30s", timedelta(seconds=30)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("500ms", timedelta(milliseconds=500)),
    ("1.5h", timedelta(minutes=90)),
    ("24h", timedelta(days=1)),
])
def test_durations_parse(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["1 day", "PT10M", "-5s", "", "10", "5d", "1h 30m"])
def test_bad_durations_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="write it like 30s"):
        parse_duration(text)


def test_durations_longer_than_a_year_are_refused() -> None:
    with pytest.raises(ValueError, match="366 days"):
        parse_duration("9000h")


@pytest.mark.parametrize("text", ["1h30m", "10m", "45s", "1h0m1s", "250ms", "0s"])
def test_formatting_round_trips(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_formatting_is_short() -> None:
    assert format_duration(timedelta(minutes=10)) == "10m"
    assert format_duration(timedelta(hours=1, seconds=1)) == "1h1s"
