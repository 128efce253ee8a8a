"""An image from a container's changes: the image store's half of `docker commit`.

The runtime writes the container's writable layer as a tar (`archive.writer`); this puts it
on top of the container's image as a new image, as Docker does:
- the layer is stored uncompressed (its digest is its diff id), after the image's layers;
- the config is the image's, with the container's own run settings as the new defaults
  (its command, entrypoint, working directory and user when it had its own; its extra
  environment and labels added), then the `--change` instructions applied;
- `created` is now, and `history` gains an entry with the comment and the author.

Supported `--change` instructions: CMD, ENTRYPOINT (JSON array, or shell form run by
`/bin/sh -c`), ENV, LABEL (KEY=VALUE or KEY VALUE), WORKDIR, USER, EXPOSE, VOLUME and
STOPSIGNAL.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dockyard_shim.errors import InvalidArgumentError
from dockyard_shim.images.digest import ChainId, Digest
from dockyard_shim.images.loaders import LoadedImage
from dockyard_shim.images.metadata import ImageRecord
from dockyard_shim.images.oci import (
    MAX_DOCUMENT,
    OCI_LAYER,
    Descriptor,
    Manifest,
    parse_manifest_or_index,
)
from dockyard_shim.images.reference import Reference
from dockyard_shim.images.store import ImageStore

_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "LABEL", "WORKDIR", "USER", "EXPOSE",
                 "VOLUME", "STOPSIGNAL")


@dataclass(frozen=True)
class RunSettings:
    """What the container was run with, beyond its image (empty: the image's own)."""

    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


def commit_image(store: ImageStore, base: str, layer: Path, diff_id: str, *,
                 settings: RunSettings, name: Reference | None = None, comment: str = "",
                 author: str = "", changes: Sequence[str] = ()) -> ImageRecord:
    """Add the image made of `base` (an image id or name) and the layer tar `layer`."""
    record = store.get(base)
    content = store.content
    manifest = parse_manifest_or_index(
        content.read(record.manifest_digest, MAX_DOCUMENT),
        Descriptor(record.manifest_media_type, record.manifest_digest,
                   content.size(record.manifest_digest)))
    if not isinstance(manifest, Manifest):
        raise InvalidArgumentError(f"image {record.id} has no single-platform manifest")
    document = json.loads(content.read(record.config_digest, MAX_DOCUMENT))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _apply_settings(document.setdefault("config", {}), settings)
    for change in changes:
        _apply_change(document["config"], change)
    document["created"] = now
    document.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(
        diff_id)
    entry = {"created": now, "created_by": " ".join(
        [*(settings.entrypoint or ()), *settings.cmd]) or "dockyard commit"}
    if comment:
        entry["comment"] = comment
    if author:
        entry["author"] = document["author"] = author
    document.setdefault("history", []).append(entry)

    def read(added: set[Digest], _: list[ChainId]) -> list[LoadedImage]:
        with layer.open("rb") as stream:
            blob, size = content.ingest(stream, Digest(diff_id))
        added.add(blob)
        layers = (*manifest.layers, Descriptor(OCI_LAYER, blob, size))
        return [store.new_image(document, layers, [name] if name is not None else [], added)]

    (committed,) = store.add(read)  # unpacked when a container first runs it
    return committed


def _apply_settings(config: dict[str, Any], settings: RunSettings) -> None:
    if settings.cmd:
        config["Cmd"] = list(settings.cmd)
    if settings.entrypoint is not None:
        config["Entrypoint"] = list(settings.entrypoint) or None
    for item in settings.env:
        _set_env(config, item)
    if settings.working_dir:
        config["WorkingDir"] = settings.working_dir
    if settings.user:
        config["User"] = settings.user
    if settings.labels:
        config["Labels"] = {**(config.get("Labels") or {}), **settings.labels}


def _set_env(config: dict[str, Any], item: str) -> None:
    key = item.split("=", 1)[0]
    kept = [e for e in config.get("Env") or [] if e.split("=", 1)[0] != key]
    config["Env"] = [*kept, item]


def _apply_change(config: dict[str, Any], change: str) -> None:
    """One Dockerfile-like instruction, as `docker commit --change` takes them."""
    instruction, _, argument = change.strip().partition(" ")
    instruction, argument = instruction.upper(), argument.strip()
    if instruction not in _INSTRUCTIONS or not argument:
        raise InvalidArgumentError(
            f"--change {change!r}: write an instruction with its argument; supported: "
            f"{', '.join(_INSTRUCTIONS)}")
    if instruction in ("CMD", "ENTRYPOINT"):
        config[instruction.title()] = _command(argument, change)
    elif instruction == "ENV":
        for pair in _pairs(argument, change):
            _set_env(config, "=".join(pair))
    elif instruction == "LABEL":
        config["Labels"] = {**(config.get("Labels") or {}), **dict(_pairs(argument, change))}
    elif instruction == "WORKDIR":
        config["WorkingDir"] = argument
    elif instruction == "USER":
        config["User"] = argument
    elif instruction == "STOPSIGNAL":
        config["StopSignal"] = argument
    else:  # EXPOSE, VOLUME: sets of keys
        key = "ExposedPorts" if instruction == "EXPOSE" else "Volumes"
        values = _command(argument, change) if argument.startswith("[") else argument.split()
        additions: dict[str, object] = {
            v if key == "Volumes" or "/" in v else f"{v}/tcp": {} for v in values}
        config[key] = {**(config.get(key) or {}), **additions}


def _command(argument: str, change: str) -> list[str]:
    if not argument.startswith("["):
        return ["/bin/sh", "-c", argument]
    try:
        words = json.loads(argument)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"--change {change!r}: not a JSON array: {e}") from None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise InvalidArgumentError(f"--change {change!r}: a JSON array of strings, please")
    return words


def _pairs(argument: str, change: str) -> list[tuple[str, str]]:
    """`K=V K2="V 2"` or `K V` (one pair, the rest of the line as the value)."""
    if "=" not in argument.split(maxsplit=1)[0]:
        key, _, value = argument.partition(" ")
        return [(key, value.strip())]
    pairs = []
    for word in shlex.split(argument):
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InvalidArgumentError(f"--change {change!r}: write KEY=VALUE")
        pairs.append((key, value))
    return pairs
