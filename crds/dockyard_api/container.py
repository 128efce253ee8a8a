"""The `Container` kind: one process tree from an image, run the Docker way on some node.

Spec follows `docker run` (image, command, env, user, limits, volumes, ports, restart
policy) written with Kubernetes field names; status reports what the node observed.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from dockyard_api.fields import (
    AbsolutePath,
    Capability,
    Digest,
    DnsLabel,
    DnsSubdomain,
    EnvName,
    ImageReference,
    Labels,
    Port,
    SubPath,
    User,
)
from dockyard_api.meta import (
    AGE,
    ApiModel,
    CelRule,
    KindInfo,
    PrinterColumn,
    Resource,
    StatusBase,
    unique,
)
from dockyard_api.quantity import CpuQuantity, MemoryQuantity

# Linux caps one argument at MAX_ARG_STRLEN (128 KiB); the lists are bounded so that the API
# server can bound the cost of CEL rules over them.
Arg = Annotated[str, StringConstraints(max_length=131072)]
ArgList = Annotated[list[Arg], Field(max_length=1024)]
PID_MAX_LIMIT = 4194304  # the kernel's ceiling for pid_max on 64-bit


class Resources(ApiModel):
    """Resource limits: enforced by cgroups on the node and used to place containers."""

    cpu: CpuQuantity | None = None
    """CPUs the container may use, to the millicore: `2`, `"0.5"`, `250m` (docker --cpus)."""
    memory: MemoryQuantity | None = None
    """Memory limit in bytes: `64Mi`, `1Gi` (docker -m). Exceeding it OOM-kills the container."""
    pids: Annotated[StrictInt, Field(ge=1, le=PID_MAX_LIMIT)] | None = None
    """The most processes and threads at once (docker --pids-limit)."""


class EnvVar(ApiModel):
    """One environment variable."""

    name: EnvName
    """The variable's name: `DATABASE_URL`."""
    value: Arg = ""
    """The variable's value (may be empty)."""


class Sysctl(ApiModel):
    """One namespaced kernel setting of the container (docker run --sysctl NAME=VALUE). The
    node accepts runc's namespaced ones only (IPC, `fs.mqueue.*`, `kernel.domainname`,
    `net.*` with a network of the container's own) and refuses the rest when it creates
    the container."""

    name: Annotated[str, StringConstraints(
        max_length=253,
        pattern=r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?([./][a-z0-9]([-_a-z0-9]*[a-z0-9])?)*$")]
    """Dots or slashes: `net.ipv4.ip_unprivileged_port_start`, `kernel/shmmax`."""
    value: Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^=+\n]*$")]
    """The value as written to /proc/sys; never `=` or `+` (CVE-2022-0811 smuggled a
    second setting through them)."""


class VolumeMount(ApiModel):
    """A `Volume` of the same namespace, bind-mounted into the container."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.mountPath != '/'", "a volume cannot be mounted over the root; "
                "pick a directory such as /data", "mountPath"),
    )

    name: DnsLabel
    """The name of the `Volume` object to mount."""
    mount_path: AbsolutePath
    """Where the volume appears inside the container: `/var/lib/data`."""
    read_only: StrictBool = False
    """Mount read-only: the container can read but not change the data."""
    sub_path: SubPath | None = None
    """Mount only this directory of the volume (relative to its root)."""


class Protocol(StrEnum):
    """A transport protocol for a published port."""

    TCP = "TCP"
    UDP = "UDP"


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address: write 127.0.0.1 or ::1") from None
    return value


class PublishedPort(ApiModel):
    """A container port reachable from the host (docker -p HOST:CONTAINER)."""

    container_port: Port
    """The port the process listens on inside the container."""
    host_port: Port | None = None
    """The port on the node; omitted means a free port chosen by the node (docker -p PORT)."""
    host_ip: Annotated[str, StringConstraints(max_length=45), AfterValidator(_check_ip)] = \
        Field(default="0.0.0.0", alias="hostIP")  # noqa: S104 -- Docker's default
    """The node address to listen on: `0.0.0.0` for all, `127.0.0.1` for the node only."""
    protocol: Protocol = Protocol.TCP
    """`TCP` or `UDP`."""


class NetworkMode(StrEnum):
    """How the container is networked (docker --network)."""

    NONE = "None"
    HOST = "Host"
    BRIDGE = "Bridge"


class Network(ApiModel):
    """The container's network: its own namespace on a bridge (default), the host's, or none."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.mode == 'Bridge' || !has(self.ports) || self.ports.size() == 0",
                "ports can be published only in Bridge mode: remove ports or set mode: Bridge",
                "ports"),
    )

    mode: NetworkMode = NetworkMode.BRIDGE
    """`Bridge` (own network namespace, NAT), `Host` (the node's network) or `None`
    (loopback only)."""
    ports: Annotated[
        list[PublishedPort],
        Field(max_length=256, json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["containerPort", "protocol"]}),
    ] = Field(default_factory=list)
    """Container ports published on the node."""

    @model_validator(mode="after")
    def _ports_unique(self) -> Network:
        unique(self.ports, "container_port", "protocol", what="ports")
        unique([p for p in self.ports if p.host_port is not None], "host_ip", "host_port",
               "protocol", what="ports")
        return self


class Capabilities(ApiModel):
    """Linux capabilities to add to or drop from Docker's default set."""

    add: Annotated[list[Capability], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "set"})] = Field(default_factory=list)
    """Capabilities to grant on top of the default set (`NET_ADMIN`, or `ALL`)."""
    drop: Annotated[list[Capability], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "set"})] = Field(default_factory=list)
    """Capabilities to remove from the default set (`NET_RAW`, or `ALL`)."""


class SeccompProfileType(StrEnum):
    """Which seccomp filter the container's processes run under (the Kubernetes names)."""

    RUNTIME_DEFAULT = "RuntimeDefault"
    UNCONFINED = "Unconfined"
    LOCALHOST = "Localhost"


class SeccompProfile(ApiModel):
    """The seccomp profile: the runtime's default (Docker's semantics), none, or a file."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("self.type == 'Localhost' ? has(self.localhostProfile) : "
                "!has(self.localhostProfile)",
                "localhostProfile is required with type Localhost, and allowed only with it",
                "localhostProfile", "FieldValueRequired"),
    )

    type: SeccompProfileType = SeccompProfileType.RUNTIME_DEFAULT
    """`RuntimeDefault` (an allowlist as Docker's: refused syscalls fail with EPERM, mount
    and namespaces need CAP_SYS_ADMIN), `Unconfined` (no filter), or `Localhost`."""
    localhost_profile: AbsolutePath | None = None
    """With `Localhost`: the path on the node of a profile in Docker's JSON format; the
    node reads it when it creates the container."""


class RestartPolicy(StrEnum):
    """When a container that exited is started again (docker --restart)."""

    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    ALWAYS = "Always"


class ContainerSpec(ApiModel):
    """What to run and how: the declarative form of `docker run`."""

    cel_rules: ClassVar[tuple[CelRule, ...]] = (
        CelRule("has(self.image) != has(self.imageRef)",
                "set exactly one of image (a registry reference such as nginx:1.27) or "
                "imageRef (the name of an Image in this namespace)", "image",
                "FieldValueRequired"),
        CelRule("!(has(self.nodeName) && has(self.nodeSelector))",
                "nodeName and nodeSelector are mutually exclusive: pin the node with "
                "nodeName, or let the scheduler choose among nodeSelector's matches",
                "nodeSelector", "FieldValueForbidden"),
    )

    image: ImageReference | None = None
    """A registry reference to run: `nginx:1.27`, `registry.local:5000/app@sha256:…`. Its tag is
    resolved to a digest once, so every node runs the same bytes."""
    image_ref: DnsSubdomain | None = None
    """Instead of `image`: the name of an `Image` object in this namespace (pinned by it)."""
    command: ArgList | None = None
    """Replaces the image's ENTRYPOINT (docker --entrypoint, with arguments)."""
    args: ArgList | None = None
    """Replaces the image's CMD: the arguments passed to the entrypoint."""
    env: Annotated[list[EnvVar], Field(max_length=1024, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] = \
        Field(default_factory=list)
    """Environment variables, added to (and overriding) the image's."""
    working_dir: AbsolutePath | None = None
    """The process's working directory (default: the image's WORKDIR, else `/`)."""
    user: User | None = None
    """Run as this user: `1000`, `1000:1000`, `nobody` (default: the image's USER)."""
    hostname: DnsLabel | None = None
    """The container's hostname (default: the container's short id, as in Docker)."""
    resources: Resources = Field(default_factory=Resources)
    """cpu, memory and pids limits."""
    volume_mounts: Annotated[list[VolumeMount], Field(max_length=128, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["mountPath"]})] = \
        Field(default_factory=list)
    """Volumes to bind-mount into the container."""
    network: Network = Field(default_factory=Network)
    """Network mode and published ports."""
    restart_policy: RestartPolicy = RestartPolicy.NEVER
    """`Never` (Docker's default), `OnFailure` (non-zero exit) or `Always`. Only `Always` and
    `OnFailure` containers are moved to another node when theirs is lost."""
    node_name: DnsSubdomain | None = None
    """Run on exactly this node (skips the scheduler)."""
    node_selector: Annotated[Labels, Field(max_length=64)] | None = None
    """Run on a node whose labels include all of these."""
    read_only_rootfs: StrictBool = False
    """Mount the image's filesystem read-only (docker --read-only)."""
    capabilities: Capabilities = Field(default_factory=Capabilities)
    """Capabilities to add to or drop from Docker's default set."""
    no_new_privileges: StrictBool = False
    """Processes cannot gain privileges through execve: setuid and setgid bits and file
    capabilities are ignored (docker --security-opt no-new-privileges)."""
    seccomp_profile: SeccompProfile = Field(default_factory=SeccompProfile)
    """The seccomp filter of the container's processes (docker --security-opt seccomp=…)."""
    host_users: StrictBool = True
    """False: run in a user namespace of the container's own, its root a block of the
    node's subordinate ids, so that root inside is no one on the node (Kubernetes'
    `hostUsers`, docker run --userns auto). The node needs ids for user `dockyard` in
    /etc/subuid and /etc/subgid."""
    sysctls: Annotated[list[Sysctl], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] = \
        Field(default_factory=list)
    """Namespaced kernel settings, written in this order at each start."""

    @model_validator(mode="after")
    def _lists_unique(self) -> ContainerSpec:
        unique(self.env, "name", what="env")
        unique(self.volume_mounts, "mount_path", what="volumeMounts")
        unique(self.sysctls, "name", what="sysctls")
        return self


class ContainerPhase(StrEnum):
    """A container's lifecycle, in one word."""

    PENDING = "Pending"
    CREATED = "Created"
    RUNNING = "Running"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


class ContainerStatus(StatusBase):
    """What the node observed of the container."""

    phase: ContainerPhase = ContainerPhase.PENDING
    """`Pending` (not yet on a node), `Created`, `Running`, `Paused`, `Succeeded` (exit 0),
    `Failed` (non-zero exit or killed) or `Unknown` (its node is lost)."""
    node: DnsSubdomain | None = None
    """The node the container is bound to."""
    image_digest: Digest | None = None
    """The digest of the image the container runs."""
    container_id: Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{64}$")] | None = Field(
        default=None, alias="containerID")
    """The runtime's id of the current container instance."""
    pid: Annotated[StrictInt, Field(ge=1)] | None = None
    """The host pid of the container's first process while it runs."""
    started_at: datetime | None = None
    """When the current instance started."""
    finished_at: datetime | None = None
    """When the last instance exited."""
    exit_code: Annotated[StrictInt, Field(ge=0, le=255)] | None = None
    """The last exit code (128+N when killed by signal N)."""
    oom_killed: StrictBool = False
    """Whether the last instance was killed for exceeding its memory limit."""
    restart_count: Annotated[StrictInt, Field(ge=0)] = 0
    """How many times the container was restarted by its restart policy."""
    message: Annotated[str, StringConstraints(max_length=4096)] = ""
    """The latest human-readable explanation of the phase."""


class Container(Resource):
    """A container to run somewhere in the cluster, the Docker way."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="Container", plural="containers", short_names=("ctr",), namespaced=True,
        name_format="label",
        columns=(
            PrinterColumn("Phase", ".status.phase", description="Lifecycle phase"),
            PrinterColumn("Node", ".status.node", description="Node the container runs on"),
            PrinterColumn("Image", ".spec.image", description="Registry reference"),
            PrinterColumn("Image-Ref", ".spec.imageRef", description="Image object", priority=1),
            PrinterColumn("Restarts", ".status.restartCount", "integer", "Restart count"),
            PrinterColumn("Exit", ".status.exitCode", "integer", "Last exit code", priority=1),
            PrinterColumn("Digest", ".status.imageDigest", description="Image digest run",
                          priority=1),
            AGE,
        ),
    )

    kind: Literal["Container"] = "Container"
    """Always `Container`."""
    spec: ContainerSpec
    """What to run and how."""
    status: ContainerStatus | None = None
    """What the node observed (written by Dockyard)."""
