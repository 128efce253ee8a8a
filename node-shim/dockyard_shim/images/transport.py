"""Moving images between registries and this node, through `skopeo` (Debian package).

skopeo speaks the registry protocol (token auth, redirects, chunked uploads); Dockyard
chooses what to move (`inspect_raw` reads manifests, indexes and configs) and verifies
what arrives. A pull copies into an OCI layout directory whose blobs go straight into the
node's content store (`--dest-shared-blob-dir`): a blob the store holds already is neither
fetched nor written again. A push copies from a layout directory whose blobs skopeo reads
from the content store (`--src-shared-blob-dir`).

Registry settings follow Docker's rules:
- A registry on a loopback address (`localhost`, 127.0.0.0/8, `[::1]`) may speak plain
  HTTP, as Docker always allows for 127.0.0.0/8; every other one must speak TLS with a
  valid certificate.
- Credentials come from Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
  `~/.docker/config.json`), as written by `docker login` or `dockyard login`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from dockyard_api.registries import plain_http_allowed
from dockyard_shim.errors import (
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
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


def inspect_raw(reference: Reference, *, config: bool = False) -> bytes:
    """The manifest (or index, or manifest list) `reference` names, as the registry serves
    it; with `config`, the config of the image for this machine's platform instead."""
    arguments = ["inspect", "--raw", *(["--config"] if config else []),
                 *_registry_options("", reference), f"docker://{reference}"]
    done = subprocess.run([_binary(), *arguments], capture_output=True, check=False)
    if done.returncode != 0:
        raise _error(f"pull {reference}", done.stderr.decode(errors="replace"))
    return done.stdout


def start_pull(reference: Reference, layout: Path, blobs: Path, *,
               progress: Progress = quiet) -> Skopeo:
    """Start copying the image `reference` (a single-platform manifest) into the OCI
    layout `layout`, its blobs into `blobs` (a content store's `blobs/` folder of
    `sha256/<hex>` files, each renamed in once complete). Runs in the background."""
    return Skopeo(["copy", *_registry_options("src-", reference),
                   "--dest-shared-blob-dir", str(blobs),
                   f"docker://{reference}", f"oci:{layout}:pulled"], f"pull {reference}",
                  progress)


def push_from_layout(layout: Path, tag: str, reference: Reference, blobs: Path, *,
                     progress: Progress = quiet) -> None:
    """Copy the image tagged `tag` in the OCI layout `layout`, whose blobs are in `blobs`,
    to the registry as `reference`."""
    Skopeo(["copy", *_registry_options("dest-", reference), "--src-shared-blob-dir",
            str(blobs), f"oci:{layout}:{tag}", f"docker://{reference}"], f"push {reference}",
           progress).finish()


def login(domain: str, username: str, password: str) -> Path:
    """Check the credentials against the registry and store them in Docker's config.json;
    the file written."""
    config = docker_config()
    config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = ["login", "--authfile", str(config), "--username", username, "--password-stdin"]
    if plain_http_allowed(domain):
        command.append("--tls-verify=false")
    Skopeo([*command, domain], f"log in to {domain}", quiet, stdin=password + "\n").finish()
    return config


def _registry_options(side: str, reference: Reference) -> list[str]:
    """TLS and credentials for the registry of `reference`; `side` is `src-`, `dest-` or
    `` (inspect)."""
    options = []
    if plain_http_allowed(reference.domain):
        options.append(f"--{side}tls-verify=false")
    if docker_config().is_file():
        options += [f"--{side}authfile", str(docker_config())]
    return options


def _binary() -> str:
    binary = shutil.which("skopeo")
    if binary is None:
        raise UnavailableError("skopeo is not installed: apt-get install skopeo")
    return binary


class Skopeo:
    """One skopeo command, started at once: its stdout lines go to `progress` (from a
    thread of their own), its stderr to a file; `finish` waits and raises its failure in
    our error categories, `stop` ends it early."""

    def __init__(self, arguments: list[str], what: str, progress: Progress, *,
                 stdin: str | None = None) -> None:
        self._what = what
        self._errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 -- closed in finish
        self._process = subprocess.Popen(
            [_binary(), *arguments], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._errors, text=True)
        stdin_pipe = self._process.stdin
        if stdin_pipe is not None:
            stdin_pipe.write(stdin or "")
            stdin_pipe.close()
        self._reader = threading.Thread(target=self._forward, args=(progress,), daemon=True)
        self._reader.start()

    def _forward(self, progress: Progress) -> None:
        if self._process.stdout is not None:
            for line in self._process.stdout:
                progress(line.rstrip("\n"))

    def running(self) -> bool:
        return self._process.poll() is None

    def finish(self) -> None:
        """Wait for the end; raise if skopeo failed."""
        try:
            self._process.wait()
            self._reader.join()
            self._errors.seek(0)
            if self._process.returncode != 0:
                raise _error(self._what, self._errors.read())
        finally:
            self._close()

    def stop(self) -> None:
        """End it now (a pull given up)."""
        if self.running():
            self._process.kill()
        self._process.wait()
        self._reader.join()
        self._close()

    def _close(self) -> None:
        self._errors.close()
        if self._process.stdout is not None:
            self._process.stdout.close()


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
