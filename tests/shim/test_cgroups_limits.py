"""Limits are checked when they are made, and converted the way runc and crun do."""

from __future__ import annotations

import pytest

from dockyard_shim.cgroups import Limits, cpu_shares_to_weight
from dockyard_shim.errors import InvalidArgumentError


@pytest.mark.parametrize(("millis", "quota"), [(500, 50_000), (200, 20_000), (1, 100),
                                                (2500, 250_000), (None, None)])
def test_cpu_millis_become_a_quota_per_100ms_period(millis: int | None,
                                                    quota: int | None) -> None:
    assert Limits(cpu_millis=millis).cpu_quota_us == quota


@pytest.mark.parametrize(("field", "value", "message"), [
    ("memory_bytes", 0, "memory_bytes=0 is out of range"),
    ("memory_bytes", -1, "memory_bytes=-1 is out of range"),
    ("memory_bytes", 2**63, "out of range"),
    ("cpu_millis", 0, "cpu_millis=0 is out of range"),
    ("cpu_shares", 1, "cpu_shares=1 is out of range 2..262144"),
    ("cpu_shares", 262145, "cpu_shares=262145 is out of range 2..262144"),
    ("pids_max", 0, "pids_max=0 is out of range"),
    ("pids_max", True, "pids_max must be an integer"),
    ("memory_bytes", 1.5, "memory_bytes must be an integer"),
    ("cpu_millis", "500m", "cpu_millis must be an integer"),
])
def test_limits_out_of_range_are_refused_naming_the_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Limits(**{field: value})  # type: ignore[arg-type]


def test_limits_are_values() -> None:
    assert Limits(memory_bytes=1 << 20) == Limits(memory_bytes=1 << 20)
    assert hash(Limits(pids_max=3)) == hash(Limits(pids_max=3))
    with pytest.raises(AttributeError):
        Limits().pids_max = 3  # type: ignore[misc]


@pytest.mark.parametrize(("shares", "weight"), [
    (2, 1),          # the minimum maps to the minimum
    (1024, 100),     # the v1 default maps to the v2 default
    (262144, 10000),  # the maximum maps to the maximum
    (512, 59), (2048, 174), (100_000, 4340),
])
def test_cpu_shares_map_to_weights_with_the_runc_and_crun_formula(shares: int,
                                                                  weight: int) -> None:
    assert cpu_shares_to_weight(shares) == weight


def test_more_shares_never_mean_less_weight() -> None:
    weights = [cpu_shares_to_weight(shares) for shares in range(2, 262145, 97)]
    assert weights == sorted(weights)
    assert all(1 <= weight <= 10000 for weight in weights)
