"""Stage policy: which stage owns a namespace, and what a Dockyard object breaks of its policy.

The admission webhook refuses a new or changed object with these violations; the operator
marks objects that were admitted before a policy tightened with a `PolicyViolation`
condition. Both ask the same two functions here, so the verdicts cannot differ.

Pure computation on parsed models: no I/O. Every rule of a policy can be checked now;
`unenforced` stays for rules added before the API can express them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dockyard_api.container import Container, Resources, SeccompProfileType
from dockyard_api.image import Image
from dockyard_api.quantity import cpu_millis, memory_bytes
from dockyard_api.stage import Stage, StagePolicy
from dockyard_api.volume import Volume

Governed = Container | Image | Volume
"""The kinds a stage's policy applies to."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: the field (a path as `kubectl explain` writes it) and the fix."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def stage_of(namespace: str | None, stages: Iterable[Stage]) -> Stage | None:
    """The stage that owns `namespace`; when two claim it (which the Stage controller marks
    `Invalid`), the first by name, so the answer never depends on the order of a watch."""
    owners = sorted((s for s in stages if namespace in s.spec.namespaces),
                    key=lambda s: s.metadata.name or "")
    return owners[0] if owners else None


def violations(obj: Governed, policy: StagePolicy) -> list[Violation]:
    """Every rule of `policy` that `obj` breaks, in field order; empty when it complies."""
    if isinstance(obj, Container):
        return _container(obj, policy)
    if isinstance(obj, Image):
        return _image(obj, policy)
    return _volume(obj, policy)


def unenforced(policy: StagePolicy) -> list[str]:
    """The policy's rules that no object can be checked against yet, by field name (none
    since Containers have `noNewPrivileges`)."""
    del policy
    return []


def _container(container: Container, policy: StagePolicy) -> list[Violation]:
    spec = container.spec
    found: list[Violation] = []
    if policy.require_pinned_digests and spec.image is not None and "@" not in spec.image:
        found.append(Violation("spec.image", f"{spec.image!r} is a tag: the stage runs pinned "
                               "digests only; write it as NAME@sha256:… or use imageRef "
                               "with a pinned Image"))
    if policy.require_read_only_rootfs and not spec.read_only_rootfs:
        found.append(Violation("spec.readOnlyRootfs", "the stage requires a read-only root "
                               "filesystem: set readOnlyRootfs: true (write to volumes)"))
    if policy.allowed_capabilities is not None:
        allowed = set(policy.allowed_capabilities)
        extra = [cap for cap in spec.capabilities.add if cap not in allowed]
        if extra:
            found.append(Violation("spec.capabilities.add", f"{', '.join(extra)} not allowed "
                                   f"in the stage (allowed: "
                                   f"{', '.join(sorted(allowed)) or 'none'})"))
    if policy.require_no_new_privileges and not spec.no_new_privileges:
        found.append(Violation("spec.noNewPrivileges", "the stage requires that processes "
                               "cannot gain privileges through setuid binaries: set "
                               "noNewPrivileges: true"))
    if not policy.allow_unconfined_seccomp and \
            spec.seccomp_profile.type is SeccompProfileType.UNCONFINED:
        # Pod Security's "restricted" level draws the line here too: a Localhost profile
        # is the node administrator's filter, Unconfined is none at all.
        found.append(Violation("spec.seccompProfile.type", "Unconfined runs the container "
                               "without a seccomp filter, which the stage forbids: set "
                               "seccompProfile.type: RuntimeDefault (or Localhost with a "
                               "profile)"))
    found += _limits(spec.resources, policy)
    return found


def _limits(resources: Resources, policy: StagePolicy) -> list[Violation]:
    found: list[Violation] = []
    if policy.require_resource_limits:
        for name in ("cpu", "memory"):
            if getattr(resources, name) is None:
                found.append(Violation(f"spec.resources.{name}", f"the stage requires a "
                                       f"{name} limit: set resources.{name}"))
    top = policy.max_resources
    if top is None:
        return found
    checks = (("cpu", top.cpu, resources.cpu, cpu_millis),
              ("memory", top.memory, resources.memory, memory_bytes))
    for name, limit, asked, size in checks:
        if limit is None:
            continue
        if asked is None:
            if not policy.require_resource_limits:  # said once, above, when both apply
                found.append(Violation(f"spec.resources.{name}", f"no {name} limit: the "
                                       f"stage allows at most {limit}; set one"))
        elif size(asked) > size(limit):
            found.append(Violation(f"spec.resources.{name}", f"{asked} is above the stage's "
                                   f"maximum of {limit}"))
    if top.pids is not None and (resources.pids is None or resources.pids > top.pids):
        asked_pids = "no pids limit" if resources.pids is None else f"{resources.pids} pids"
        found.append(Violation("spec.resources.pids", f"{asked_pids}: the stage allows at "
                               f"most {top.pids}"))
    return found


def _image(image: Image, policy: StagePolicy) -> list[Violation]:
    spec = image.spec
    if policy.require_pinned_digests and spec.reference is not None and \
            spec.digest is None and "@" not in spec.reference:
        return [Violation("spec.digest", f"{spec.reference!r} is a tag: the stage runs pinned "
                          "digests only; set digest (a Promotion does) or write the "
                          "reference with @sha256:…")]
    return []


def _volume(volume: Volume, policy: StagePolicy) -> list[Violation]:
    if not policy.allow_host_path and volume.spec.host_path is not None:
        return [Violation("spec.hostPath", "the stage allows no hostPath volumes: use a "
                          "local or provider volume")]
    return []
