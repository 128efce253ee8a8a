"""Constrained value types shared by the API models: names, paths, references, ports…

Each type validates in Python with a message that says what is wrong and how to fix it, and
exports the same rule (pattern, length, range) into the generated CRD schema, so the API
server and the models agree. Patterns avoid look-around: they must mean the same in Python,
in ECMA-262 (OpenAPI) and in RE2 (the API server).

Pure data: no I/O.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictInt, StringConstraints, WithJsonSchema


def _pattern_type(pattern: str, *, max_length: int, what: str, hint: str) -> Any:
    """A `str` that must fully match `pattern`, with a friendly error and a matching schema."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if regex.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not {what}: {hint}")
        return value

    schema = {"type": "string", "pattern": pattern, "maxLength": max_length, "minLength": 1}
    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_length),
        AfterValidator(check),
        WithJsonSchema(schema),
    ]


_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL_PATTERN = rf"^{_LABEL}$"
DNS_SUBDOMAIN_PATTERN = rf"^{_LABEL}(\.{_LABEL})*$"

DnsLabel = _pattern_type(
    DNS_LABEL_PATTERN, max_length=63, what="a DNS-1123 label",
    hint="use at most 63 lower-case letters, digits and '-', starting and ending with a "
         "letter or digit (for example 'web-1')",
)
"""A DNS-1123 label: `web-1`. Used where the name becomes a hostname or a path."""

DnsSubdomain = _pattern_type(
    DNS_SUBDOMAIN_PATTERN, max_length=253, what="a DNS-1123 subdomain",
    hint="use lower-case letters, digits, '-' and '.', each part starting and ending with a "
         "letter or digit (for example 'app.v2')",
)
"""A DNS-1123 subdomain: `node-1.example.internal`."""

# A path component that is not empty, `.` or `..` and has no NUL (see `_pattern_type`: no
# look-around, so the three ways not to be a dot-component are spelled out).
_COMPONENT = r"(\.\.[^/\x00]+|\.[^/.\x00][^/\x00]*|[^/.\x00][^/\x00]*)"
ABSOLUTE_PATH_PATTERN = rf"^(/|(/{_COMPONENT})+)$"
SUB_PATH_PATTERN = rf"^{_COMPONENT}(/{_COMPONENT})*$"

AbsolutePath = _pattern_type(
    ABSOLUTE_PATH_PATTERN, max_length=4096, what="a clean absolute path",
    hint="start with '/', and use no '.', '..' or empty components and no trailing '/' "
         "(for example '/var/lib/data')",
)
"""An absolute path inside a container or on a host, already clean: no `.`, `..` or `//`."""

SubPath = _pattern_type(
    SUB_PATH_PATTERN, max_length=4096, what="a clean relative path",
    hint="use a path relative to the volume root with no '.', '..' or empty components "
         "(for example 'logs/web')",
)
"""A path relative to a volume's root, without any way to climb out of it."""

EnvName = _pattern_type(
    r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256, what="an environment variable name",
    hint="use letters, digits, '_', '-' and '.', not starting with a digit, and no '='",
)
"""An environment variable name, as Kubernetes accepts them: `DATABASE_URL`."""

_USER_PART = r"([0-9]{1,10}|[a-z_][a-z0-9_-]{0,31})"
_USER_RE = re.compile(rf"^{_USER_PART}(:{_USER_PART})?$")
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


def _check_user(value: str) -> str:
    if _USER_RE.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a user: write UID, UID:GID, NAME or NAME:GROUP "
            "(for example '1000:1000' or 'nobody')"
        )
    for part in value.split(":"):
        if part.isdigit() and int(part) > _MAX_ID:
            raise ValueError(f"id {part} in {value!r} is above the largest id {_MAX_ID}")
    return value


User = Annotated[
    str,
    StringConstraints(min_length=1, max_length=65),
    AfterValidator(_check_user),
    WithJsonSchema({"type": "string", "pattern": _USER_RE.pattern, "maxLength": 65,
                    "minLength": 1}),
]
"""`UID[:GID]` or `NAME[:GROUP]`, resolved in the container's /etc/passwd and /etc/group."""

Port = Annotated[StrictInt, Field(ge=1, le=65535)]
"""A TCP or UDP port number, 1 to 65535."""

# distribution/reference grammar (docker's), written from its specification:
#   reference := name [ ":" tag ] [ "@" digest ];  name := [domain "/"] path
_DOMAIN_PART = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(\.{_DOMAIN_PART})*(:[0-9]+)?"
_PATH_PART = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST_PATTERN = r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"
_DIGEST = DIGEST_PATTERN[1:-1]
IMAGE_REFERENCE_PATTERN = (
    rf"^({_DOMAIN}/)?{_PATH_PART}(/{_PATH_PART})*(:{_TAG})?(@{_DIGEST})?$"
)

ImageReference = _pattern_type(
    IMAGE_REFERENCE_PATTERN, max_length=512, what="an image reference",
    hint="write [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST] with a lower-case repository "
         "(for example 'nginx:1.27' or 'registry.local:5000/team/app@sha256:…')",
)
"""A registry reference: `nginx:1.27`, `registry.local:5000/team/app@sha256:…`."""

Digest = _pattern_type(
    DIGEST_PATTERN, max_length=135, what="a content digest",
    hint="write sha256: followed by 64 lower-case hex digits",
)
"""A content digest: `sha256:` and 64 lower-case hex digits."""


class Capability(StrEnum):
    """A Linux capability, named without the `CAP_` prefix as Docker and Kubernetes do."""

    ALL = "ALL"
    AUDIT_CONTROL = "AUDIT_CONTROL"
    AUDIT_READ = "AUDIT_READ"
    AUDIT_WRITE = "AUDIT_WRITE"
    BLOCK_SUSPEND = "BLOCK_SUSPEND"
    BPF = "BPF"
    CHECKPOINT_RESTORE = "CHECKPOINT_RESTORE"
    CHOWN = "CHOWN"
    DAC_OVERRIDE = "DAC_OVERRIDE"
    DAC_READ_SEARCH = "DAC_READ_SEARCH"
    FOWNER = "FOWNER"
    FSETID = "FSETID"
    IPC_LOCK = "IPC_LOCK"
    IPC_OWNER = "IPC_OWNER"
    KILL = "KILL"
    LEASE = "LEASE"
    LINUX_IMMUTABLE = "LINUX_IMMUTABLE"
    MAC_ADMIN = "MAC_ADMIN"
    MAC_OVERRIDE = "MAC_OVERRIDE"
    MKNOD = "MKNOD"
    NET_ADMIN = "NET_ADMIN"
    NET_BIND_SERVICE = "NET_BIND_SERVICE"
    NET_BROADCAST = "NET_BROADCAST"
    NET_RAW = "NET_RAW"
    PERFMON = "PERFMON"
    SETFCAP = "SETFCAP"
    SETGID = "SETGID"
    SETPCAP = "SETPCAP"
    SETUID = "SETUID"
    SYS_ADMIN = "SYS_ADMIN"
    SYS_BOOT = "SYS_BOOT"
    SYS_CHROOT = "SYS_CHROOT"
    SYS_MODULE = "SYS_MODULE"
    SYS_NICE = "SYS_NICE"
    SYS_PACCT = "SYS_PACCT"
    SYS_PTRACE = "SYS_PTRACE"
    SYS_RAWIO = "SYS_RAWIO"
    SYS_RESOURCE = "SYS_RESOURCE"
    SYS_TIME = "SYS_TIME"
    SYS_TTY_CONFIG = "SYS_TTY_CONFIG"
    SYSLOG = "SYSLOG"
    WAKE_ALARM = "WAKE_ALARM"


# Label keys and values, as the API server checks them (apimachinery validation).
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE = re.compile(rf"^({DNS_SUBDOMAIN_PATTERN[1:-1]}/)?{_LABEL_NAME}$")
_LABEL_VALUE_RE = re.compile(rf"^({_LABEL_NAME})?$")


def check_labels(labels: dict[str, str], *, values: bool = True) -> dict[str, str]:
    """Refuse label keys (and, for labels, values) the API server would refuse."""
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (_LABEL_KEY_RE.fullmatch(key) is None or len(name) > 63 or len(prefix) > 253):
            raise ValueError(
                f"key {key!r} is not a valid label key: use [PREFIX/]NAME where NAME is at "
                "most 63 letters, digits, '-', '_' or '.' and PREFIX is a DNS subdomain"
            )
        if values and (len(value) > 63 or _LABEL_VALUE_RE.fullmatch(value) is None):
            raise ValueError(
                f"value {value!r} of {key!r} is not a valid label value: use at most 63 "
                "letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
    return labels


Labels = Annotated[
    dict[str, str],
    AfterValidator(check_labels),
    # OpenAPI cannot constrain map keys; the API server's schema checks the values.
    WithJsonSchema({"type": "object", "additionalProperties": {
        "type": "string", "maxLength": 63, "pattern": _LABEL_VALUE_RE.pattern}}),
]
"""A Kubernetes label map (keys and values checked)."""
