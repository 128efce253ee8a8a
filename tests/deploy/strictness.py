"""Whether one stage's policy is at least as strict as another's, field by field, for tests/deploy.

`loosened(before, after)` names each field in which `after` lets in something that
`before` refuses: a required rule dropped, host paths or unconfined seccomp allowed again,
a capability added to the allowed set (or the set lifted), a resource cap raised or
removed. Pure: it reads parsed models only. `RULES` lists the fields it knows; a test
checks that it is every field of StagePolicy, so a new rule cannot be skipped silently.
"""

from __future__ import annotations

from fractions import Fraction

from dockyard_api.container import Resources
from dockyard_api.quantity import Quantity
from dockyard_api.stage import StagePolicy

REQUIRED = ("require_pinned_digests", "require_resource_limits", "require_read_only_rootfs",
            "require_no_new_privileges")
"""Rules where true is the stricter."""
ALLOWED = ("allow_host_path", "allow_unconfined_seccomp")
"""Permissions where false is the stricter."""
RULES = frozenset({*REQUIRED, *ALLOWED, "allowed_capabilities", "max_resources"})


def loosened(before: StagePolicy, after: StagePolicy) -> list[str]:
    """The fields (as written in YAML) in which `after` is looser than `before`."""
    found = [name for name in REQUIRED if getattr(before, name) and not getattr(after, name)]
    found += [name for name in ALLOWED if getattr(after, name) and not getattr(before, name)]
    if before.allowed_capabilities is not None and (
            after.allowed_capabilities is None
            or not set(after.allowed_capabilities) <= set(before.allowed_capabilities)):
        found.append("allowed_capabilities")
    if _raised(before.max_resources, after.max_resources):
        found.append("max_resources")
    return [_alias(name) for name in found]


def _raised(before: Resources | None, after: Resources | None) -> bool:
    """Whether `after` lets one container ask for more of a resource than `before` does
    (a missing cap is no cap)."""
    for name in ("cpu", "memory", "pids"):
        cap = _amount(before, name)
        if cap is None:
            continue
        other = _amount(after, name)
        if other is None or other > cap:
            return True
    return False


def _amount(resources: Resources | None, name: str) -> Fraction | None:
    value = getattr(resources, name, None)
    if value is None:
        return None
    return value.value if isinstance(value, Quantity) else Fraction(value)


def _alias(name: str) -> str:
    alias = StagePolicy.model_fields[name].alias
    assert alias is not None
    return alias
