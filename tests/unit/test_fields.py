"""The constrained strings accept what Docker and Kubernetes accept, and nothing else."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from dockyard_api.fields import (
    AbsolutePath,
    DnsLabel,
    DnsSubdomain,
    EnvName,
    ImageReference,
    Labels,
    SubPath,
    User,
)

SHA = "sha256:" + "0" * 64


def _accepts(kind: Any, value: object) -> bool:
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return False
    return True


def _schema_accepts(kind: Any, value: str) -> bool:
    schema = TypeAdapter(kind).json_schema()
    return len(value) <= schema["maxLength"] and re.search(schema["pattern"], value) is not None


CASES: list[tuple[Any, str, bool]] = [
    (AbsolutePath, "/", True),
    (AbsolutePath, "/var/lib/data", True),
    (AbsolutePath, "/a/.hidden/..b/...", True),
    (AbsolutePath, "relative", False),
    (AbsolutePath, "/a/../b", False),
    (AbsolutePath, "/a/./b", False),
    (AbsolutePath, "/a//b", False),
    (AbsolutePath, "/a/", False),
    (AbsolutePath, "/..", False),
    (AbsolutePath, "/a\x00b", False),
    (SubPath, "logs/web", True),
    (SubPath, "..data", True),
    (SubPath, "../etc", False),
    (SubPath, "/abs", False),
    (SubPath, "a/../../b", False),
    (DnsLabel, "web-1", True),
    (DnsLabel, "Web", False),
    (DnsLabel, "-web", False),
    (DnsLabel, "a" * 64, False),
    (DnsSubdomain, "node-1.example.internal", True),
    (DnsSubdomain, "node..x", False),
    (EnvName, "DATABASE_URL", True),
    (EnvName, "spring.profiles.active", True),
    (EnvName, "9LIVES", False),
    (User, "1000:1000", True),
    (User, "nobody", True),
    (User, "www-data:adm", True),
    (User, "a:b:c", False),
    (User, "Root", False),
    (ImageReference, "nginx", True),
    (ImageReference, "nginx:1.27-alpine", True),
    (ImageReference, "docker.io/library/nginx:1.27", True),
    (ImageReference, "localhost:5000/team/app_1__x/web", True),
    (ImageReference, f"registry.local:5000/app@{SHA}", True),
    (ImageReference, f"app:v1@{SHA}", True),
    (ImageReference, "Nginx", False),
    (ImageReference, "nginx:", False),
    (ImageReference, ":tag", False),
    (ImageReference, "a//b", False),
    (ImageReference, "nginx:-x", False),
    (ImageReference, "app@sha256:abc", False),
]


@pytest.mark.parametrize(("kind", "value", "ok"), CASES)
def test_models_and_schema_agree_on_each_value(kind: Any, value: str, ok: bool) -> None:
    assert _accepts(kind, value) is ok
    assert _schema_accepts(kind, value) is ok


def test_refusals_say_what_to_write() -> None:
    with pytest.raises(ValidationError, match="for example '/var/lib/data'"):
        TypeAdapter(AbsolutePath).validate_python("data")


def test_numeric_ids_above_the_kernel_limit_are_refused() -> None:
    assert _accepts(User, "4294967294")
    assert not _accepts(User, "4294967295")


@pytest.mark.parametrize(("labels", "ok"), [
    ({"app.kubernetes.io/name": "web"}, True),
    ({"disk": ""}, True),
    ({"disk": "fast ssd"}, False),
    ({"-bad": "x"}, False),
    ({"Example.com/x": "y"}, False),
    ({"a" * 64: "x"}, False),
    ({"k": "v" * 64}, False),
])
def test_label_keys_and_values_follow_the_api_server(labels: dict[str, str], ok: bool) -> None:
    assert _accepts(Labels, labels) is ok
