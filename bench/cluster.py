"""Dockyard as a cluster on this machine: startup at scale, and recovery from a lost node.

    .venv/bin/python bench/cluster.py [--containers 1000] [--rate 0] [--nodes 3] [--grace 40]

As root. It starts the test API server (no kube-apiserver can be installed here), a
private registry with a busybox image, one real node daemon and `dockyard agent` per
node, and the operator as a `kopf run` process, all on this machine; then:
- **scale**: creates N Containers (busybox `sleep`, restartPolicy Always) at once, or at
  a steady pace with `--rate` (as the Kubernetes density tests measure the pod-startup
  SLO), and follows every write to the API server; per container, the time from its create being
  acknowledged to its status first showing `Running`; p50, p99 and the time until all
  run, against the Kubernetes pod-startup SLO (p99 <= 5 s, image pull excluded: each node
  runs one container first, so the image is there); CPU seconds and peak RSS of the
  operator, the agents, the node daemons and the emulated API server over the burst (all
  share this machine's CPUs);
- **node loss**: SIGKILLs one node's agent (its daemon keeps serving volumes) and
  measures from the lease's last renewal to every container of that node Running on
  another one, against the target of grace + 10 s (the kubelet with taint-based
  eviction: about 350 s by default).
Everything it starts is stopped, and every container removed, at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from measure import percentile  # noqa: E402 -- bench/ is on the path
from tests.operator.cluster import (  # noqa: E402 -- the repository root is on the path now
    Cluster,
    container,
    running_cluster,
)

from dockyard_shim.cgroups import detect  # noqa: E402
from dockyard_shim.errors import ShimError  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _containers_cpu_seconds(parent: str) -> float:
    """CPU seconds spent so far in every container's cgroup under `parent`: their start-up
    (namespaces, mounts, exec) runs in their own processes, not in the daemon's."""
    driver = detect(parent=parent)
    total = 0
    for name in driver.names():
        with contextlib.suppress(OSError, ShimError):  # removed meanwhile
            total += driver.load(name).stats().cpu_usage_ns or 0
    return total / 1e9


class Follower:
    """Follows the API server's writes: when each Container was first seen bound (node
    and digest in its status) and Running."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.position = cluster.server.changes()[1]
        self.bound: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.where: dict[str, str] = {}

    def poll(self) -> None:
        events, self.position = self.cluster.server.changes(self.position)
        now = time.monotonic()
        for kind, obj in events:
            if obj.get("kind") != "Container":
                continue
            status = obj.get("status") or {}
            name = obj["metadata"]["name"]
            if kind != "DELETED" and status.get("node") and status.get("imageDigest"):
                self.bound.setdefault(name, now)
            if kind == "DELETED":
                self.running.pop(name, None)
                self.where.pop(name, None)
            elif status.get("phase") == "Running" and status.get("pid"):
                if self.where.get(name) != status.get("node"):
                    self.running[name] = now
                    self.where[name] = str(status.get("node"))
            elif status.get("node") != self.where.get(name):
                self.running.pop(name, None)
                self.where.pop(name, None)

    async def until(self, done: Any, timeout: float, what: str) -> None:
        """Follow the writes until `done()`; say every 10 s how far `what` got."""
        start = time.monotonic()
        said = start
        while not done():
            now = time.monotonic()
            if now - start > timeout:
                raise SystemExit(f"timed out waiting for {what}\n{self.cluster.logs()[-6000:]}")
            if now - said > 10:
                said = now
                print(f"... {what}: {len(self.running)} Running after {now - start:.0f} s",
                      file=sys.stderr, flush=True)
            await asyncio.sleep(0.02)
            self.poll()


async def _warm_up(cluster: Cluster, follower: Follower) -> None:
    """One container per node first, so every node has pulled the image."""
    names = [f"warm-{node}" for node in cluster.nodes]
    for node, name in zip(cluster.nodes, names, strict=True):
        await cluster.apply(container(name, cluster.image, args=["sleep", "600"],
                                      nodeName=node))
    await follower.until(lambda: all(name in follower.running for name in names), 180,
                         "one container per node (image pulls)")
    for name in names:
        await cluster.delete(name)


async def bench_scale(cluster: Cluster, follower: Follower, count: int, rate: float,
                      pids: dict[str, int]) -> set[str]:
    """Create `count` containers, at once or `rate` a second, and report; their names."""
    cpu = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    parent = os.environ["DOCKYARD_CGROUP_PARENT"]
    containers_cpu = _containers_cpu_seconds(parent)
    names = [f"c{i:04d}" for i in range(count)]
    acknowledged: dict[str, float] = {}
    gate = asyncio.Semaphore(64)  # requests in flight, as a client's connection pool

    async def create(index: int, name: str) -> None:
        if rate:
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        async with gate:
            await cluster.apply(container(name, cluster.image, args=["sleep", "3600"],
                                          restartPolicy="Always"))
            acknowledged[name] = time.monotonic()

    started = time.monotonic()
    creating = asyncio.gather(*(create(i, name) for i, name in enumerate(names)))
    await follower.until(lambda: creating.done() and all(
        name in follower.running for name in names), 1800, f"{count} containers")
    await creating
    latencies = [follower.running[name] - acknowledged[name] for name in names]
    binding = [follower.bound[name] - acknowledged[name] for name in names]
    last = max(follower.running[name] for name in names) - started
    pace = f"{rate:g} a second" if rate else "at once"
    print(f"\n### {count} Containers created {pace} on {len(cluster.nodes)} nodes\n")
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| create → Running p50 | {statistics.median(latencies):.2f} s | |")
    print(f"| create → Running p99 | {percentile(latencies, 0.99):.2f} s | ≤ 2 s "
          "(Kubernetes SLO ≤ 5 s) |")
    print(f"| create → Running max | {max(latencies):.2f} s | |")
    print(f"| of which create → bound (operator) p50, p99 | {statistics.median(binding):.2f} s, "
          f"{percentile(binding, 0.99):.2f} s | |")
    print(f"| first create → last acknowledged | {max(acknowledged.values()) - started:.1f} s "
          "| |")
    print(f"| first create → all Running | {last:.1f} s | |")
    print(f"| throughput | {count / last:.1f} containers/s | |")
    print("\n| process | CPU seconds over the burst | peak RSS |")
    print("|---|---:|---:|")
    for name, pid in pids.items():
        print(f"| {name} | {_cpu_seconds(pid) - cpu[name]:.1f} | "
              f"{_peak_rss_mib(pid):.0f} MiB |")
    print(f"| the {count} containers (their start-up) | "
          f"{_containers_cpu_seconds(parent) - containers_cpu:.1f} | |")
    placed: dict[str, int] = {}
    for name in names:
        placed[follower.where[name]] = placed.get(follower.where[name], 0) + 1
    print(f"\nPlacement: {', '.join(f'{n}: {c}' for n, c in sorted(placed.items()))}")
    return set(names)


async def bench_node_loss(cluster: Cluster, follower: Follower, grace: float,
                          names: set[str]) -> None:
    victim = max(cluster.nodes, key=lambda n: sum(1 for w in follower.where.values() if w == n))
    moved = [name for name, node in follower.where.items() if node == victim and name in names]
    cluster.nodes[victim].kill_agent()
    killed = time.monotonic()
    lease = cluster.server.get("leases", victim, "dockyard-system",
                               group="coordination.k8s.io") or {}
    renewed = datetime.datetime.fromisoformat(
        lease["spec"]["renewTime"].replace("Z", "+00:00"))
    since_renewal = (datetime.datetime.now(datetime.UTC) - renewed).total_seconds()
    await follower.until(lambda: all(follower.where.get(name) not in (None, victim)
                                     for name in moved), grace + 1800,
                         f"the {len(moved)} containers of {victim} elsewhere")
    recovered = max(follower.running[name] for name in moved) - killed + since_renewal
    print(f"\n### Node loss: the agent of {victim} killed, {len(moved)} containers on it\n")
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| last heartbeat → all {len(moved)} Running elsewhere | {recovered:.1f} s | "
          f"≤ grace + 10 s = {grace + 10:.0f} s (kubelet default ≈ 350 s) |")
    print(f"| of which the grace | {grace:.0f} s | |")
    cluster.nodes[victim].start_agent()  # it fences what was moved, on its way back


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0, metavar="PER_SECOND",
                        help="create the containers at this pace (default: all at once); "
                        "the Kubernetes SLO is measured at a steady pace")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--grace", type=float, default=40.0,
                        help="seconds a node may miss its heartbeat (the default)")
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="keep the operator's and the agents' logs in DIR")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the benchmark runs containers: run it as root")
    names = tuple(f"n{i + 1}" for i in range(args.nodes))
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print(f"# Dockyard cluster benchmark ({time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} CPUs, kernel {os.uname().release})")
    # The nodes' containers go under a cgroup parent of the benchmark's own, removed at the
    # end (it must be empty by then).
    parent = os.environ["DOCKYARD_CGROUP_PARENT"] = f"dockyard-bench-{os.getpid()}"
    # SIGTERM (or Ctrl-C) cancels the run, so that everything it started is stopped.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await _run(args, names)
    finally:
        detect(parent=parent).delete_parent()


async def _run(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-cluster-") as tmp:
        # The agents renew and poll as in production (10 s, 1 s), not as in the tests.
        async with running_cluster(Path(tmp), names, operator=False,
                                   grace=datetime.timedelta(seconds=args.grace),
                                   renew_every=10.0, poll_every=1.0) as cluster:
            operator = cluster.start_operator("operator")
            follower = Follower(cluster)
            await _warm_up(cluster, follower)
            pids = {"operator": operator.pid}
            pids.update({f"agent {node.name}": node.agent.pid
                         for node in cluster.nodes.values() if node.agent is not None})
            pids.update({f"daemon {node.name}": node.node.server_pid()
                         for node in cluster.nodes.values()})
            # Not Dockyard's: the emulated API server, which a real cluster runs elsewhere.
            pids["API server (emulator) + benchmark"] = os.getpid()
            created = await bench_scale(cluster, follower, args.containers, args.rate, pids)
            try:
                await bench_node_loss(cluster, follower, args.grace, created)
            finally:
                operator.send_signal(signal.SIGTERM)
                if args.logs is not None:
                    args.logs.mkdir(parents=True, exist_ok=True)
                    for log in Path(tmp).glob("*/agent.log"):
                        shutil.copy(log, args.logs / f"agent-{log.parent.name}.log")
                    for log in Path(tmp).glob("*.log"):
                        shutil.copy(log, args.logs / log.name)


if __name__ == "__main__":
    asyncio.run(main())
