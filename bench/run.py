"""Dockyard's benchmarks for the runtime, side by side with its peers, as ratios.

    .venv/bin/python bench/run.py [--samples 30] [--containers 500] [--cycles 1000]
                                  [--only start,snapshot,memory,leaks,pull,commit,
                                          volume-io,volume-transfer]

Measures, in one run on this machine (absolute times are noise here; ratios are not):
- start: /bin/true in a busybox image, create -> start -> exit -> delete, through the
  daemon's API, through `dockyard run --rm`, and with `runc run` on the same root
  filesystem (and `docker run --rm` when a Docker engine answers);
- snapshot: preparing a container's snapshot on a 1 GiB image vs a 2 MiB image;
- memory: runtime-side memory (keeper, server and fork server PSS) with N sleeping containers;
- leaks: mounts, cgroups, namespaces, directories and processes after N create/delete
  cycles;
- pull and commit: see bench/images.py (image pulls from a private registry, sharing of
  base layers, commit of 10,000 changed files; against skopeo and Docker);
- volume-io and volume-transfer: see bench/volumes.py (sequential and small-file I/O in a
  container on a volume and in its overlay root, against the same directory from the host;
  a 1 GiB volume pulled from the daemon's transfer listener, against rsync -a).
It runs its own daemon on a private state root, and removes everything it made.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import busybox_image  # noqa: E402 -- script modules, found through the path above
from dockerd import DockerdUnavailableError, private_dockerd  # noqa: E402
from measure import interleaved, report_times  # noqa: E402 -- bench/ is on the path

DOCKYARD = [sys.executable, "-m", "dockyard_cli"]
TRANSFER_PORT = 47459  # the benchmark daemon's volume transfer listener, on 127.0.0.1


# ------------------------------------------------------------------------ the daemon


@contextmanager
def daemon(work: Path) -> Iterator[dict[str, str]]:
    """A private dockyard daemon with the busybox image imported; env for the CLI."""
    token = work / "transfer.token"
    token.write_text(os.urandom(24).hex())
    token.chmod(0o600)
    for name in ("subuid", "subgid"):  # ids for --userns auto, the node's own left alone
        (work / name).write_text("dockyard:100000:6553600\n")
    env = {**os.environ, "DOCKYARD_ROOT": str(work / "root"),
           "DOCKYARD_HOST": str(work / "dockyard.sock"),
           "DOCKYARD_SUBUID": str(work / "subuid"), "DOCKYARD_SUBGID": str(work / "subgid"),
           "DOCKYARD_TRANSFER_LISTEN": f"127.0.0.1:{TRANSFER_PORT}",
           "DOCKYARD_TRANSFER_TOKEN_FILE": str(token)}
    busybox_image.build(work / "busybox.tar")
    subprocess.run([*DOCKYARD, "import", str(work / "busybox.tar"), "busybox"], env=env,
                   check=True, capture_output=True)
    with (work / "daemon.log").open("ab") as log:
        keeper = subprocess.Popen([*DOCKYARD, "shim"], env=env, stdout=log, stderr=log)
    os.environ.update({k: env[k] for k in ("DOCKYARD_ROOT", "DOCKYARD_HOST")})
    from dockyard_shim.daemon.client import Client  # noqa: PLC0415 -- after the env is set

    client = Client(Path(env["DOCKYARD_HOST"]))
    while not client.ping():
        time.sleep(0.05)
    try:
        yield env
    finally:
        for record in client.call("GET", "/containers/json?all=1"):
            client.call("DELETE", f"/containers/{record['id']}?force=1")
        keeper.terminate()
        keeper.wait(timeout=30)


def api_client() -> object:
    from dockyard_cli.client import connect  # noqa: PLC0415

    return connect(autostart=False)


TRUE_CONFIG = {"image": "busybox", "command": ["true"], "network": "none"}


def api_cycle(client: object, config: dict[str, object] = TRUE_CONFIG) -> None:
    """/bin/true through the daemon's API: create, start, wait, delete."""
    cid = client.call("POST", "/containers/create", config)["Id"]  # type: ignore[attr-defined]
    client.call("POST", f"/containers/{cid}/start")  # type: ignore[attr-defined]
    client.call("POST", f"/containers/{cid}/wait")  # type: ignore[attr-defined]
    client.call("DELETE", f"/containers/{cid}")  # type: ignore[attr-defined]


# -------------------------------------------------------------------------- start


def bench_start(work: Path, env: dict[str, str], samples: int) -> list[tuple[str, list[float]]]:
    client = api_client()

    def via_api() -> None:
        api_cycle(client)

    def via_api_userns() -> None:  # a user namespace of its own, idmapped layers
        api_cycle(client, {**TRUE_CONFIG, "userns": "auto"})

    def via_cli() -> None:
        subprocess.run([str(REPO / ".venv/bin/dockyard"), "run", "--rm", "--network", "none",
                        "busybox", "true"], env=env, check=True)

    bundle = _runc_bundle(work)

    def via_runc() -> None:
        subprocess.run(["runc", "run", "--bundle", str(bundle), f"bench-{os.getpid()}"],
                       check=True, capture_output=True)

    contenders = [("dockyard API", via_api), ("dockyard API, --userns auto", via_api_userns),
                  ("dockyard run --rm (CLI)", via_cli), ("runc run", via_runc)]
    with docker_with_busybox(work) as docker:
        if docker is not None:
            contenders.append(("docker run --rm", lambda: subprocess.run(
                ["docker", "run", "--rm", "--network", "none", "dockyard-bench-busybox",
                 "true"], env=docker, check=True, capture_output=True)))
        return interleaved(contenders, samples)


def _runc_bundle(work: Path) -> Path:
    bundle = work / "runc-bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xf", str(work / "busybox.tar"), "-C", str(rootfs)], check=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    spec["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


@contextmanager
def docker_with_busybox(work: Path) -> Iterator[dict[str, str] | None]:
    """A private Docker engine with the benchmark's busybox image, or None if it cannot run."""
    try:
        with private_dockerd() as env:
            subprocess.run(["docker", "import", str(work / "busybox.tar"),
                            "dockyard-bench-busybox"], env=env, check=True, capture_output=True)
            yield env
    except DockerdUnavailableError:
        yield None


# ----------------------------------------------------------------------- snapshot


def bench_snapshot(work: Path, samples: int) -> list[tuple[str, list[float]]]:
    from dockyard_shim.snapshots import OverlaySnapshotter  # noqa: PLC0415

    snapshots = OverlaySnapshotter(work / "snap-bench")
    contenders = []
    for label, size in (("prepare on a 2 MiB image", 2 << 20),
                        ("prepare on a 1 GiB image", 1 << 30)):
        key = f"layer-{size}"
        snapshots.prepare(f"extract-{size}")
        with (snapshots.upper_dir(f"extract-{size}") / "data").open("wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        snapshots.commit(key, f"extract-{size}")
        counter = iter(range(10**9))

        def prepare(key: str = key, counter: Iterator[int] = counter) -> None:
            name = f"ctr-{key}-{next(counter)}"
            snapshots.prepare(name, key)
            snapshots.remove(name)

        contenders.append((label, prepare))
    os.sync()  # the 1 GiB just written is not to be flushed during the measurement
    rows = interleaved(contenders, samples)
    snapshots.close()
    return rows


# ------------------------------------------------------------------------- memory


def _pss(pid: int) -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    match = re.search(r"^Pss:\s+(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def bench_memory(count: int) -> dict[str, float]:
    client = api_client()
    root = Path(os.environ["DOCKYARD_ROOT"])
    keeper = int((root / "daemon.lock").read_text())
    server = int(Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()[0])
    before = _runtime_pss(keeper, server, inits=set())
    ids = []
    for _ in range(count):
        cid = client.call("POST", "/containers/create",  # type: ignore[attr-defined]
                          {"image": "busybox", "command": ["sleep", "3600"],
                           "network": "none"})["Id"]
        client.call("POST", f"/containers/{cid}/start")  # type: ignore[attr-defined]
        ids.append(cid)
    time.sleep(1)
    inits = _container_inits(ids, client)
    after = _runtime_pss(keeper, server, inits)
    extra = [p for p in _descendants(server) if p not in inits]
    for cid in ids:
        client.call("DELETE", f"/containers/{cid}?force=1")  # type: ignore[attr-defined]
    return {"containers": count, "before_kib": before, "after_kib": after,
            "growth_per_container_kib": (after - before) / count,
            "total_per_container_kib": after / count,
            "runtime_processes_per_container": len(extra) / count}


def _runtime_pss(keeper: int, server: int, inits: set[int]) -> int:
    """The PSS of the keeper, the server and the server's helpers (its fork server)."""
    helpers = [p for p in _descendants(server) if p not in inits]
    return _pss(keeper) + _pss(server) + sum(_pss(p) for p in helpers)


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _container_inits(ids: list[str], client: object) -> set[int]:
    return {client.call("GET", f"/containers/{cid}/json")["pid"]  # type: ignore[attr-defined]
            for cid in ids}


# -------------------------------------------------------------------------- leaks


def _census(root: Path) -> dict[str, int]:
    mounts = Path("/proc/self/mountinfo").read_text().count("\n")
    cgroups = sum(1 for h in Path("/sys/fs/cgroup").iterdir()
                  for _ in (h / "dockyard").glob("*") if (h / "dockyard").is_dir()
                  and _.is_dir())
    netns = len({os.readlink(p) for p in Path("/proc").glob("[0-9]*/ns/net")
                 if _readable(p)})
    veths = sum(1 for i in Path("/sys/class/net").iterdir() if i.name.startswith("veth"))
    dirs = sum(1 for _ in (root / "containers").iterdir()) if (root / "containers").is_dir() \
        else 0
    snaps = sum(1 for _ in (root / "overlay" / "snapshots").iterdir())
    processes = sum(1 for p in Path("/proc").glob("[0-9]*") if not _kernel_thread(p))
    return {"mounts": mounts, "cgroups": cgroups, "network namespaces": netns,
            "veths": veths, "container dirs": dirs, "snapshot dirs": snaps,
            "processes": processes}


def _kernel_thread(proc: Path) -> bool:
    """Kernel threads (kworkers come and go on their own) are not counted."""
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return True  # gone meanwhile: nothing to count
    return proc.name == "2" or stat.rsplit(")", 1)[1].split()[1] == "2"  # kthreadd's


def _readable(path: Path) -> bool:
    try:
        os.readlink(path)
    except OSError:
        return False
    return True


def bench_leaks(cycles: int) -> dict[str, tuple[int, int]]:
    client = api_client()
    root = Path(os.environ["DOCKYARD_ROOT"])
    api_cycle(client)  # what stays once per image (its init layer) is there before counting
    time.sleep(0.5)
    before = _census(root)
    for _ in range(cycles):
        api_cycle(client)
    time.sleep(0.5)
    after = _census(root)
    return {name: (before[name], after[name]) for name in before}


def bench_images(work: Path, env: dict[str, str], wanted: set[str], samples: int) -> None:
    from images import LAYER_MIB, LAYERS, bench_commit, bench_pull  # noqa: PLC0415

    with docker_with_busybox(work) as docker:
        if "pull" in wanted:
            rows, sharing = bench_pull(work, samples, docker)
            report_times(f"Pull + unpack of a {LAYER_MIB * LAYERS} MiB image in {LAYERS} "
                         "layers from a local registry", rows,
                         "skopeo copy + tar -x")
            print("\n### A second image on the same base layers\n")
            for key, value in sharing.items():
                print(f"- {key}: {value}")
        if "commit" in wanted:
            report_times("Commit of a container that changed 10,000 files",
                         bench_commit(env, samples, docker),
                         "docker commit" if docker is not None else "dockyard commit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--containers", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--only",
                        default="start,snapshot,memory,leaks,pull,commit,volume-io,"
                                "volume-transfer")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks run containers: run them as root")
    # Measure dockyard as installed: with its bytecode compiled, even where the
    # environment forbids writing it (PYTHONDONTWRITEBYTECODE).
    for package_root in ("common", "crds", "operator", "node-shim", "cli"):
        compileall.compile_dir(REPO / package_root, quiet=1)
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as tmp:
        work = Path(tmp)
        print(f"# Dockyard runtime benchmarks ({time.strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} CPUs, kernel {os.uname().release})")
        with daemon(work) as env:
            if "start" in wanted:
                rows = bench_start(work, env, args.samples)
                report_times("Start latency: /bin/true, create -> start -> exit -> delete",
                             rows, "runc run")
                times = dict(rows)
                userns = statistics.median(times["dockyard API, --userns auto"])
                print(f"\n--userns auto / host ids, through the API (p50): "
                      f"{userns / statistics.median(times['dockyard API']):.2f}")
                if "docker run --rm" in dict(rows):
                    cli = statistics.median(dict(rows)["dockyard run --rm (CLI)"])
                    docker_p50 = statistics.median(dict(rows)["docker run --rm"])
                    print(f"\ndockyard run --rm / docker run --rm (p50): {cli / docker_p50:.2f}")
                else:
                    print("\n(docker run: dockerd could not be started on this machine)")
            if "snapshot" in wanted:
                rows = bench_snapshot(work, args.samples)
                report_times("Snapshot creation vs image size", rows,
                             "prepare on a 2 MiB image")
            if wanted & {"pull", "commit"}:
                bench_images(work, env, wanted, max(3, args.samples // 6))
            if wanted & {"volume-io", "volume-transfer"}:
                from volumes import bench_volumes  # noqa: PLC0415

                bench_volumes(work, env, wanted, TRANSFER_PORT, max(3, args.samples // 8))
            if "memory" in wanted:
                memory = bench_memory(args.containers)
                print(f"\n### Memory with {args.containers} sleeping containers\n")
                for key, value in memory.items():
                    print(f"- {key}: {value:.1f}" if isinstance(value, float)
                          else f"- {key}: {value}")
            if "leaks" in wanted:
                leaks = bench_leaks(args.cycles)
                print(f"\n### Leaks after {args.cycles} create/start/exit/delete cycles\n")
                print("| resource | before | after |")
                print("|---|---:|---:|")
                for name, (before, after) in leaks.items():
                    print(f"| {name} | {before} | {after} |")


if __name__ == "__main__":
    main()
