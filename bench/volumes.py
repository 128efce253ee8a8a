"""Volume benchmarks: I/O inside a container on a volume vs the same directory from the host.

The same static busybox runs the same script on both sides (its sh, dd, cp, ls, rm, named
as `busybox APPLET`: the host's own are other programs): on the host, in the volume's own
data directory; in a container (through `dockyard exec`), on the volume mounted at /vol,
and for contrast in the container's overlay root filesystem (/scratch). The script times
its work itself, in microseconds (busybox adjtimex), so neither `exec` nor process
start-up is counted. Host and volume swap the same two files sample by sample and the
sides take turns in a rotating order, so that neither where a file lies on the virtual
disk nor a noisy spell of it favours one side. Throughput ratios: volume / host (the
physical limit is 1.0) and overlay / host.

Workloads:
- write 1 GiB, buffered: dd bs=1M, then fsync (conv=fsync): the data reaches the disk;
- write 1 GiB, direct: dd oflag=direct (no page cache);
- read 4 GiB, buffered: the 1 GiB file just written, four times, from the page cache
  (the VFS path itself);
- read 1 GiB, direct: dd iflag=direct;
- small files: a tree of small files copied (cp -r: create and write each), listed
  (ls -lR: stat each) and deleted (rm -r), all syscalls, on two filesystems:
  - the disk's, where the volume's directory lives (3,000 files). On these machines it
    is ext4 without a journal, whose inode allocator skips every inode deleted in the
    last minutes by reading its on-disk record (`recently_deleted`): a create costs 15 to
    400 us depending on how many files anyone deleted lately, which no side controls;
  - tmpfs (a `--tmpfs-size` volume, whose mount the host side uses too; 20,000 files):
    the same work without the disk filesystem's noise, which shows what the bind mount,
    the namespaces and the cgroups themselves cost. The overlay root has no tmpfs side.
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
from dataclasses import dataclass
from pathlib import Path

from measure import report_times

DOCKYARD = [sys.executable, "-m", "dockyard_cli"]
BUSYBOX = "/bin/busybox"
CONTAINER = "dockyard-bench-io"
_DD = "busybox dd bs=1M 2>/dev/null"
_STORM = ("busybox cp -r {dir}/storm-src {dir}/many-{side} && "
          "busybox ls -lR {dir}/many-{side} > /dev/null && busybox rm -r {dir}/many-{side}")
STORM_FILES = {"disk": 3000, "tmpfs": 20000}


@dataclass(frozen=True)
class Workload:
    script: str
    """busybox commands; {dir}: the side's directory, {f}: its own file, {side}: its name"""
    mib: int = 0
    """MiB moved, for a rate in MiB/s; 0: a rate in files/s"""
    where: str = "disk"
    """the volume's filesystem: `disk` (the state root's) or `tmpfs`"""


WORKLOADS: dict[str, Workload] = {
    "write 1 GiB, buffered + fsync": Workload(
        f"{_DD} if=/dev/zero of={{f}} count=1024 conv=fsync", 1024),
    "write 1 GiB, direct": Workload(f"{_DD} if=/dev/zero of={{f}} count=1024 oflag=direct",
                                    1024),
    "read 4 GiB, buffered": Workload(" && ".join([f"{_DD} if={{f}} of=/dev/null"] * 4), 4096),
    "read 1 GiB, direct": Workload(f"{_DD} if={{f}} of=/dev/null iflag=direct", 1024),
    f"{STORM_FILES['disk']:,} small files on disk: copy, stat, delete": Workload(_STORM),
    f"{STORM_FILES['tmpfs']:,} small files on tmpfs: copy, stat, delete": Workload(
        _STORM, where="tmpfs"),
}
_Side = Callable[[Workload, int], float | None]
"""Runs a workload's sample N on one side: the seconds it took (None: not on this side)."""
_TIMED = ("now() {{ busybox adjtimex | busybox awk '/tv_sec/ {{s = $2}} /tv_usec/ {{u = $2}} "
          "END {{printf \"%d%06d\", s, u}}'; }}; t0=$(now); {work}; t1=$(now); "
          "echo elapsed_us $((t1 - t0))")
_SEED = ("busybox mkdir {dir}/storm-src && cd {dir}/storm-src && i=0; "
         "while [ $i -lt {files} ]; do echo $i > f$i; i=$((i+1)); done")


def bench_volume_io(env: dict[str, str], samples: int
                    ) -> list[tuple[str, dict[str, float | None]]]:
    """For each workload: the median seconds of each side (None: the side has no such
    filesystem)."""
    def dockyard(*args: str) -> str:
        return subprocess.run([*DOCKYARD, *args], env=env, check=True, capture_output=True,
                              text=True).stdout

    dockyard("volume", "create", "bench-io")
    dockyard("volume", "create", "--tmpfs-size", "1g", "bench-io-tmpfs")
    dockyard("run", "-d", "--name", CONTAINER, "-v", "bench-io:/vol", "-v",
             "bench-io-tmpfs:/tvol", "busybox", "sleep", "86400")
    try:
        data = {where: json.loads(dockyard("volume", "inspect", name))[0]["Mountpoint"]
                for where, name in (("disk", "bench-io"), ("tmpfs", "bench-io-tmpfs"))}
        mounted = {"disk": "/vol", "tmpfs": "/tvol"}
        in_container = [*DOCKYARD, "exec", CONTAINER, "busybox", "sh", "-c"]
        for where, files in STORM_FILES.items():  # host and volume share the directory
            subprocess.run([BUSYBOX, "sh", "-c", _SEED.format(dir=data[where], files=files)],
                           check=True)
        dockyard("exec", CONTAINER, "busybox", "sh", "-c",
                 "busybox mkdir -p /scratch && "
                 + _SEED.format(dir="/scratch", files=STORM_FILES["disk"]))
        # The host, but from inside the container's cgroups: a process there pays the
        # memory cgroup's charge for every inode and dentry it makes, which the bind mount
        # has nothing to do with. Against this side, the volume's ratio is the mount's own.
        container_id = json.loads(dockyard("inspect", CONTAINER))[0]["id"]
        join = " ".join(str(f) for f in _cgroup_files(env, container_id))
        in_cgroups = [BUSYBOX, "sh", "-c", f'for f in {join}; do echo $$ > "$f"; done; '
                      'exec busybox sh -c "$0"']
        # Host and volume share the directory, and swap its two files sample by sample:
        # where a file's blocks lie on the (virtual) disk then favours neither side.
        sides: dict[str, _Side] = {
            "host": lambda w, n: _timed([BUSYBOX, "sh", "-c", _script(
                w, dir=data[w.where], f=f"{data[w.where]}/io-{n % 2}.bin", side="host")],
                env),
            "host in cgroups": lambda w, n: _timed([*in_cgroups, _script(
                w, dir=data[w.where], f=f"{data[w.where]}/io-{n % 2}.bin",
                side="cgroups")], env),
            "volume": lambda w, n: _timed([*in_container, _script(
                w, dir=mounted[w.where], f=f"{mounted[w.where]}/io-{(n + 1) % 2}.bin",
                side="volume")], env),
            "overlay": lambda w, n: None if w.where != "disk" else _timed([
                *in_container, _script(w, dir="/scratch", f=f"/scratch/io-{n % 2}.bin",
                                       side="overlay")], env),
        }
        results = []
        for name, workload in WORKLOADS.items():
            times: dict[str, list[float | None]] = {side: [] for side in sides}
            order = list(sides)
            # The small-file storms are short and vary most: three times the samples.
            for sample in range(samples if workload.mib else 3 * samples):
                turn = sample % len(order)
                for side in order[turn:] + order[:turn]:  # rotating turns
                    times[side].append(sides[side](workload, sample))
            results.append((name, {side: _median(v) for side, v in times.items()}))
        return results
    finally:
        dockyard("rm", "-f", CONTAINER)
        dockyard("volume", "rm", "bench-io", "bench-io-tmpfs")


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _cgroup_files(env: dict[str, str], container_id: str) -> list[Path]:
    """The files a process writes its pid to, to join the container's cgroups (v1 or v2)."""
    parent = env.get("DOCKYARD_CGROUP_PARENT") or "dockyard"
    found = sorted(Path("/sys/fs/cgroup").glob(f"*/{parent}/{container_id}/tasks"))
    return found or [Path("/sys/fs/cgroup", parent, container_id, "cgroup.procs")]


def _script(workload: Workload, **names: str) -> str:
    return _TIMED.format(work=workload.script.format(**names))


def _timed(command: list[str], env: dict[str, str]) -> float:
    """The seconds the script measured around its work."""
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    match = re.search(r"^elapsed_us (\d+)$", result.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no timing in the output of {command}: {result.stderr}")
    return int(match.group(1)) / 1e6


def report_volume_io(rows: list[tuple[str, dict[str, float | None]]]) -> None:
    print("\n### Volume I/O: the same work in a container on a volume, in its overlay root, "
          "on the host, and on the host from inside the container's cgroups\n")
    print("| workload | host | host in cgroups | volume | overlay | volume / host | "
          "volume / host in cgroups | overlay / host |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, seconds in rows:
        workload = WORKLOADS[name]
        unit = "MiB/s" if workload.mib else "files/s"
        amount = workload.mib or STORM_FILES[workload.where]
        rate = {side: None if t is None else amount / t for side, t in seconds.items()}

        def shown(side: str, rate: dict[str, float | None] = rate, unit: str = unit) -> str:
            value = rate[side]
            return "-" if value is None else f"{value:.0f} {unit}"

        def ratio(side: str, base: str, rate: dict[str, float | None] = rate) -> str:
            top, bottom = rate[side], rate[base]
            return "-" if top is None or bottom is None else f"{top / bottom:.3f}"

        print(f"| {name} | {shown('host')} | {shown('host in cgroups')} | {shown('volume')} "
              f"| {shown('overlay')} | {ratio('volume', 'host')} | "
              f"{ratio('volume', 'host in cgroups')} | {ratio('overlay', 'host')} |")


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
