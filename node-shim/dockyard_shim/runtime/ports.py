"""What the runtime needs from the layers beside it, as small protocols.

The runtime asks two things of the storage layers: the image store resolves a name to a
runnable image, and the snapshotter gives each container a copy-on-write root. Depending
on these narrow protocols (not on the concrete classes) keeps the runtime testable and
lets either side change. (cgroups are used through their own interface, `CgroupDriver`.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dockyard_shim.mounts import Mount


@dataclass(frozen=True)
class RunnableImage:
    """An image as the runtime needs it."""

    id: str
    name: str
    top_layer: str
    """The committed snapshot (chain id) a container's root is prepared on."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    """Paths the image declares as volumes (VOLUME): each gets an anonymous volume unless
    the container mounts something there."""

    def save(self, bundle: Path) -> None:
        """Record it in a container's bundle (`image.json`)."""
        (bundle / "image.json").write_text(json.dumps(self.__dict__))

    @classmethod
    def of_bundle(cls, bundle: Path) -> RunnableImage:
        """The image recorded in a container's bundle by `save`."""
        data = json.loads((bundle / "image.json").read_text())
        return cls(**{**data, "volumes": tuple(data.get("volumes", ()))})


class Images(Protocol):
    def runnable(self, name: str) -> RunnableImage:
        """The image called `name`; NotFoundError when there is none."""


class Snapshots(Protocol):
    def prepare(self, key: str, parent: str | None = None) -> list[Mount]:
        """A writable snapshot on top of `parent`."""

    def mounts(self, key: str) -> list[Mount]:
        """The mounts of an existing snapshot."""

    def remove(self, key: str) -> None:
        """Remove a snapshot."""

    def layers(self, key: str) -> tuple[Path, list[Path]]:
        """A writable snapshot's own directory and its parents' directories."""

    def commit(self, name: str, key: str,
               labels: Mapping[str, str] | None = None) -> None:
        """Turn the writable snapshot `key` into the committed snapshot `name`."""

    def stat(self, key: str) -> object:
        """A snapshot's information; NotFoundError when there is none."""
