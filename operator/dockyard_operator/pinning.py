"""Digest pinning: an Image's tag is resolved to a digest once, cluster-wide.

`plan` decides, from the Image alone, what to do:
- `spec.digest` set, or a reference written with `@sha256:…`: pin to that digest, no
  registry call;
- a tag already resolved for the current generation of the spec: keep the pin. A tag that
  moves in the registry later changes nothing that runs; a changed spec (a new
  generation) resolves again;
- otherwise resolve the tag (`resolve`), once.

`resolve` asks the registry with `skopeo inspect --raw` for what the tag points to, and
pins the digest of those exact bytes: the index of a multi-platform image, or its
manifest, which is the digest `docker pull` prints and every node then pulls.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass

from dockyard_api.image import Image
from dockyard_api.registries import pinned_reference, plain_http_allowed

_DIGEST_SEPARATOR = "@"


@dataclass(frozen=True)
class Pin:
    """Pin the Image to `digest` (known without asking the registry)."""

    digest: str
    reference: str
    """The reference with the digest: `registry.local:5000/app@sha256:…`."""


@dataclass(frozen=True)
class Keep:
    """The Image is pinned for its current spec: nothing to do."""


@dataclass(frozen=True)
class Resolve:
    """Ask the registry what `reference`'s tag points to."""

    reference: str


@dataclass(frozen=True)
class AwaitCommit:
    """The Image is a Commit's result: its digest comes from the Commit."""

    commit: str


Plan = Pin | Keep | Resolve | AwaitCommit


def plan(image: Image) -> Plan:
    spec, status = image.spec, image.status
    if spec.from_commit is not None:
        return AwaitCommit(spec.from_commit)
    reference = spec.reference or ""
    written = reference.partition(_DIGEST_SEPARATOR)[2] or None
    digest = spec.digest or written
    current = status is not None and status.digest is not None and \
        status.observed_generation == image.metadata.generation
    if digest is not None:
        return Keep() if current and status and status.digest == digest else \
            Pin(digest, pinned_reference(reference, digest))
    return Keep() if current else Resolve(reference)


class ResolveError(RuntimeError):
    """The registry could not tell what a reference names."""


def resolve(reference: str, *, timeout: float = 60.0) -> Pin:
    """Pin `reference` to the digest of what its tag names now."""
    command = ["skopeo", "inspect", "--raw"]
    if _loopback(reference):
        command.append("--tls-verify=false")  # a registry on this machine: plain HTTP
    done = subprocess.run([*command, f"docker://{reference}"], capture_output=True,
                          check=False, timeout=timeout)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise ResolveError(f"cannot resolve {reference}: {detail[-1] if detail else 'failed'}")
    digest = "sha256:" + hashlib.sha256(done.stdout).hexdigest()
    return Pin(digest, pinned_reference(reference, digest))


def _loopback(reference: str) -> bool:
    """Whether the reference's registry is on this machine (127.0.0.1:5000/app, ...)."""
    first, slash, _ = reference.partition("/")
    return bool(slash) and plain_http_allowed(first)
