"""Kubernetes resource quantities (`512Mi`, `0.5`, `250m`, `1e3`) parsed exactly.

Values are kept as `Fraction`s, never floats, so `0.1` cpu is exactly 100 millicores and
`1.5Gi` is exactly 1610612736 bytes. The grammar is the one of Kubernetes'
`resource.Quantity` with two deliberate restrictions: no sign (a negative limit is never
meaningful here) and integer exponents only (Kubernetes rejects fractional ones at parse
time anyway). Values above 2**63-1, the int64 ceiling of the API server, are refused.

Pure data: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_EXP = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
                "E": 18}
PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,2})?$"
"""The quantity grammar as a regular expression, shared with the CRD schema."""
_RE = re.compile(PATTERN)
_MAX_TEXT = 64
_INT64_MAX = 2**63 - 1
_HINT = "write a number with an optional suffix, such as 512Mi, 1G, 0.5 or 250m"


@dataclass(frozen=True, slots=True)
class Quantity:
    """A parsed quantity: the text as written and its exact value."""

    text: str
    value: Fraction

    @classmethod
    def parse(cls, raw: object) -> Quantity:
        """Parse a YAML/JSON value: an integer or a quantity string. Floats are refused.

        A float is refused because the CRD schema (int-or-string) refuses it too, and because
        its binary value is not what the user wrote: quote it, `"0.5"`.
        """
        if isinstance(raw, bool):
            raise ValueError(f"expected a quantity, got a boolean; {_HINT}")
        if isinstance(raw, int):
            if raw < 0 or raw > _INT64_MAX:
                raise ValueError(f"quantity {raw} is out of range 0..{_INT64_MAX}")
            return cls(str(raw), Fraction(raw))
        if isinstance(raw, float):
            raise ValueError(f"quantity {raw!r} must be a string or an integer: write '{raw}'")
        if not isinstance(raw, str):
            raise ValueError(f"expected a quantity string, got {type(raw).__name__}; {_HINT}")
        text = raw.strip()
        if len(text) > _MAX_TEXT:
            raise ValueError(f"quantity is longer than {_MAX_TEXT} characters")
        match = _RE.fullmatch(text)
        if match is None:
            raise ValueError(f"invalid quantity {raw!r}: {_HINT}")
        number, _, suffix = match.groups()
        value = Fraction(number)
        if suffix is None:
            suffix = ""
        if suffix in _BINARY:
            value *= _BINARY[suffix]
        else:
            exponent = int(suffix[1:]) if suffix[:1] in ("e", "E") and len(suffix) > 1 \
                else _DECIMAL_EXP[suffix]
            value *= Fraction(10) ** exponent
        if value > _INT64_MAX:
            raise ValueError(f"quantity {raw!r} is larger than {_INT64_MAX}")
        return cls(text, value)

    def __str__(self) -> str:
        return self.text


def _memory(raw: object) -> Quantity:
    quantity = raw if isinstance(raw, Quantity) else Quantity.parse(raw)
    if quantity.value.denominator != 1:
        raise ValueError(
            f"memory {quantity.text!r} is not a whole number of bytes "
            f"({float(quantity.value):g}); use a suffix such as Ki, Mi or Gi"
        )
    if quantity.value == 0:
        raise ValueError("memory must be greater than zero")
    return quantity


def _cpu(raw: object) -> Quantity:
    quantity = raw if isinstance(raw, Quantity) else Quantity.parse(raw)
    if (quantity.value * 1000).denominator != 1:
        raise ValueError(
            f"cpu {quantity.text!r} is finer than 1m; the smallest step is 0.001 cpu (1m)"
        )
    if quantity.value == 0:
        raise ValueError("cpu must be greater than zero")
    return quantity


def memory_bytes(quantity: Quantity) -> int:
    """The byte count of a validated memory quantity."""
    return int(quantity.value)


def cpu_millis(quantity: Quantity) -> int:
    """The millicores of a validated cpu quantity (`0.5` -> 500)."""
    return int(quantity.value * 1000)


_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "pattern": PATTERN,
}

MemoryQuantity = Annotated[
    Quantity,
    PlainValidator(_memory),
    PlainSerializer(lambda q: q.text, return_type=str),
    WithJsonSchema(_QUANTITY_SCHEMA),
]
"""Memory in bytes, a whole number: `64Mi`, `1G`, `1073741824`."""

CpuQuantity = Annotated[
    Quantity,
    PlainValidator(_cpu),
    PlainSerializer(lambda q: q.text, return_type=str),
    WithJsonSchema(_QUANTITY_SCHEMA),
]
"""CPUs, to the millicore: `2`, `"0.5"`, `250m`."""
