"""Kubernetes label selectors, as the API server reads `?labelSelector=`.

Equality-based (`app=web`, `app==web`, `tier!=db`) and set-based (`env in (dev,ci)`,
`env notin (prod)`, `gpu`, `!gpu`) requirements, separated by commas, all of which must
hold. Pure computation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Requirement = Callable[[Mapping[str, str]], bool]

_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


class SelectorError(ValueError):
    """A selector the API server would refuse (400)."""


def parse(selector: str) -> Requirement:
    """The test that `selector` puts on an object's labels."""
    requirements = [_requirement(part) for part in _split(selector) if part.strip()]
    return lambda labels: all(requirement(labels) for requirement in requirements)


def _split(selector: str) -> list[str]:
    """Split at the commas that are not inside a set's parentheses."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(selector[start:index])
            start = index + 1
    parts.append(selector[start:])
    return parts


def _requirement(text: str) -> Requirement:
    if match := _SET.match(text):
        key, operator, values = match[1], match[2], {v.strip() for v in match[3].split(",")}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQUALITY.match(text):
        key, operator, value = match[1], match[2], match[3]
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        negated, key = match[1] == "!", match[2]
        return lambda labels: (key in labels) != negated
    raise SelectorError(f"unable to parse requirement: {text.strip()!r}")
