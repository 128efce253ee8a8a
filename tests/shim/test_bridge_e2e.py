"""Bridge networking end to end: containers reach each other, published ports answer.

The daemon runs in a private network namespace (`unshare -n`), which is the node as far
as it knows: the bridge and its private-range addresses never appear in the host's own
namespace. The test looks at that node through `nsenter`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard_shim.daemon.client import Client
from tests.shim.rootfs_dir import busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.e2e]

SERVE = ("mkdir -p /www && echo hello from $(hostname) > /www/index.html && "
         "exec httpd -f -p 8080 -h /www")


@dataclass
class Node:
    env: dict[str, str]
    pid: int

    def dockyard(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "dockyard_cli", *args], env=self.env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def inside(self, *command: str) -> str:
        """Run a command in the node's network namespace."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-n", *command],
                              capture_output=True, text=True, timeout=30, check=True).stdout

    def inspect(self, name: str) -> dict[str, object]:
        (record,) = json.loads(self.dockyard("inspect", name).stdout)
        assert isinstance(record, dict)
        return record


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.fail("util-linux's unshare and nsenter are needed")
    env = {**os.environ, "DOCKYARD_ROOT": str(tmp_path / "root"),
           "DOCKYARD_HOST": str(tmp_path / "dockyard.sock")}
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    with tarfile.open(tmp_path / "busybox.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    subprocess.run([sys.executable, "-m", "dockyard_cli", "import", str(tmp_path / "busybox.tar"),
                    "busybox"], env=env, check=True, capture_output=True)
    with (tmp_path / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen(
            ["unshare", "-n", "sh", "-c",
             f"ip link set lo up && exec {sys.executable} -m dockyard_cli shim"],
            env=env, stdout=log, stderr=log)
    client = Client(Path(env["DOCKYARD_HOST"]))
    deadline = time.monotonic() + 15
    while not client.ping():
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node = Node(env, daemon.pid)
    try:
        yield node
    finally:
        ids = subprocess.run([sys.executable, "-m", "dockyard_cli", "ps", "-a", "-q"],
                             env=env, capture_output=True, text=True, check=False).stdout
        if ids.split():
            subprocess.run([sys.executable, "-m", "dockyard_cli", "rm", "-f", *ids.split()],
                           env=env, capture_output=True, check=False)
        daemon.terminate()
        daemon.wait(timeout=30)


def test_containers_on_the_bridge_reach_each_other_by_address(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "server", "--network", "bridge", "--hostname",
                  "web", "busybox", "sh", "-c", SERVE)
    address = node.inspect("server")["ip_address"]
    assert isinstance(address, str)
    assert address.startswith("10.88.")
    result = node.dockyard("run", "--rm", "--network", "bridge", "busybox", "sh", "-c",
                           f"for i in 1 2 3 4 5; do wget -q -O- http://{address}:8080/ "
                           "&& exit 0; sleep 0.2; done; exit 1")
    assert result.stdout == "hello from web\n"


def test_a_published_port_answers_on_the_nodes_loopback(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "server", "--network", "bridge", "--hostname",
                  "web", "-p", "127.0.0.1:0:8080", "busybox", "sh", "-c", SERVE)
    (published,) = node.inspect("server")["published_ports"]  # type: ignore[misc]
    port = published["host_port"]
    assert port > 0
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = node.inside("/bin/busybox", "wget", "-q", "-O-",
                                 f"http://127.0.0.1:{port}/")
            break
        except subprocess.CalledProcessError:
            assert time.monotonic() < deadline, "the published port never answered"
            time.sleep(0.2)
    assert answer == "hello from web\n"


def test_a_stopped_container_gives_its_address_back(node: Node) -> None:
    node.dockyard("run", "-d", "--name", "brief", "--network", "bridge", "busybox", "sleep",
                  "60")
    assert node.inspect("brief")["ip_address"]
    links = node.inside("ip", "-o", "link", "show")
    assert links.count("dy") >= 1
    node.dockyard("stop", "-t", "1", "brief")
    assert node.inspect("brief")["ip_address"] == ""
    assert "dy" not in node.inside("ip", "-o", "link", "show").replace("dockyard0", "")
