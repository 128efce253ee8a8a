"""A `Container` manifest as the node runtime's input: the body of POST /containers/create.

Kubernetes semantics, Docker mechanics: `spec.command` replaces the image's ENTRYPOINT and
`spec.args` its CMD (an empty list counts as unset, as in the kubelet); `imageRef` runs the
named Image's reference, pinned to its digest when it has one; a Volume `v` of namespace
`ns` is the node volume `ns.v` of the same kind, which `up` makes before the container.
`nodeName` and `nodeSelector` do not apply (one machine is the only node), nor does an
Image's `pullPolicy` (only local images run).

Each translated config carries three labels that make `up` idempotent: who manages it
(`dockyard.dev/managed-by`), which object it is (`dockyard.dev/object`) and a hash of
everything else (`dockyard.dev/spec-hash`), so a changed manifest is seen without reading
back and re-interpreting the stored config.

Pure computation: no I/O, no import of the node shim. The field names are the JSON form of
the shim's `ContainerConfig`, the daemon's wire format.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NewType

from dockyard_api import Container
from dockyard_api.container import (
    ContainerSpec,
    NetworkMode,
    RestartPolicy,
    SeccompProfileType,
)
from dockyard_api.converge.manifests import (
    Manifests,
    ManifestSetError,
    ObjectKey,
    Placed,
    SourcedProblem,
)
from dockyard_api.quantity import cpu_millis, memory_bytes
from dockyard_api.registries import pinned_reference
from dockyard_api.volume import VolumeSpec

NodeName = NewType("NodeName", str)
"""A container's name on the node: `<namespace>.<name>`."""

MANAGED_BY = "dockyard.dev/managed-by"
MANAGER = "dockyard-up"
AGENT = "dockyard-agent"
"""The manager of the containers a node agent runs for the cluster (`up` leaves them be)."""
OBJECT = "dockyard.dev/object"
SPEC_HASH = "dockyard.dev/spec-hash"

# The runtime's own rules, repeated so that a bad set is refused before anything changes:
# Docker's container name rule, and Docker's smallest memory limit (the runtime needs room).
_NODE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_MIN_MEMORY = 6 * 1024 * 1024

NETWORK_MODES = {NetworkMode.NONE: "none", NetworkMode.HOST: "host",
                 NetworkMode.BRIDGE: "bridge"}
RESTART_POLICIES = {RestartPolicy.NEVER: "no", RestartPolicy.ON_FAILURE: "on-failure",
                    RestartPolicy.ALWAYS: "always"}

_SECCOMP_MODES = {SeccompProfileType.RUNTIME_DEFAULT: "default",
                  SeccompProfileType.UNCONFINED: "unconfined",
                  SeccompProfileType.LOCALHOST: "localhost"}

_Report = Callable[[str, str], None]
"""Records one problem at a field path of the Container being translated."""


@dataclass(frozen=True)
class DesiredContainer:
    """What should run on the node for one Container object."""

    key: ObjectKey
    name: NodeName
    source: str
    """The document the Container came from, for messages."""
    config: Mapping[str, Any]
    """The JSON body of POST /containers/create, labels included."""
    spec_hash: str
    volumes: tuple[Mapping[str, Any], ...] = ()
    """The node volumes to make before the container, as the node's volume store takes
    them: `name` (`namespace.volume`), `kind` and that kind's settings."""

    @property
    def restart(self) -> str:
        """The runtime's restart policy: `no`, `on-failure` or `always`."""
        return str(self.config["restart"])


def node_name(namespace: str, name: str) -> NodeName:
    """`default.web`: unique on the node, since neither part may contain a dot."""
    return NodeName(f"{namespace}.{name}")


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(config: Mapping[str, Any]) -> str:
    """The sha256 of the canonical JSON of a config, its labels left out."""
    body = {k: v for k, v in config.items() if k != "labels"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def desire(manifests: Manifests) -> tuple[DesiredContainer, ...]:
    """Translate every Container of the set; raise ManifestSetError with all the problems."""
    desired: list[DesiredContainer] = []
    problems: list[SourcedProblem] = []
    for placed in manifests.containers:
        try:
            desired.append(translate(placed, manifests))
        except ManifestSetError as e:
            problems += e.problems
    if problems:
        raise ManifestSetError(problems)
    return tuple(desired)


def translate(placed: Placed[Container], manifests: Manifests, *, manager: str = MANAGER,
              digest: str | None = None) -> DesiredContainer:
    """The desired container of one Container object (see `desire`), labelled as made by
    `manager`; with `digest` (the one the cluster pinned it to), its image is that digest
    of its reference."""
    problems: list[SourcedProblem] = []

    def problem(path: str, message: str) -> None:
        problems.append(SourcedProblem(placed.source, path, message))

    spec = placed.resource.spec
    name = node_name(placed.namespace, placed.name)
    if not _NODE_NAME.fullmatch(name):
        problem("metadata.name", f"{name!r} is not a valid container name on the node")
    memory = memory_bytes(spec.resources.memory) if spec.resources.memory else None
    if memory is not None and memory < _MIN_MEMORY:
        problem("spec.resources.memory", f"{spec.resources.memory} is below the runtime's "
                "minimum of 6Mi: the runtime itself needs that much room")
    image = _image(placed, manifests, problem)
    if digest is not None and image:
        image = pinned_reference(image, digest)
    mounts, volumes = _volumes(placed, manifests, problem)
    if problems:
        raise ManifestSetError(problems)
    config: dict[str, Any] = {
        "image": image,
        "name": name,
        "entrypoint": list(spec.command) if spec.command else None,
        "command": list(spec.args or ()),
        "env": [f"{var.name}={var.value}" for var in spec.env],
        "working_dir": spec.working_dir or "",
        "user": spec.user or "",
        "hostname": spec.hostname or "",
        "memory_bytes": memory,
        "cpu_millis": cpu_millis(spec.resources.cpu) if spec.resources.cpu else None,
        "pids_limit": spec.resources.pids,
        "binds": [],
        "volumes": mounts,
        "tmpfs": [],
        "network": NETWORK_MODES[spec.network.mode],
        "ports": [{"container_port": port.container_port, "host_port": port.host_port or 0,
                   "host_ip": port.host_ip, "protocol": port.protocol.value.lower()}
                  for port in spec.network.ports],
        "read_only": spec.read_only_rootfs,
        "restart": RESTART_POLICIES[spec.restart_policy],
        "restart_max_retries": 0,
        "auto_remove": False,
        "cap_add": [cap.value for cap in spec.capabilities.add],
        "cap_drop": [cap.value for cap in spec.capabilities.drop],
        **_security(spec),
    }
    hashed = spec_hash(config)
    config["labels"] = {MANAGED_BY: manager, OBJECT: placed.key, SPEC_HASH: hashed}
    return DesiredContainer(placed.key, name, placed.source, config, hashed, volumes)


def _security(spec: ContainerSpec) -> dict[str, Any]:
    """no-new-privileges, seccomp, the user namespace and sysctls. A `Localhost` profile
    is named by its path: the node reads the file when it creates the container (and keeps
    a copy)."""
    profile = spec.seccomp_profile
    localhost = profile.type is SeccompProfileType.LOCALHOST
    return {
        "no_new_privileges": spec.no_new_privileges,
        "seccomp": _SECCOMP_MODES[profile.type],
        "seccomp_profile": "",
        "seccomp_profile_path": (profile.localhost_profile or "") if localhost else "",
        # Only when set, as the node's config leaves them out: the spec hash of every
        # container without them stays what it was before these fields existed.
        **({"userns": "auto"} if not spec.host_users else {}),
        **({"sysctls": {s.name: s.value for s in spec.sysctls}} if spec.sysctls else {}),
    }


def _image(placed: Placed[Container], manifests: Manifests, problem: _Report) -> str:
    spec = placed.resource.spec
    if spec.image is not None:
        return str(spec.image)
    key = ObjectKey(f"{placed.namespace}/{spec.image_ref}")
    found = manifests.images.get(key)
    if found is None:
        problem("spec.imageRef", f"no Image {key} among the manifests given: add its "
                "manifest to the files passed with -f, or name a reference in spec.image")
        return ""
    image = found.resource.spec
    if image.reference is None:
        problem("spec.imageRef", f"Image {key} is the result of Commit {image.from_commit}: "
                "dockyard up cannot run committed images yet; give the Image a reference")
        return ""
    if image.digest and "@" not in image.reference:
        return f"{image.reference}@{image.digest}"
    return str(image.reference)


def _volumes(placed: Placed[Container], manifests: Manifests, problem: _Report
             ) -> tuple[list[dict[str, Any]], tuple[dict[str, Any], ...]]:
    """The container's volume mounts, and the node volumes they need. A Volume `v` of
    namespace `ns` is the node volume `ns.v`, of the same kind."""
    mounts: list[dict[str, Any]] = []
    volumes: dict[str, dict[str, Any]] = {}
    for index, mount in enumerate(placed.resource.spec.volume_mounts):
        key = ObjectKey(f"{placed.namespace}/{mount.name}")
        found = manifests.volumes.get(key)
        if found is None:
            problem(f"spec.volumeMounts[{index}].name", f"no Volume {key} among the "
                    "manifests given: add its manifest to the files passed with -f")
            continue
        name = node_name(placed.namespace, mount.name)
        volumes[name] = {"name": name, **_volume_settings(found.resource.spec,
                                                          placed.namespace)}
        mounts.append({"name": name, "target": mount.mount_path, "readonly": mount.read_only,
                       "subpath": mount.sub_path or ""})
    return mounts, tuple(volumes.values())


def _volume_settings(volume: VolumeSpec, namespace: str) -> dict[str, Any]:
    if volume.host_path is not None:
        return {"kind": "hostPath", "host_path": volume.host_path.path,
                "shared": volume.host_path.shared}
    if volume.tmpfs is not None:
        return {"kind": "tmpfs", "size_bytes": memory_bytes(volume.tmpfs.size_limit),
                "mode": volume.tmpfs.mode}
    if volume.provider is not None:
        return {"kind": "provider", "provider": node_name(namespace, volume.provider.container),
                "provider_path": volume.provider.path}
    return {"kind": "local"}
