"""Evaluate the CEL rules of our CRDs (`x-kubernetes-validations`) in Python.

The API server evaluates these rules for every write; the models evaluate the very same rule
text through cel-python, so a rule is written once and both sides agree. Only the CEL subset
that cel-python and Kubernetes share is used in our rules (no Kubernetes CEL libraries such as
`quantity()`); `tests/api` proves each rule both ways.

Pure computation: no I/O. Compiled programs are cached per rule text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

_ENV = celpy.Environment()


@lru_cache(maxsize=512)
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def holds(rule: str, value: Any) -> bool:
    """True when `rule` holds for `value` (bound to `self`, as in Kubernetes).

    A rule that fails to evaluate (a missing field reached without `has()`, a type error)
    counts as not holding: the API server rejects such objects too.
    """
    try:
        result = _program(rule).evaluate({"self": json_to_cel(value)})
    except CELEvalError:
        return False
    if isinstance(result, CELEvalError):
        return False
    return bool(result)
