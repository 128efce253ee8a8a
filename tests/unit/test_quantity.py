"""Quantities are parsed exactly, refused with a hint, and agree with the CRD's pattern."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from dockyard_api.quantity import PATTERN, Quantity, _cpu, _memory, cpu_millis, memory_bytes


@pytest.mark.parametrize(("text", "value"), [
    ("512Mi", 512 * 2**20),
    ("1.5Gi", 1610612736),
    ("0.5", Fraction(1, 2)),
    (".5", Fraction(1, 2)),
    ("250m", Fraction(1, 4)),
    ("100u", Fraction(1, 10_000)),
    ("1k", 1000),
    ("1e3", 1000),
    ("1E", 10**18),
    ("2Ei", 2 * 2**60),
    ("7", 7),
])
def test_quantities_parse_to_their_exact_value(text: str, value: Fraction | int) -> None:
    assert Quantity.parse(text).value == value


def test_integers_are_quantities_and_keep_their_text() -> None:
    quantity = Quantity.parse(1024)
    assert (quantity.value, quantity.text) == (1024, "1024")


@pytest.mark.parametrize(("raw", "hint"), [
    (0.5, "write '0.5'"),
    (True, "boolean"),
    ("-1Gi", "invalid quantity"),
    ("12XB", "invalid quantity"),
    ("1.5e3.2", "invalid quantity"),
    ("1 Gi", "invalid quantity"),
    ("", "invalid quantity"),
    ("10E", "larger than"),
    (2**63, "out of range"),
    ("1" * 65, "longer than 64"),
    (["1"], "got list"),
])
def test_bad_quantities_are_refused_with_a_hint(raw: object, hint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(hint)):
        Quantity.parse(raw)


def test_memory_must_be_whole_positive_bytes() -> None:
    assert memory_bytes(_memory("1.5Gi")) == 1610612736
    with pytest.raises(ValueError, match="whole number of bytes"):
        _memory("100m")
    with pytest.raises(ValueError, match="greater than zero"):
        _memory(0)


def test_cpu_has_millicore_precision() -> None:
    assert cpu_millis(_cpu("0.1")) == 100
    assert cpu_millis(_cpu("250m")) == 250
    assert cpu_millis(_cpu(2)) == 2000
    with pytest.raises(ValueError, match="finer than 1m"):
        _cpu("1500u")
    with pytest.raises(ValueError, match="greater than zero"):
        _cpu("0m")


@pytest.mark.parametrize("text", ["1", "0.5", "1Mi", "5e2", "3m", "1.", ".1", "-1", "1Mb", "e3",
                                  "1e", "1ee3", "1.5.5", "Mi", "1e123"])
def test_the_schema_pattern_accepts_exactly_what_the_parser_accepts(text: str) -> None:
    try:
        Quantity.parse(text)
        parsed = True
    except ValueError:
        parsed = False
    assert (re.search(PATTERN, text) is not None) == parsed
