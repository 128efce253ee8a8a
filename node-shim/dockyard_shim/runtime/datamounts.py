"""A container's data mounts: host binds, volumes and private tmpfs, from its config.

At create, `claim_volumes` gives every `-v /path` an anonymous volume and makes named
volumes that do not exist yet (local ones, as `docker run -v NAME:/path` does), and checks
host binds against the node's `HostPaths` (the path given and where its links lead). At
start, `data_mounts` turns the config into the `DataMount`s the spawner performs inside
the container's root (a volume's subpath is resolved there, inside the volume). Volumes in
use are found from the container records (`volumes.volumes_in_use`): a volume any
container refers to, running or not, is never removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import replace

from dockyard_shim.errors import FailedPreconditionError, NotFoundError
from dockyard_shim.runtime.config import ContainerConfig, TmpfsMount, VolumeUse
from dockyard_shim.runtime.spawn import DataMount
from dockyard_shim.volumes import Kind, VolumeRecord, VolumeStore

CONTAINER_LABEL = "dockyard.dev/container"
"""On an anonymous volume: the id of the container it was made for."""


def with_image_volumes(config: ContainerConfig, declared: Iterable[str]) -> ContainerConfig:
    """The config with an anonymous volume at each path the image declares (VOLUME) where
    the container mounts nothing, as Docker gives them."""
    targets = [m.target for m in config.binds] + [m.target for m in config.volumes] + [
        m.target for m in config.tmpfs]
    taken = {os.path.normpath(target) for target in targets}
    added = tuple(VolumeUse("", path) for path in declared
                  if os.path.normpath(path) not in taken)
    return replace(config, volumes=config.volumes + added) if added else config


def claim_volumes(store: VolumeStore, config: ContainerConfig,
                  container_id: str) -> tuple[ContainerConfig, list[str]]:
    """The config with every volume named (anonymous ones made now), and the names of the
    volumes this call made, for the caller to remove if the create fails later."""
    for bind in config.binds:
        _host_path(store, bind.source)
    made: list[str] = []
    uses = []
    try:
        for use in config.volumes:
            if not use.name:
                record = store.create_anonymous({CONTAINER_LABEL: container_id})
                made.append(record.name)
                use = replace(use, name=record.name)  # noqa: PLW2901 -- named from here on
            else:
                try:
                    store.get(use.name)
                except NotFoundError:
                    store.create(VolumeRecord(name=use.name))
                    made.append(use.name)
            uses.append(use)
    except BaseException:
        remove_unused(store, made)
        raise
    return replace(config, volumes=tuple(uses)), made


def data_mounts(store: VolumeStore, config: ContainerConfig, name: str,
                running: Callable[[str], bool]) -> tuple[DataMount, ...]:
    """Binds, volumes and tmpfs of the container `name`, for the spawner; and, when it is a
    storage provider, its exports (detached mounts: close them with `close_trees`).

    A consumer of a provider volume waits for its provider: FailedPreconditionError, which
    says so, while `running(provider)` is false."""
    mounts = [DataMount(bind.target, _host_path(store, bind.source), readonly=bind.readonly)
              for bind in config.binds]
    for use in config.volumes:
        volume = store.get(use.name)
        if volume.kind is Kind.PROVIDER and not running(volume.provider):
            raise FailedPreconditionError(
                f"volume {volume.name} waits for its provider: container {volume.provider} "
                "is not running; start it first")
        source = store.source(volume)
        mounts.append(DataMount(use.target, str(source), use.subpath, use.readonly,
                                fill=volume.kind is Kind.LOCAL))
    mounts.extend(DataMount(t.target, tmpfs=_tmpfs_options(t)) for t in config.tmpfs)
    try:
        for volume in exports_of(store, name):
            mounts.append(DataMount(volume.provider_path, str(store.data_dir(volume.name)),
                                    tree=store.export_tree(volume)))
    except BaseException:
        close_trees(mounts)
        raise
    return tuple(mounts)


def exports_of(store: VolumeStore, name: str) -> list[VolumeRecord]:
    """The provider volumes the container `name` serves."""
    return [v for v in store.all() if v.kind is Kind.PROVIDER and v.provider == name]


def close_trees(mounts: Iterable[DataMount]) -> None:
    for mount in mounts:
        if mount.tree >= 0:
            os.close(mount.tree)


def anonymous_volumes(config: ContainerConfig, store: VolumeStore) -> list[str]:
    """The anonymous volumes among the container's volumes (what `rm -v` removes)."""
    found = []
    for use in config.volumes:
        with contextlib.suppress(NotFoundError):
            if store.get(use.name).anonymous:
                found.append(use.name)
    return found


def unmount_idle(store: VolumeStore, names: Iterable[str], running: Iterable[str]) -> None:
    """Let go of the volumes `names` of a container that stopped, but for those that a
    `running` container still uses: a tmpfs volume is unmounted and emptied then."""
    busy = set(running)
    for name in names:
        if name not in busy:
            with contextlib.suppress(NotFoundError):
                store.release(store.get(name))


def remove_unused(store: VolumeStore, names: Iterable[str], in_use: Iterable[str] = ()) -> None:
    """Remove the volumes `names` that nothing else uses; gone ones are no error."""
    busy = set(in_use)
    for name in names:
        if name not in busy:
            with contextlib.suppress(NotFoundError):
                store.remove(name, in_use=busy)


def _host_path(store: VolumeStore, path: str) -> str:
    """`path`, if it and where its links lead are both allowed on this node."""
    store.host_paths.check(os.path.realpath(path), "-v: bind source")
    return store.host_paths.check(path, "-v: bind source")


def _tmpfs_options(tmpfs: TmpfsMount) -> str:
    size = "" if tmpfs.size_bytes is None else f",size={tmpfs.size_bytes}"
    return f"mode={tmpfs.mode:o}{size}"
