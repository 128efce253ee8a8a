"""Durations written the Kubernetes way (`30s`, `5m`, `1h30m`, `500ms`), parsed exactly.

The grammar is Go's `time.ParseDuration` without signs, as Kubernetes' `metav1.Duration`
accepts it. Pure data: no I/O.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
_RE = re.compile(PATTERN)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_SECONDS = {"ns": Decimal("1e-9"), "us": Decimal("1e-6"), "ms": Decimal("1e-3"), "s": Decimal(1),
            "m": Decimal(60), "h": Decimal(3600)}
_MAX = timedelta(days=366)


def parse_duration(raw: object) -> timedelta:
    """Parse `1h30m` into a timedelta; refuse anything else with a hint."""
    if isinstance(raw, timedelta):
        return raw
    if not isinstance(raw, str) or len(raw) > 64 or _RE.fullmatch(raw) is None:
        raise ValueError(f"invalid duration {raw!r}: write it like 30s, 5m, 1h30m or 500ms")
    seconds = sum(Decimal(n) * _SECONDS[unit] for n, unit in _PART.findall(raw))
    value = timedelta(seconds=float(seconds))
    if value > _MAX:
        raise ValueError(f"duration {raw!r} is longer than 366 days")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest `XhYmZs` text for a duration (sub-second parts as `ms`)."""
    millis = round(value.total_seconds() * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    seconds, millis = divmod(millis, 1000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{seconds}s" if seconds else "", f"{millis}ms" if millis else ""]
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    PlainValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": PATTERN, "maxLength": 64}),
]
"""A length of time such as `30s`, `10m` or `1h30m`."""
