"""One-line, human summaries of Dockyard objects, for tables in the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dockyard_api import Commit, Container, DockyardNode, Image, Promotion, Resource, Stage, Volume


def summary(obj: Resource) -> str:
    """What the object asks for, in a phrase."""
    describe = _BY_KIND.get(type(obj))
    return describe(obj) if describe is not None else ""


def _image(obj: Image) -> str:
    spec = obj.spec
    if spec.reference is None:
        return f"result of commit {spec.from_commit}"
    pin = f" pinned to {spec.digest[:19]}…" if spec.digest else ""
    return f"from {spec.reference}{pin}"


def _commit(obj: Commit) -> str:
    push = f", push to {obj.spec.reference}" if obj.spec.reference else ""
    return f"snapshot container {obj.spec.container} as image {obj.spec.image}{push}"


def _promotion(obj: Promotion) -> str:
    images = ", ".join(f"{i.image}@{i.digest[:15]}…" for i in obj.spec.images)
    return f"promote {images} into stage {obj.spec.stage}"


def _node(obj: DockyardNode) -> str:
    return "cordoned" if obj.spec.unschedulable else "schedulable"


def _container(obj: Container) -> str:
    spec = obj.spec
    parts = [f"image {spec.image}" if spec.image else f"Image object {spec.image_ref}"]
    limits = [f"{name} {value}" for name, value in
              (("cpu", spec.resources.cpu), ("memory", spec.resources.memory),
               ("pids", spec.resources.pids)) if value is not None]
    if limits:
        parts.append("limits " + ", ".join(limits))
    if spec.volume_mounts:
        parts.append("mounts " + ", ".join(
            f"{m.name}:{m.mount_path}{':ro' if m.read_only else ''}" for m in spec.volume_mounts))
    if spec.network.ports:
        parts.append("ports " + ", ".join(
            f"{p.host_port or '*'}->{p.container_port}/{p.protocol}" for p in spec.network.ports))
    parts.append(f"restart {spec.restart_policy}")
    if spec.node_name:
        parts.append(f"on node {spec.node_name}")
    return "; ".join(parts)


def _volume(obj: Volume) -> str:
    spec = obj.spec
    if spec.host_path is not None:
        shared = " (shared storage)" if spec.host_path.shared else ""
        source = f"host path {spec.host_path.path}{shared}"
    elif spec.tmpfs is not None:
        source = f"tmpfs of {spec.tmpfs.size_limit}"
    elif spec.provider is not None:
        source = f"exported by container {spec.provider.container} at {spec.provider.path}"
    else:
        source = "local directory"
    return f"{source}; migration {spec.migration}"


def _stage(obj: Stage) -> str:
    spec = obj.spec
    rules = [name for name, on in (
        ("pinned digests", spec.policy.require_pinned_digests),
        ("limits", spec.policy.require_resource_limits),
        ("read-only rootfs", spec.policy.require_read_only_rootfs),
        ("no-new-privileges", spec.policy.require_no_new_privileges),
        ("no hostPath", not spec.policy.allow_host_path)) if on]
    gates = [name for name, on in (("verification", spec.gates.verification),
                                   ("soak", spec.gates.soak_time),
                                   ("approval", spec.gates.approval)) if on is not None]
    return (f"after {spec.upstream or '(first stage)'}; namespaces "
            f"{', '.join(spec.namespaces) or '-'}; requires {', '.join(rules) or 'nothing'}; "
            f"gates {', '.join(gates) or 'none'}")


_BY_KIND: dict[type[Resource], Callable[[Any], str]] = {
    Container: _container, Image: _image, Volume: _volume, Commit: _commit, Stage: _stage,
    Promotion: _promotion, DockyardNode: _node,
}
