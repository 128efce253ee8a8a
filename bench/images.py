"""Image benchmarks: pull + unpack from a local registry, layer sharing, and commit.

- pull: a multi-layer image of about 200 MiB (incompressible data, gzip layers) from a
  private docker-registry on 127.0.0.1, into an empty store each time: `dockyard pull`
  (which unpacks) vs `skopeo copy` to an OCI layout followed by `tar -xzf` of every layer,
  vs `docker pull` from the same registry on a private Docker engine;
- sharing: a second image on the same base layers; the bytes its pull fetched from the
  registry, counted in the registry's log, against the size of the shared layers;
- commit: a container that changed 10,000 files, `dockyard commit` vs `docker commit`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from measure import interleaved

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.registry import Registry, running_registry  # noqa: E402

DOCKYARD = [sys.executable, "-m", "dockyard_cli"]
LAYER_MIB = 50
LAYERS = 4
TEN_THOUSAND_FILES = ("mkdir /d; i=0; while [ $i -lt 10000 ]; do echo $i > /d/f$i; "
                      "i=$((i+1)); done")


def _layer(folder: Path, name: str, files: dict[str, bytes]) -> tuple[dict[str, object], str]:
    """A gzip layer blob in `folder`; (its descriptor, its diff id)."""
    plain = folder / f"{name}.tar"
    with tarfile.open(plain, "w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + _sha256_file(plain)
    packed = folder / f"{name}.tar.gz"
    with plain.open("rb") as source, gzip.open(packed, "wb", compresslevel=1) as out:
        shutil.copyfileobj(source, out, 1 << 20)
    plain.unlink()
    digest = "sha256:" + _sha256_file(packed)
    final = folder / digest.removeprefix("sha256:")
    packed.rename(final)
    return ({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
             "size": final.stat().st_size}, diff_id)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _oci_layout(folder: Path, layers: list[tuple[dict[str, object], str]], tag: str) -> None:
    """An OCI layout at `folder` (blobs already in folder/blobs/sha256) with one image."""
    blobs = folder / "blobs" / "sha256"
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
                         }).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.removeprefix("sha256:")).write_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [descriptor for descriptor, _ in layers]}).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest.removeprefix("sha256:")).write_bytes(manifest)
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (folder / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


def _publish(work: Path, registry: Registry) -> int:
    """Push `big:1` (LAYERS layers of LAYER_MIB MiB of random bytes) and `big-sibling:1`
    (the same layer blobs and one more) to the registry; the bytes of the shared layers."""
    big = work / "layout-big" / "blobs" / "sha256"
    big.mkdir(parents=True)
    layers = [_layer(big, f"l{n}", {f"data/{n}.bin": os.urandom(LAYER_MIB << 20)})
              for n in range(LAYERS)]
    _oci_layout(work / "layout-big", layers, "1")
    sibling = work / "layout-big-sibling" / "blobs" / "sha256"
    sibling.mkdir(parents=True)
    for descriptor, _ in layers:
        hex_digest = str(descriptor["digest"]).removeprefix("sha256:")
        os.link(big / hex_digest, sibling / hex_digest)
    extra = _layer(sibling, "extra", {"extra.txt": b"sibling\n"})
    _oci_layout(work / "layout-big-sibling", [*layers, extra], "1")
    for name in ("big", "big-sibling"):
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false",
                        f"oci:{work / f'layout-{name}'}:1",
                        f"docker://{registry.host}/bench/{name}:1"], check=True,
                       capture_output=True)
    return sum(int(str(d["size"])) for d, _ in layers)


@contextmanager
def _registry(work: Path) -> Iterator[Registry]:
    with running_registry(work) as registry:
        yield registry


def bench_pull(work: Path, samples: int, docker: dict[str, str] | None
               ) -> tuple[list[tuple[str, list[float]]], dict[str, int]]:
    """Pull timings, and the sharing figures."""
    with _registry(work) as registry:
        shared_bytes = _publish(work, registry)
        ref = f"{registry.host}/bench/big:1"
        counter = iter(range(10**6))

        def via_dockyard() -> None:
            root = work / f"pull-root-{next(counter)}"
            env = {**os.environ, "DOCKYARD_ROOT": str(root)}
            subprocess.run([*DOCKYARD, "pull", ref], env=env, check=True, capture_output=True)
            shutil.rmtree(root)

        def via_skopeo() -> None:
            layout, rootfs = work / "skopeo-layout", work / "skopeo-rootfs"
            subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}",
                            f"oci:{layout}:1"], check=True, capture_output=True)
            rootfs.mkdir()
            index = json.loads((layout / "index.json").read_text())
            manifest_hex = index["manifests"][0]["digest"].removeprefix("sha256:")
            manifest = json.loads((layout / "blobs" / "sha256" / manifest_hex).read_text())
            for layer in manifest["layers"]:
                blob = layout / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
                subprocess.run(["tar", "-xzf", str(blob), "-C", str(rootfs)], check=True)
            shutil.rmtree(layout)
            shutil.rmtree(rootfs)

        contenders = [("dockyard pull", via_dockyard),
                      ("skopeo copy + tar -x", via_skopeo)]
        if docker is not None:
            def via_docker() -> None:
                subprocess.run(["docker", "pull", ref], env=docker, check=True,
                               capture_output=True)
                subprocess.run(["docker", "rmi", ref], env=docker, check=True,
                               capture_output=True)

            contenders.append(("docker pull", via_docker))
        rows = interleaved(contenders, samples)

        # Sharing: one node pulls big, then big-sibling; count what the sibling fetched.
        root = work / "sharing-root"
        env = {**os.environ, "DOCKYARD_ROOT": str(root)}
        subprocess.run([*DOCKYARD, "pull", ref], env=env, check=True, capture_output=True)
        before = len(registry.blob_fetches("bench/big-sibling"))
        subprocess.run([*DOCKYARD, "pull", f"{registry.host}/bench/big-sibling:1"], env=env,
                       check=True, capture_output=True)
        fetched = registry.blob_fetches("bench/big-sibling")[before:]
        fetched_bytes = sum(_blob_size(work, d) for d in fetched)
        shutil.rmtree(root)
    return rows, {"bytes of the shared base layers": shared_bytes,
                  "bytes the second pull fetched": fetched_bytes,
                  "blobs the second pull fetched": len(fetched)}


def _blob_size(work: Path, digest: str) -> int:
    hex_digest = digest.removeprefix("sha256:")
    for layout in work.glob("layout-*"):
        blob = layout / "blobs" / "sha256" / hex_digest
        if blob.exists():
            return blob.stat().st_size
    return 0


def bench_commit(env: dict[str, str], samples: int, docker: dict[str, str] | None
                 ) -> list[tuple[str, list[float]]]:
    """Commit of a container that wrote 10,000 files, dockyard vs docker."""
    subprocess.run([*DOCKYARD, "run", "--name", "bench-commit", "busybox", "sh", "-c",
                    TEN_THOUSAND_FILES], env=env, check=True, capture_output=True)
    contenders = [("dockyard commit", lambda: subprocess.run(
        [*DOCKYARD, "commit", "bench-commit"], env=env, check=True, capture_output=True))]
    if docker is not None:
        subprocess.run(["docker", "run", "--name", "bench-commit", "--network", "none",
                        "dockyard-bench-busybox", "sh", "-c", TEN_THOUSAND_FILES],
                       env=docker, check=True, capture_output=True)
        contenders.append(("docker commit", lambda: subprocess.run(
            ["docker", "commit", "bench-commit"], env=docker, check=True,
            capture_output=True)))
    try:
        return interleaved(contenders, samples)
    finally:
        for cleanup in (["rm", "-f", "bench-commit"], ["image", "prune", "-f"]):
            subprocess.run([*DOCKYARD, *cleanup], env=env, capture_output=True, check=False)
