"""`dockyard up` / `dockyard down` end to end: manifests in, containers on a real daemon.

One private daemon (own DOCKYARD_ROOT and socket) serves the module, with the busybox image
of scripts/busybox_image.py; every test removes every container it made. The commands run
in-process through click's runner, so they need no registration on the `dockyard` group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dockyard_cli.up import down, up
from dockyard_shim.daemon.client import Client

pytestmark = [pytest.mark.root, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "standalone"


@dataclass
class Node:
    env: dict[str, str]
    root: Path
    client: Client

    def up(self, *args: str) -> Result:
        return CliRunner(env=self.env).invoke(up, list(args), catch_exceptions=False)

    def down(self, *args: str) -> Result:
        return CliRunner(env=self.env).invoke(down, list(args), catch_exceptions=False)

    def containers(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.client.call("GET", "/containers/json?all=1")}

    def logs(self, name: str) -> str:
        return b"".join(self.client.stream(f"/containers/{name}/logs")).decode()

    def wait(self, name: str) -> int:
        return int(self.client.call("POST", f"/containers/{name}/wait", timeout=30)
                   ["StatusCode"])

    def remove_all(self) -> None:
        for name in self.containers():
            self.client.call("DELETE", f"/containers/{name}?force=1")


def _dockyard(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dockyard_cli", *args], env=env, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("up")
    env = {**os.environ, "DOCKYARD_ROOT": str(tmp / "root"),
           "DOCKYARD_HOST": str(tmp / "dockyard.sock")}
    subprocess.run([sys.executable, str(REPO / "scripts" / "busybox_image.py"),
                    str(tmp / "busybox.tar")], check=True, capture_output=True, timeout=60)
    _dockyard(env, "import", str(tmp / "busybox.tar"), "busybox:latest")
    with (tmp / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "dockyard_cli", "shim"], env=env,
                                  stdout=log, stderr=log)
    client = Client(Path(env["DOCKYARD_HOST"]))
    try:
        deadline = time.monotonic() + 15
        while not client.ping():
            assert daemon.poll() is None, (tmp / "daemon.log").read_text()
            assert time.monotonic() < deadline, (tmp / "daemon.log").read_text()
            time.sleep(0.05)
        yield Node(env, tmp / "root", client)
    finally:
        if daemon.poll() is None:
            Node(env, tmp / "root", client).remove_all()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)


@pytest.fixture(autouse=True)
def clean(node: Node) -> Iterator[None]:
    yield
    node.remove_all()  # before the leak check looks for cgroups


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the standalone examples, to edit."""
    return Path(shutil.copytree(EXAMPLES, tmp_path / "project"))


NAMES = ["default.applet-count", "default.clock", "default.writer", "default.reader"]


def test_up_runs_the_examples_then_a_second_up_changes_nothing_and_down_removes_them(
        node: Node) -> None:
    result = node.up("-f", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"created {name}" for name in NAMES]
    found = node.containers()
    assert sorted(found) == sorted(NAMES)
    assert found["default.clock"]["status"] == "running"
    assert found["default.clock"]["config"]["memory_bytes"] == 32 << 20
    assert found["default.clock"]["labels"]["dockyard.dev/object"] == "default/clock"
    assert node.wait("default.applet-count") == 0
    assert "applets in /bin" in node.logs("default.applet-count")

    again = node.up("-f", str(EXAMPLES))
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [
        "unchanged default.applet-count: exited with code 0",
        "unchanged default.clock: running", "unchanged default.writer: running",
        "unchanged default.reader: running"]
    assert {n: r["id"] for n, r in node.containers().items()} == \
        {n: r["id"] for n, r in found.items()}

    gone = node.down("-f", str(EXAMPLES))
    assert gone.exit_code == 0, gone.output
    assert gone.stdout.splitlines() == [f"removed {name}" for name in NAMES]
    assert node.containers() == {}
    assert node.down("-f", str(EXAMPLES)).stdout.splitlines() == \
        [f"absent {name}: not on this machine" for name in NAMES]


def test_editing_one_manifest_replaces_exactly_that_container(node: Node,
                                                              project: Path) -> None:
    assert node.up("-f", str(project)).exit_code == 0
    before = {n: r["id"] for n, r in node.containers().items()}
    service = project / "service.yaml"
    service.write_text(service.read_text().replace("memory: 32Mi", "memory: 48Mi"))

    preview = node.up("-f", str(project), "--dry-run")
    assert "would replace default.clock: spec changed (memory_bytes)" in preview.stdout
    assert {n: r["id"] for n, r in node.containers().items()} == before

    result = node.up("-f", str(project))
    assert result.exit_code == 0, result.output
    assert "replaced default.clock: spec changed (memory_bytes)" in result.stdout
    assert sum(line.startswith("unchanged ") for line in result.stdout.splitlines()) == 3
    after = node.containers()
    assert {n: r["id"] for n, r in after.items() if n != "default.clock"} == \
        {n: i for n, i in before.items() if n != "default.clock"}
    assert after["default.clock"]["id"] != before["default.clock"]
    assert after["default.clock"]["status"] == "running"
    assert after["default.clock"]["config"]["memory_bytes"] == 48 << 20


def test_prune_removes_only_containers_whose_object_left_the_set(node: Node,
                                                                 project: Path) -> None:
    assert node.up("-f", str(project)).exit_code == 0
    (project / "batch.yaml").unlink()
    kept = node.up("-f", str(project))
    assert "not in the manifests, kept (remove with --prune): default.applet-count" in \
        kept.stderr
    assert "default.applet-count" in node.containers()
    pruned = node.up("-f", str(project), "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout.splitlines()[0] == \
        "removed default.applet-count: no longer in the manifests (--prune)"
    assert sorted(node.containers()) == sorted(set(NAMES) - {"default.applet-count"})


def test_a_stopped_always_container_is_started_again(node: Node) -> None:
    service = str(EXAMPLES / "service.yaml")
    assert node.up("-f", service).exit_code == 0
    node.client.call("POST", "/containers/default.clock/stop?t=0")  # by hand: no restart
    result = node.up("-f", service)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("started default.clock: exited with code 137; "
                                    "restartPolicy is Always")
    assert node.containers()["default.clock"]["status"] == "running"


def test_an_invalid_manifest_is_reported_with_its_path_and_nothing_changes(
        node: Node, project: Path) -> None:
    (project / "broken.yaml").write_text(
        "apiVersion: dockyard.dev/v1alpha1\nkind: Container\nmetadata: {name: broken}\n"
        "spec: {image: busybox:latest, restartPolicy: always}\n")
    result = node.up("-f", str(project))
    assert result.exit_code == 1
    assert "broken.yaml: spec.restartPolicy: Input should be" in result.stderr
    assert "nothing was changed (1 problem)" in result.stderr
    assert result.stdout == ""
    assert node.containers() == {}


def test_a_missing_image_is_named_and_nothing_changes(node: Node, project: Path) -> None:
    service = project / "service.yaml"
    service.write_text(service.read_text().replace("busybox:latest", "nginx:1.27"))
    result = node.up("-f", str(project))
    assert result.exit_code == 1
    assert "service.yaml: spec.image: no such image: nginx:1.27" in result.stderr
    assert node.containers() == {}


def test_a_name_taken_by_a_hand_made_container_is_refused(node: Node) -> None:
    node.client.call("POST", "/containers/create",
                     {"image": "busybox:latest", "name": "default.clock",
                      "command": ["true"]})
    result = node.up("-f", str(EXAMPLES / "service.yaml"))
    assert result.exit_code == 1
    assert "a container named default.clock is on this machine and dockyard up did not " \
           "make it" in result.stderr
    assert node.down("-f", str(EXAMPLES / "service.yaml")).exit_code == 1
    assert list(node.containers()) == ["default.clock"]


def test_a_local_volume_is_shared_between_two_containers(node: Node, tmp_path: Path) -> None:
    manifest = tmp_path / "shared.yaml"
    manifest.write_text("""\
apiVersion: dockyard.dev/v1alpha1
kind: Volume
metadata: {name: shared}
spec: {local: {}}
---
apiVersion: dockyard.dev/v1alpha1
kind: Container
metadata: {name: producer}
spec:
  image: busybox:latest
  command: [/bin/sh, -c, "echo hello from the producer > /data/message"]
  volumeMounts: [{name: shared, mountPath: /data}]
  network: {mode: None}
---
apiVersion: dockyard.dev/v1alpha1
kind: Container
metadata: {name: consumer}
spec:
  image: busybox:latest
  command: [/bin/sh, -c, "for i in $(seq 30); do [ -f /data/message ] && break; sleep 0.1; \
done; cat /data/message"]
  volumeMounts: [{name: shared, mountPath: /data, readOnly: true}]
  network: {mode: None}
""")
    result = node.up("-f", str(manifest))
    assert result.exit_code == 0, result.output
    assert node.wait("default.producer") == 0
    assert node.wait("default.consumer") == 0
    assert node.logs("default.consumer") == "hello from the producer\n"
    assert (node.root / "volumes" / "default.shared" / "_data" / "message").read_text() == \
        "hello from the producer\n"


@pytest.mark.parametrize("command", [up, down])
def test_both_commands_explain_themselves_with_examples(command: Any) -> None:
    result = CliRunner().invoke(command, ["--help"], prog_name=f"dockyard {command.name}")
    assert result.exit_code == 0
    assert f"Usage: dockyard {command.name} [OPTIONS]" in result.output
    assert "Examples:" in result.output
    assert f"dockyard {command.name} -f examples/standalone" in result.output


def test_a_directory_is_read_alone_unless_recursive(node: Node, tmp_path: Path) -> None:
    nested = tmp_path / "app" / "services"
    nested.mkdir(parents=True)
    shutil.copy(EXAMPLES / "service.yaml", nested)
    (tmp_path / "app" / "README.txt").write_text("not a manifest")
    flat = node.up("-f", str(tmp_path / "app"), "--dry-run")
    assert flat.exit_code == 1
    assert "no manifest files (*.yaml, *.yml, *.json) in" in flat.stderr
    deep = node.up("-f", str(tmp_path / "app"), "-R", "--dry-run")
    assert deep.exit_code == 0, deep.output
    assert deep.stdout == "would create default.clock\n"
    assert node.containers() == {}


def test_a_link_planted_in_a_local_volume_is_not_followed(node: Node, tmp_path: Path) -> None:
    """A container may turn a volume's subPath into a link to a host directory, for the next
    container to bind it (CVE-2017-1002101): the subPath resolves inside the volume."""
    manifest = tmp_path / "planted.yaml"
    manifest.write_text("""\
apiVersion: dockyard.dev/v1alpha1
kind: Volume
metadata: {name: planted}
spec: {local: {}}
---
apiVersion: dockyard.dev/v1alpha1
kind: Container
metadata: {name: planter}
spec:
  image: busybox:latest
  command: [/bin/sh, -c, "ln -s /etc /data/sub"]
  volumeMounts: [{name: planted, mountPath: /data}]
  network: {mode: None}
""")
    assert node.up("-f", str(manifest)).exit_code == 0
    assert node.wait("default.planter") == 0
    with manifest.open("a") as more:
        more.write("""\
---
apiVersion: dockyard.dev/v1alpha1
kind: Container
metadata: {name: victim}
spec:
  image: busybox:latest
  command: [/bin/sh, -c, "ls -A /data"]
  volumeMounts: [{name: planted, mountPath: /data, subPath: sub}]
  network: {mode: None}
""")
    result = node.up("-f", str(manifest))
    assert result.exit_code == 0, result.output
    assert node.wait("default.victim") == 0
    assert node.logs("default.victim") == ""  # the volume's own /etc, made empty
    node.remove_all()
    _dockyard(node.env, "volume", "rm", "default.planted")
