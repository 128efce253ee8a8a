"""Volume benchmarks: I/O inside a container on a volume vs the same directory from the host.

The same static busybox runs the same script on both sides (its sh, dd, ls, rm, named
as `busybox APPLET`: the host's own sh and dd are other programs): on the host, in the
volume's own data directory; in a container (through `dockyard exec`), on the volume
mounted at /vol, and for contrast in the container's overlay root filesystem (/scratch).
The script times its work itself, in microseconds (busybox adjtimex), so neither `exec`
nor process start-up is counted. Host and volume swap the same two files sample by sample
and the sides take turns in a rotating order, so that neither where a file lies on the
virtual disk nor a noisy spell of it favours one side. Throughput ratios: volume / host
(the physical limit is 1.0) and overlay / host.

Workloads:
- write 1 GiB, buffered: dd bs=1M, then fsync (conv=fsync): the data reaches the disk;
- write 1 GiB, direct: dd oflag=direct (no page cache);
- read 4 GiB, buffered: the 1 GiB file just written, four times, from the page cache
  (the VFS path itself);
- read 1 GiB, direct: dd iflag=direct;
- small files: create, stat (ls -l) and delete 3,000 files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from measure import report_times

DOCKYARD = [sys.executable, "-m", "dockyard_cli"]
BUSYBOX = "/bin/busybox"
FILES = 3000
CONTAINER = "dockyard-bench-io"
_DD = "busybox dd bs=1M 2>/dev/null"

# Every command is busybox's, named so. {dir}: the side's directory; {f}: its own file.
WORKLOADS: dict[str, tuple[str, int]] = {
    # name: (script, MiB moved: 0 for a rate in files)
    "write 1 GiB, buffered + fsync": (f"{_DD} if=/dev/zero of={{f}} count=1024 conv=fsync",
                                      1024),
    "write 1 GiB, direct": (f"{_DD} if=/dev/zero of={{f}} count=1024 oflag=direct", 1024),
    "read 4 GiB, buffered": (" && ".join([f"{_DD} if={{f}} of=/dev/null"] * 4), 4096),
    "read 1 GiB, direct": (f"{_DD} if={{f}} of=/dev/null iflag=direct", 1024),
    f"{FILES} small files: create, stat, delete": (
        f"busybox mkdir -p {{dir}}/many-{{side}} && cd {{dir}}/many-{{side}} && i=0; "
        f"while [ $i -lt {FILES} ]; do echo $i > f$i; i=$((i+1)); done; "
        "busybox ls -l > /dev/null; cd / && busybox rm -r {dir}/many-{side}", 0),
}
_TIMED = ("now() {{ busybox adjtimex | busybox awk '/tv_sec/ {{s = $2}} /tv_usec/ {{u = $2}} "
          "END {{printf \"%d%06d\", s, u}}'; }}; t0=$(now); {work}; t1=$(now); "
          "echo elapsed_us $((t1 - t0))")


def bench_volume_io(env: dict[str, str], samples: int) -> list[tuple[str, dict[str, float]]]:
    """For each workload: the median seconds on the host, on the volume, on the overlay."""
    def dockyard(*args: str) -> str:
        return subprocess.run([*DOCKYARD, *args], env=env, check=True, capture_output=True,
                              text=True).stdout

    dockyard("volume", "create", "bench-io")
    data = json.loads(dockyard("volume", "inspect", "bench-io"))[0]["Mountpoint"]
    dockyard("run", "-d", "--name", CONTAINER, "-v", "bench-io:/vol", "busybox",
             "sleep", "86400")
    try:
        dockyard("exec", CONTAINER, "mkdir", "-p", "/scratch")
        in_container = [*DOCKYARD, "exec", CONTAINER, "busybox", "sh", "-c"]
        # The host, but from inside the container's cgroups: a process there pays the
        # memory cgroup's charge for every inode and dentry it makes (~9% on a file storm
        # here), which the bind mount has nothing to do with. Against this side, the
        # volume's ratio is the mount's own cost.
        container_id = json.loads(dockyard("inspect", CONTAINER))[0]["id"]
        join = " ".join(str(f) for f in _cgroup_files(container_id))
        in_cgroups = [BUSYBOX, "sh", "-c", f'for f in {join}; do echo $$ > "$f"; done; '
                      'exec busybox sh -c "$0"']
        # Host and volume share the directory, and swap its two files sample by sample:
        # where a file's blocks lie on the (virtual) disk then favours neither side.
        sides: dict[str, Callable[[str, int], float]] = {
            "host": lambda work, n: _timed([BUSYBOX, "sh", "-c", _script(
                work, dir=data, f=f"{data}/io-{n % 2}.bin", side="host")], env),
            "host in cgroups": lambda work, n: _timed([*in_cgroups, _script(
                work, dir=data, f=f"{data}/io-{n % 2}.bin", side="cgroups")], env),
            "volume": lambda work, n: _timed([*in_container, _script(
                work, dir="/vol", f=f"/vol/io-{(n + 1) % 2}.bin", side="volume")], env),
            "overlay": lambda work, n: _timed([*in_container, _script(
                work, dir="/scratch", f=f"/scratch/io-{n % 2}.bin", side="overlay")], env),
        }
        results = []
        for name, (work, mib) in WORKLOADS.items():
            times: dict[str, list[float]] = {side: [] for side in sides}
            order = list(sides)
            # The small-file storm takes a second and varies most: three times the samples.
            for sample in range(samples if mib else 3 * samples):
                turn = sample % len(order)
                for side in order[turn:] + order[:turn]:  # rotating turns
                    times[side].append(sides[side](work, sample))
            results.append((name, {side: statistics.median(v) for side, v in times.items()}))
        return results
    finally:
        dockyard("rm", "-f", CONTAINER)
        dockyard("volume", "rm", "bench-io")


def _cgroup_files(container_id: str) -> list[Path]:
    """The files a process writes its pid to, to join the container's cgroups (v1 or v2)."""
    found = sorted(Path("/sys/fs/cgroup").glob(f"*/dockyard/{container_id}/tasks"))
    return found or [Path("/sys/fs/cgroup/dockyard", container_id, "cgroup.procs")]


def _script(work: str, **names: str) -> str:
    return _TIMED.format(work=work.format(**names))


def _timed(command: list[str], env: dict[str, str]) -> float:
    """The seconds the script measured around its work."""
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    match = re.search(r"^elapsed_us (\d+)$", result.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no timing in the output of {command}: {result.stderr}")
    return int(match.group(1)) / 1e6


def report_volume_io(rows: list[tuple[str, dict[str, float]]]) -> None:
    print("\n### Volume I/O: the same work in a container on a volume, in its overlay root, "
          "on the host, and on the host from inside the container's cgroups\n")
    print("| workload | host | host in cgroups | volume | overlay | volume / host | "
          "volume / host in cgroups | overlay / host |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, seconds in rows:
        mib = WORKLOADS[name][1]
        unit = "MiB/s" if mib else "files/s"
        amount = mib or FILES
        rate = {side: amount / t for side, t in seconds.items()}
        print(f"| {name} | {rate['host']:.0f} {unit} | {rate['host in cgroups']:.0f} {unit} "
              f"| {rate['volume']:.0f} {unit} | {rate['overlay']:.0f} {unit} | "
              f"{rate['volume'] / rate['host']:.3f} | "
              f"{rate['volume'] / rate['host in cgroups']:.3f} | "
              f"{rate['overlay'] / rate['host']:.3f} |")


# ------------------------------------------------------------------- transfer


TRANSFER_FILES = 8
TRANSFER_MIB = 1024


def bench_volume_transfer(work: Path, env: dict[str, str], port: int,
                          samples: int) -> list[tuple[str, list[float]]]:
    """A 1 GiB volume pulled from the daemon's transfer listener into another state root
    (`dockyard volume pull`: export, HTTP on 127.0.0.1, import, every file hashed on both
    sides) vs `rsync -a` of its directory. The copy is removed after each sample, untimed."""
    def dockyard(*args: str, root: Path | None = None) -> str:
        run_env = env if root is None else {**env, "DOCKYARD_ROOT": str(root)}
        return subprocess.run([*DOCKYARD, *args], env=run_env, check=True,
                              capture_output=True, text=True).stdout

    dockyard("volume", "create", "bench-xfer")
    data = Path(json.loads(dockyard("volume", "inspect", "bench-xfer"))[0]["Mountpoint"])
    chunk = os.urandom(1 << 20)
    for index in range(TRANSFER_FILES):
        with (data / f"part-{index}").open("wb") as f:
            for _ in range(TRANSFER_MIB // TRANSFER_FILES):
                f.write(chunk)
    receiver = work / "receiver"
    copies = work / "rsync-copies"
    copies.mkdir(exist_ok=True)
    contenders: dict[str, tuple[Callable[[int], object], Callable[[int], object]]] = {
        "dockyard volume pull": (
            lambda n: dockyard("volume", "pull", f"copy-{n}", "--remote", "bench-xfer",
                               "--from", f"http://127.0.0.1:{port}", root=receiver),
            lambda n: dockyard("volume", "rm", f"copy-{n}", root=receiver)),
        "rsync -a": (
            lambda n: subprocess.run(["rsync", "-a", f"{data}/", str(copies / f"copy-{n}")],
                                     check=True),
            lambda n: shutil.rmtree(copies / f"copy-{n}")),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for sample in range(samples + 1):  # the first round warms caches, uncounted
            turn = list(contenders.items())
            for name, (copy, remove) in turn[::-1] if sample % 2 else turn:
                start = time.perf_counter()
                copy(sample)
                if sample:
                    times[name].append(time.perf_counter() - start)
                remove(sample)
    finally:
        dockyard("volume", "rm", "bench-xfer")
        shutil.rmtree(receiver, ignore_errors=True)
        shutil.rmtree(copies, ignore_errors=True)
    return list(times.items())


def bench_volumes(work: Path, env: dict[str, str], wanted: set[str], port: int,
                  samples: int) -> None:
    """Run and report the volume benchmarks named in `wanted`."""
    if "volume-io" in wanted:
        report_volume_io(bench_volume_io(env, samples))
    if "volume-transfer" in wanted:
        report_times("Transfer of a 1 GiB volume to another state root",
                     bench_volume_transfer(work, env, port, samples), "rsync -a")
