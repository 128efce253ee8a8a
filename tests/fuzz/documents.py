"""Generated JSON documents: valid image manifests, indexes and configs, and their mutants.

A valid document is built to the OCI image-spec (and Docker's manifest v2) shapes; `mutated`
then damages it where a hostile or broken producer would: a key deleted, a value of the
wrong type, a huge or negative number, a bad digest or media type, a deep nest, a key that
is valid elsewhere. Mutations walk into nested objects and lists, so they reach descriptors,
platforms, annotations and `rootfs` alike.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from hypothesis import strategies as st

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, OCI_CONFIG, OCI_LAYER, DOCKER_MANIFEST, DOCKER_LIST,
               DOCKER_CONFIG, "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.oci.image.layer.v1.tar+zstd", "application/octet-stream",
               "", "text/plain; charset=utf-8")

hex64 = st.binary(min_size=8, max_size=8).map(lambda b: hashlib.sha256(b).hexdigest())
good_digests = hex64.map(lambda h: f"sha256:{h}")
bad_digests = st.one_of(
    hex64.map(lambda h: f"sha256:{h[:63]}"), hex64.map(lambda h: f"sha256:{h.upper()}"),
    hex64.map(lambda h: f"sha512:{h}{h}"), hex64.map(lambda h: h),
    st.sampled_from(("", "sha256:", "sha256:../../../etc/passwd", "sha256:" + "0" * 64 + "\n",
                     "md5:d41d8cd98f00b204e9800998ecf8427e")),
)
huge = st.sampled_from((2**63, -1, -(2**63), 2**64 + 1, 10**400, 1e308, float("inf"),
                        float("nan"), 0.5, True))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | huge | st.floats() | st.text(max_size=12)
    | good_digests | bad_digests | st.sampled_from(MEDIA_TYPES),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
platforms = st.fixed_dictionaries(
    {"os": st.sampled_from(("linux", "windows", "Linux", "")),
     "architecture": st.sampled_from(("amd64", "arm64", "arm", "s390x", "x86_64", "386"))},
    optional={"variant": st.sampled_from(("v5", "v6", "v7", "v8", "v1", "v²", "v", "7"))})
annotations = st.dictionaries(
    st.sampled_from(("org.opencontainers.image.ref.name", "io.containerd.image.name", "x")),
    st.sampled_from(("latest", "busybox:1", "docker.io/library/app:2", "UPPER", ":", "@",
                     "a" * 300, "x/y@sha256:" + "0" * 64)),
    max_size=2)


def descriptors(media: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"mediaType": media, "digest": good_digests, "size": st.integers(0, 2**40)},
        optional={"annotations": annotations, "platform": platforms})


manifests = st.fixed_dictionaries(
    {"schemaVersion": st.just(2),
     "config": descriptors(st.sampled_from((OCI_CONFIG, DOCKER_CONFIG))),
     "layers": st.lists(descriptors(st.just(OCI_LAYER)), max_size=3)},
    optional={"mediaType": st.sampled_from((OCI_MANIFEST, DOCKER_MANIFEST)),
              "annotations": annotations})
indexes = st.fixed_dictionaries(
    {"schemaVersion": st.just(2),
     "manifests": st.lists(descriptors(st.sampled_from((OCI_MANIFEST, DOCKER_MANIFEST,
                                                        OCI_INDEX))), max_size=3)},
    optional={"mediaType": st.sampled_from((OCI_INDEX, DOCKER_LIST))})
configs = st.fixed_dictionaries(
    {"architecture": st.sampled_from(("amd64", "arm64")), "os": st.just("linux"),
     "rootfs": st.fixed_dictionaries({"type": st.just("layers"),
                                      "diff_ids": st.lists(good_digests, max_size=3)})},
    optional={
        "created": st.sampled_from(("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123456789Z",
                                    "yesterday", "", "0001-01-01T00:00:00Z")),
        "variant": st.sampled_from(("v8", "v7")),
        "config": st.fixed_dictionaries({}, optional={
            "Cmd": st.lists(st.text(max_size=8), max_size=3),
            "Entrypoint": st.lists(st.text(max_size=8), max_size=2),
            "Env": st.lists(st.text(max_size=8), max_size=2),
            "WorkingDir": st.text(max_size=8), "User": st.text(max_size=8),
            "ExposedPorts": st.dictionaries(st.sampled_from(("80/tcp", "53/udp")),
                                            st.just({}), max_size=2),
            "Volumes": st.dictionaries(st.sampled_from(("/data", "/var/log")), st.just({}),
                                       max_size=2),
            "Labels": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
            "StopSignal": st.sampled_from(("SIGTERM", "9")),
        }),
        "history": st.lists(st.fixed_dictionaries({"created_by": st.text(max_size=8)}),
                            max_size=2),
    })


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `value` (dict keys and list indexes), the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for n, child in enumerate(value):
            found += _paths(child, (*prefix, n))
    return found


def _deep(depth: int) -> Any:
    nested: Any = []
    for _ in range(depth):
        nested = [nested]
    return nested


@st.composite
def mutated(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A document from `documents`, with one to three mutations."""
    document = copy.deepcopy(draw(documents))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            document = draw(st.one_of(json_values, st.just(_deep(50))))
            continue
        *head, last = path
        parent = document
        for key in head:
            parent = parent[key]
        operation = draw(st.sampled_from(("delete", "replace", "wrap", "deep", "add")))
        if operation == "delete" and isinstance(parent, dict):
            del parent[last]
        elif operation == "wrap":
            parent[last] = [parent[last]]
        elif operation == "deep":
            parent[last] = _deep(draw(st.integers(10, 400)))
        elif operation == "add" and isinstance(parent[last], dict):
            parent[last][draw(st.sampled_from(("layers", "manifests", "mediaType", "size",
                                               "digest", "platform")))] = draw(json_values)
        else:
            parent[last] = draw(json_values)
    return document


def encode(document: Any) -> bytes:
    """`document` as JSON bytes (NaN and infinities as Python writes them, which a
    parser must refuse or accept, never crash on)."""
    return json.dumps(document, separators=(",", ":")).encode()
