"""Moving images between registries and this node, through `skopeo` (Debian package).

skopeo speaks the registry protocol (token auth, redirects, chunked uploads, manifest
lists); Dockyard chooses what to move and verifies what arrives. A pull copies into an OCI
layout directory whose blobs go straight into the node's content store
(`--dest-shared-blob-dir`): a blob the store holds already is neither fetched nor written
again. A push copies from a layout directory that the store fills with hard links.

Registry settings follow Docker's rules:
- A registry on a loopback address (`localhost`, 127.0.0.0/8, `[::1]`) may speak plain
  HTTP, as Docker always allows for 127.0.0.0/8; every other one must speak TLS with a
  valid certificate.
- Credentials come from Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
  `~/.docker/config.json`), as written by `docker login` or `dockyard login`.
- The platform chosen from a manifest list or image index is this node's.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from dockyard_shim.errors import (
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from dockyard_shim.images.platform import Platform
from dockyard_shim.images.reference import Reference

Progress = Callable[[str], None]
"""Receives skopeo's progress lines (`Copying blob sha256:…`), one at a time."""


def quiet(line: str) -> None:
    """Progress nobody watches."""


def docker_config() -> Path:
    """Where Docker keeps registry credentials: `$DOCKER_CONFIG/config.json`, else
    `~/.docker/config.json`."""
    folder = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(folder) / "config.json"


def plain_http_allowed(domain: str) -> bool:
    """Whether the registry at `domain` (`host[:port]`) may be reached without TLS."""
    host = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pull_to_layout(reference: Reference, layout: Path, blobs: Path, platform: Platform, *,
                   progress: Progress = quiet) -> None:
    """Copy the image `reference` for `platform` into the OCI layout `layout`, its blobs
    into `blobs` (a content store's `blobs/` folder: `sha256/<hex>` files)."""
    tag = reference.tag or "latest"
    _run([*_platform_options(platform), "copy", *_registry_options("src", reference),
          "--dest-shared-blob-dir", str(blobs),
          f"docker://{reference}", f"oci:{layout}:{tag}"], f"pull {reference}",
         progress=progress)


def push_from_layout(layout: Path, tag: str, reference: Reference, blobs: Path, *,
                     progress: Progress = quiet) -> None:
    """Copy the image tagged `tag` in the OCI layout `layout`, whose blobs are in `blobs`,
    to the registry as `reference`."""
    _run(["copy", *_registry_options("dest", reference), "--src-shared-blob-dir", str(blobs),
          f"oci:{layout}:{tag}", f"docker://{reference}"], f"push {reference}",
         progress=progress)


def login(domain: str, username: str, password: str) -> Path:
    """Check the credentials against the registry and store them in Docker's config.json;
    the file written."""
    config = docker_config()
    config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = ["login", "--authfile", str(config), "--username", username, "--password-stdin"]
    if plain_http_allowed(domain):
        command.append("--tls-verify=false")
    _run([*command, domain], f"log in to {domain}", stdin=password + "\n")
    return config


def _registry_options(side: str, reference: Reference) -> list[str]:
    options = []
    if plain_http_allowed(reference.domain):
        options.append(f"--{side}-tls-verify=false")
    if docker_config().is_file():
        options += [f"--{side}-authfile", str(docker_config())]
    return options


def _platform_options(platform: Platform) -> list[str]:
    """skopeo's global options choosing `platform` from a manifest list or index."""
    options = ["--override-os", platform.os, "--override-arch", platform.architecture]
    if platform.variant:
        options += ["--override-variant", platform.variant]
    return options


def _run(arguments: list[str], what: str, *, progress: Progress = quiet,
         stdin: str | None = None) -> None:
    """Run skopeo; its stdout lines go to `progress`, its errors into ours."""
    binary = shutil.which("skopeo")
    if binary is None:
        raise UnavailableError("skopeo is not installed: apt-get install skopeo")
    # stderr to a file: a pipe that nobody reads while we read stdout could fill and hang.
    with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
            [binary, *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=errors, text=True) as process:
        stdin_pipe, stdout_pipe = process.stdin, process.stdout
        if stdin_pipe is None or stdout_pipe is None:
            raise UnavailableError("cannot talk to skopeo")
        stdin_pipe.write(stdin or "")
        stdin_pipe.close()
        for line in stdout_pipe:
            progress(line.rstrip("\n"))
        process.wait()
        errors.seek(0)
        if process.returncode != 0:
            raise _error(what, errors.read())


def _error(what: str, errors: str) -> Exception:
    """skopeo's failure as one of our error categories, with its own words."""
    message = " ".join(errors.split()) or "skopeo failed without a message"
    # skopeo logs as `time="…" level=fatal msg="…"`: keep the message, unescaped
    message = message.split('msg="', 1)[-1].rstrip('"').replace('\\"', '"')
    text = f"cannot {what}: {message}"
    lowered = message.lower()
    if "manifest unknown" in lowered or "name unknown" in lowered or "not found" in lowered:
        return NotFoundError(text)
    if "invalid username/password" in lowered:
        return InvalidArgumentError(text)
    if "unauthorized" in lowered or "authentication required" in lowered \
            or "denied" in lowered:
        return InvalidArgumentError(text + " (log in first: dockyard login REGISTRY)")
    return UnavailableError(text)
