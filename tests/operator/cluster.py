"""A Dockyard cluster on one machine, for end-to-end tests: the test API server, the
operator (in the test's event loop), and nodes that each run a real node daemon and a
node agent (`dockyard agent`, a process of its own, so a test can SIGKILL it).

Each node has its own state root, socket and name; they share the machine's kernel and
the test run's cgroup parent. The agents find the API server through a kubeconfig, as
they would in a real cluster. Images come from a real registry on 127.0.0.1: the harness
pushes a busybox image there, and the nodes pull it by the digest the operator pins.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dockyard_operator.app import Webhooks
from dockyard_operator.app import registry as operator_registry
from dockyard_shim.daemon.client import Client
from tests.kube.admission import UserInfo
from tests.kube.apiserver import DEFAULT_USERS, ApiServer
from tests.kube.kopfrun import MERGE, running, serving
from tests.registry import Registry, running_registry
from tests.shim.nodes import Node
from tests.shim.rootfs_dir import busybox_rootfs

GRACE = datetime.timedelta(seconds=3)
"""How long a node may miss its heartbeat in the node-loss tests (40 s in production).
Tests that load the machine (200 containers starting on two CPUs) give more: a renewal
that waits for a CPU must not count as a lost node there."""
RENEW_EVERY = 0.5
PEERING_LIFETIME = 5
"""How long a dead operator replica's peering record holds the others back here."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ClusterNode:
    """One node: its daemon (`node`) and its agent process."""

    name: str
    node: Node
    kubeconfig: Path
    agent: subprocess.Popen[bytes] | None = None
    cpus: str = "2"
    renew_every: float = RENEW_EVERY
    poll_every: float = 0.2
    metrics_port: int = field(default_factory=_free_port)

    @property
    def client(self) -> Client:
        return Client(self.node.env["DOCKYARD_HOST"])

    def start_agent(self) -> None:
        command = [sys.executable, "-m", "dockyard_cli", "--log-format", "console", "agent",
                   "--node", self.name, "--renew-every", str(self.renew_every),
                   "--poll-every", str(self.poll_every), "--cpus", self.cpus, "--memory", "4Gi",
                   "--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        with (self.node.root / "agent.log").open("ab") as log:
            self.agent = subprocess.Popen(command, stdout=log, stderr=log, env={
                **self.node.env, "KUBECONFIG": str(self.kubeconfig)})

    def kill_agent(self, signum: int = signal.SIGKILL) -> None:
        assert self.agent is not None
        self.agent.send_signal(signum)
        self.agent.wait(timeout=20)
        self.agent = None

    async def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the agent's /metrics, or None if it has none."""
        async with aiohttp.ClientSession() as client, \
                client.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def containers(self) -> dict[str, dict[str, Any]]:
        """The daemon's containers by name."""
        return {c["name"]: c for c in self.client.call("GET", "/containers/json?all=1")}

    def log(self) -> str:
        return (self.node.root / "agent.log").read_text(errors="replace")


@dataclass
class Cluster:
    server: ApiServer
    http: aiohttp.ClientSession
    """A client of the API server, as a user's kubectl."""
    registry: Registry
    image: str
    """The busybox image's reference in the registry (a tag)."""
    work: Path
    kubeconfig: Path
    grace: datetime.timedelta
    nodes: dict[str, ClusterNode] = field(default_factory=dict)
    operators: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def container(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.server.get("containers", name, namespace)

    def status(self, name: str) -> dict[str, Any]:
        found = self.container(name)
        return dict((found or {}).get("status") or {})

    async def apply(self, body: dict[str, Any], plural: str = "containers") -> dict[str, Any]:
        """Create an object (as `kubectl create`); the stored object."""
        namespace = body["metadata"]["namespace"]
        async with self.http.post(f"/apis/dockyard.dev/v1alpha1/namespaces/{namespace}/"
                                  f"{plural}", json=body) as response:
            answer: dict[str, Any] = await response.json()
            assert response.status in (200, 201), answer  # the emulator answers 200
            return answer

    async def patch(self, name: str, body: dict[str, Any]) -> None:
        async with self.http.patch(
                f"/apis/dockyard.dev/v1alpha1/namespaces/default/containers/{name}",
                json=body, headers=MERGE) as response:
            assert response.status == 200, await response.text()

    async def delete(self, name: str) -> None:
        async with self.http.delete(
                f"/apis/dockyard.dev/v1alpha1/namespaces/default/containers/{name}") as response:
            assert response.status == 200, await response.text()

    async def request(self, method: str, url: str, body: dict[str, Any] | None = None, *,
                      user: str = "test", expect: int | None = None) -> dict[str, Any]:
        """Any API request as `user` (a merge patch for PATCH); the answer. Without
        `expect`, any success is fine; with it, that status code must come."""
        headers = {"Authorization": f"Bearer {user}",  # the harness's tokens are user names
                   **(MERGE if method == "PATCH" else {})}
        async with self.http.request(method, url, json=body, headers=headers) as response:
            answer: dict[str, Any] = await response.json()
            if expect is None:
                assert response.status < 300, answer
            else:
                assert response.status == expect, answer
            return answer

    def start_operator(self, name: str) -> subprocess.Popen[bytes]:
        """An operator replica as its own process (`kopf run`, peering on), logging to
        `<work>/<name>.log`."""
        command = [sys.executable, "-m", "kopf", "run", "--all-namespaces",
                   "--log-format", "plain", "-m", "dockyard_operator.main"]
        with (self.work / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=log, env={
                **os.environ, "KUBECONFIG": str(self.kubeconfig),
                "DOCKYARD_NODE_GRACE": str(self.grace.total_seconds()),
                "DOCKYARD_PEERING_LIFETIME": str(PEERING_LIFETIME),
                "DOCKYARD_METRICS_LISTEN": "127.0.0.1:0"})  # replicas share the machine
        self.operators[name] = process
        return process

    def operator_log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        agents = "\n".join(f"--- agent {n.name}\n{n.log()[-4000:]}"
                           for n in self.nodes.values())
        operators = "\n".join(f"--- operator {name}\n{self.operator_log(name)[-4000:]}"
                              for name in self.operators)
        phases = collections.Counter(
            (c.get("status") or {}).get("phase") for c in self.server.all("containers"))
        odd = [(c["metadata"]["name"], c.get("status")) for c in self.server.all("containers")
               if (c.get("status") or {}).get("phase") != "Running"][:5]
        return f"{agents}\n{operators}\n--- phases {dict(phases)}; not running: {odd}"


async def eventually(cluster: Cluster, check: Callable[[], object], timeout: float = 30
                     ) -> None:
    """Wait until `check()` is true; fail with the agents' logs if it never is."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never happened\n{cluster.logs()}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, names: tuple[str, ...] = ("n1", "n2", "n3"), *,
                          operator: bool = True, grace: datetime.timedelta = GRACE,
                          renew_every: float = RENEW_EVERY, poll_every: float = 0.2,
                          webhooks: bool = False,
                          users: Mapping[str, tuple[str, ...]] | None = None
                          ) -> AsyncIterator[Cluster]:
    """The API server, one node per name (each with daemon and agent), and the operator in
    the test's loop; without `operator`, the test starts replicas as processes
    (`Cluster.start_operator`) and the harness ends them. The agents renew their leases
    and poll their daemons faster than in production by default, for the short grace of
    the tests. With `webhooks`, the operator serves its admission webhooks (plain HTTP on
    loopback) and kopf registers them with the API server, which then calls them;
    `users` (name → groups) adds users to the API server, each with its name as token."""
    known = {**DEFAULT_USERS, **{name: UserInfo(name, tuple(groups))
                                 for name, groups in (users or {}).items()}}
    with running_registry(tmp_path / "registry") as registry:
        async with serving(users=known) as (server, http):
            url = str(http.url).rstrip("/")
            kubeconfig = _kubeconfig(tmp_path / "kubeconfig", url)
            token = tmp_path / "transfer.token"
            token.write_text(secrets.token_hex(32))
            token.chmod(0o600)
            nodes = {name: _node(tmp_path / name, name, kubeconfig, token) for name in names}
            for node in nodes.values():
                node.renew_every, node.poll_every = renew_every, poll_every
            try:
                image = _push_busybox(tmp_path, nodes[names[0]].node, registry)
                cluster = Cluster(server, http.client, registry, image, tmp_path, kubeconfig,
                                  grace, nodes)
                await _create(http.client, "/apis/kopf.dev/v1/clusterkopfpeerings",
                              {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                               "metadata": {"name": "dockyard"}})
                admission = _webhooks() if webhooks else None
                in_loop = running(operator_registry(grace=grace, webhooks=admission), url) \
                    if operator else contextlib.nullcontext()
                async with in_loop:
                    for node in nodes.values():
                        node.start_agent()
                    await eventually(cluster, lambda: all(
                        (server.get("dockyardnodes", n) or {})
                        .get("status", {}).get("phase") == "Ready" for n in names))
                    try:
                        yield cluster
                    finally:
                        await asyncio.to_thread(_stop_processes, cluster)
            finally:
                await asyncio.to_thread(_stop_nodes, nodes.values())


def _webhooks() -> Webhooks:
    """The operator's admission server on loopback, kopf keeping the API server's webhook
    configurations (`dockyard.dev`) pointed at it."""
    port = _free_port()
    return Webhooks(kopf.WebhookServer(addr="127.0.0.1", port=port, host="127.0.0.1",
                                       insecure=True), managed="dockyard.dev")


def _node(root: Path, name: str, kubeconfig: Path, token: Path) -> ClusterNode:
    root.mkdir(parents=True)
    env = {**os.environ, "DOCKYARD_ROOT": str(root / "root"),
           "DOCKYARD_HOST": str(root / "dockyard.sock"),
           # Each node's shim serves its volumes to the others (migration), on loopback.
           "DOCKYARD_TRANSFER_LISTEN": f"127.0.0.1:{_free_port()}",
           "DOCKYARD_TRANSFER_TOKEN_FILE": str(token)}
    node = Node(env, root)
    node.start_daemon()
    return ClusterNode(name, node, kubeconfig)


def _stop_processes(cluster: Cluster) -> None:
    """The operator replicas, then the agents: each asked to stop (SIGTERM), as kubelet
    asks a pod."""
    for process in cluster.operators.values():
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
    for node in cluster.nodes.values():
        if node.agent is not None:
            node.kill_agent(signal.SIGTERM)


async def _create(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with http.post(url, json=body) as response:
        assert response.status in (200, 201), await response.text()


def _stop_nodes(nodes: Any) -> None:
    for cluster_node in nodes:
        node = cluster_node.node
        if node.daemon is None:
            continue
        ids = node.dockyard("ps", "-a", "-q").stdout.split()
        if ids:
            node.dockyard("rm", "-f", *ids)
        node.stop_daemon()


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": url}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
    return path


def _push_busybox(tmp_path: Path, node: Node, registry: Registry) -> str:
    """Make a busybox image on `node` and push it to the registry; its reference."""
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    with tarfile.open(tmp_path / "busybox.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    node.dockyard("import", str(tmp_path / "busybox.tar"), "busybox:latest", check=True)
    reference = f"{registry.host}/library/busybox:1"
    node.dockyard("push", "busybox:latest", reference, check=True)
    node.dockyard("rmi", "busybox:latest", check=True)  # every node pulls it the same way
    return reference


def container(name: str, image: str, *, args: list[str], **spec: Any) -> dict[str, Any]:
    """A Container manifest, with `spec` fields in the API's camelCase."""
    return {"apiVersion": "dockyard.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"image": image, "args": args, "network": {"mode": "None"}, **spec}}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
