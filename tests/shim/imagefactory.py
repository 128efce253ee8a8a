"""Test images built from scratch: layer tars, OCI image-layout tars, docker-save tars.

Everything is built here from the specifications (OCI image-spec v1.1, Docker's image
spec v1.2 and `docker save` layouts), not with the code under test, so the tests check the
image store against the formats and not against itself. Files come from a dict
(`{"etc/hostname": "box"}`) or from /bin/busybox (Debian's busybox-static) with its applet
links. Output is deterministic: the same input gives the same digests.

Also `mounted`, which performs a list of `Mount` values with mount(8) for root tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard_shim.mounts import Mount

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "true", "false", "echo", "sleep", "cat", "ls", "env", "id", "pwd")
MTIME = 1_700_000_000  # fixed, so digests are reproducible

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

_MACHINE_TO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
                    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}
NODE_ARCH = _MACHINE_TO_ARCH.get(os.uname().machine, os.uname().machine)
OTHER_ARCH = "s390x" if NODE_ARCH != "s390x" else "amd64"


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Dir:
    mode: int = 0o755


FileSpec = str | bytes | Symlink | Dir
"""A file's content (str or bytes), a symbolic link, or a directory."""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: Mapping[str, FileSpec]) -> bytes:
    """An uncompressed layer tar. Whiteouts are plain entries named `.wh.<name>` (empty
    content), as the OCI spec writes them; parent directories are added as needed."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        added: set[str] = set()

        def add_dirs(path: str) -> None:
            parts = path.split("/")[:-1]
            for n in range(1, len(parts) + 1):
                parent = "/".join(parts[:n])
                if parent not in added and parent not in files:
                    added.add(parent)
                    tar.addfile(_info(parent, tarfile.DIRTYPE, 0o755))

        for path, spec in files.items():
            add_dirs(path)
            added.add(path)
            if isinstance(spec, Dir):
                tar.addfile(_info(path, tarfile.DIRTYPE, spec.mode))
            elif isinstance(spec, Symlink):
                info = _info(path, tarfile.SYMTYPE, 0o777)
                info.linkname = spec.target
                tar.addfile(info)
            else:
                data = spec.encode() if isinstance(spec, str) else spec
                info = _info(path, tarfile.REGTYPE, 0o755 if path.startswith("bin/") else 0o644)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uname = info.gname = "root"
    return info


def busybox_files(extra: Mapping[str, FileSpec] | None = None) -> dict[str, FileSpec]:
    """A busybox root: bin/busybox, applet links, etc/passwd and group, tmp."""
    files: dict[str, FileSpec] = {"bin/busybox": BUSYBOX.read_bytes()}
    files |= {f"bin/{applet}": Symlink("busybox") for applet in APPLETS}
    files |= {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n", "etc/group": "root:x:0:\n",
              "tmp": Dir(0o1777)}
    return files | dict(extra or {})


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# Images ---------------------------------------------------------------------------------------

@dataclass
class Image:
    """One single-platform image: its blobs and the digests that name them."""

    manifest: bytes
    config: bytes
    layers: list[bytes]  # as stored (compressed or not)
    diff_ids: list[str]
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def id(self) -> str:
        return self.config_digest


def image(layers: Sequence[Mapping[str, FileSpec]], *, compress: bool = True,
          arch: str = NODE_ARCH, os_name: str = "linux", variant: str | None = None,
          config: Mapping[str, Any] | None = None) -> Image:
    """An OCI image whose layers hold `layers` (first is the base)."""
    plain = [layer_tar(files) for files in layers]
    stored = [gzipped(t) if compress else t for t in plain]
    diff_ids = [sha256(t) for t in plain]
    document: dict[str, Any] = {
        "created": "2024-01-02T03:04:05Z", "architecture": arch, "os": os_name,
        "config": dict(config or {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {n}"} for n in range(len(layers))],
    }
    if variant:
        document["variant"] = variant
    config_bytes = _json(document)
    manifest = _json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER_GZIP if compress else OCI_LAYER,
                    "digest": sha256(blob), "size": len(blob)} for blob in stored],
    })
    made = Image(manifest, config_bytes, stored, diff_ids)
    made.blobs = {sha256(b): b for b in (manifest, config_bytes, *stored)}
    return made


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def descriptor(img: Image, names: Sequence[str] = (), *,
               platform: Mapping[str, str] | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest,
                             "size": len(img.manifest)}
    if names:
        found["annotations"] = {CONTAINERD_NAME: names[0],
                                REF_NAME: names[0].rsplit(":", 1)[-1]}
    if platform:
        found["platform"] = dict(platform)
    return found


def index_blob(platforms: Sequence[tuple[Image, Mapping[str, str]]]) -> bytes:
    """An image index (multi-platform) over `platforms`."""
    return _json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                  "manifests": [descriptor(img, platform=p) for img, p in platforms]})


def oci_archive(path: Path, images: Sequence[tuple[Image, Sequence[str]]], *,
                indexes: Sequence[tuple[bytes, Sequence[Image], str]] = (),
                extra_blobs: Mapping[str, bytes] | None = None) -> Path:
    """An OCI image-layout tar holding `images` (each with its names) and multi-platform
    `indexes` (index blob, the images it lists, the name)."""
    blobs: dict[str, bytes] = {}
    entries = []
    for img, names in images:
        blobs |= img.blobs
        entries.append(descriptor(img, names))
    for blob, listed, name in indexes:
        blobs[sha256(blob)] = blob
        for img in listed:
            blobs |= img.blobs
        entries.append({"mediaType": OCI_INDEX, "digest": sha256(blob), "size": len(blob),
                        "annotations": {CONTAINERD_NAME: name,
                                        REF_NAME: name.rsplit(":", 1)[-1]}})
    blobs |= dict(extra_blobs or {})
    members = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
               "index.json": _json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                    "manifests": entries})}
    members |= {f"blobs/sha256/{d.removeprefix('sha256:')}": b for d, b in blobs.items()}
    return write_tar(path, members)


def docker_save_archive(path: Path, images: Sequence[tuple[Image, Sequence[str]]], *,
                        legacy: bool = True, index_names: bool = True) -> Path:
    """A `docker save` tar: the legacy layout (<id>/layer.tar, <config hex>.json) by default,
    or the Docker 25+ one (OCI blobs referenced from manifest.json) with `legacy=False`,
    whose index.json names the images unless `index_names` is False. Layers must be
    uncompressed, as docker save writes them."""
    members: dict[str, bytes | Symlink] = {}
    manifest = []
    if not legacy:
        entries = [descriptor(i, n if index_names else ()) for i, n in images]
        members |= {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
                    "index.json": _json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                         "manifests": entries})}
    for img, tags in images:
        if legacy:
            config_name = img.config_digest.removeprefix("sha256:") + ".json"
            members[config_name] = img.config
            layer_paths = []
            parent = ""
            for blob, diff_id in zip(img.layers, img.diff_ids, strict=True):
                layer_id = hashlib.sha256((parent + diff_id).encode()).hexdigest()
                layer_path = f"{layer_id}/layer.tar"
                if any(m == layer_path for m in members):
                    pass
                elif any(isinstance(v, bytes) and v == blob for v in members.values()):
                    # docker save links a layer already written under another id
                    first = next(k for k, v in members.items() if v == blob)
                    members[layer_path] = Symlink(f"../{first}")
                else:
                    members[layer_path] = blob
                members[f"{layer_id}/VERSION"] = b"1.0"
                members[f"{layer_id}/json"] = _json({"id": layer_id})
                layer_paths.append(layer_path)
                parent = layer_id
        else:
            members |= {f"blobs/sha256/{d.removeprefix('sha256:')}": b
                        for d, b in img.blobs.items()}
            config_name = "blobs/sha256/" + img.config_digest.removeprefix("sha256:")
            layer_paths = ["blobs/sha256/" + sha256(b).removeprefix("sha256:")
                           for b in img.layers]
        manifest.append({"Config": config_name, "RepoTags": list(tags),
                         "Layers": layer_paths})
    members["manifest.json"] = json.dumps(manifest).encode()
    return write_tar(path, members)


def write_tar(path: Path, members: Mapping[str, bytes | Symlink]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, content in members.items():
            if isinstance(content, Symlink):
                info = _info(name, tarfile.SYMTYPE, 0o777)
                info.linkname = content.target
                tar.addfile(info)
                continue
            info = _info(name, tarfile.REGTYPE, 0o644)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def rootfs_tar(path: Path, files: Mapping[str, FileSpec], *, compress: bool = False) -> Path:
    """A root filesystem tar, as `docker export` writes it, for `import_rootfs`."""
    data = layer_tar(files)
    path.write_bytes(gzipped(data) if compress else data)
    return path


def read_member(archive: Path, member: str) -> bytes:
    with tarfile.open(archive) as tar:
        extracted = tar.extractfile(member)
        assert extracted is not None
        return extracted.read()


def flip_byte(archive: Path, member: str, out: Path, *, offset: int = 100) -> Path:
    """A copy of tar `archive` with one byte of `member` inverted."""
    with tarfile.open(archive) as tar:
        members: dict[str, bytes | Symlink] = {}
        for info in tar.getmembers():
            if info.issym():
                members[info.name] = Symlink(info.linkname)
                continue
            extracted = tar.extractfile(info)
            data = bytearray(extracted.read() if extracted else b"")
            if info.name == member:
                data[offset % len(data)] ^= 0xFF
            members[info.name] = bytes(data)
    return write_tar(out, members)


# Mounts -------------------------------------------------------------------------------------

@contextmanager
def mounted(mounts: Sequence[Mount], target: Path) -> Iterator[Path]:
    """Perform `mounts` at `target` with mount(8), and unmount them when the block ends."""
    done: list[Path] = []
    try:
        for mount in mounts:
            where = target / mount.target.lstrip("/") if mount.target else target
            command = ["mount", "-o", ",".join(mount.options), mount.source, str(where)]
            if mount.type != "bind":
                command[1:1] = ["-t", mount.type]
            subprocess.run(command, check=True, capture_output=True, text=True)
            done.append(where)
        yield target
    finally:
        for where in reversed(done):
            subprocess.run(["umount", str(where)], check=True, capture_output=True)
