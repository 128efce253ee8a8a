"""A node for end-to-end tests: its own state root, socket and daemon, and the busybox image.

The daemon is started by the test (not by the CLI's autostart) so the test can end it by
pid; every container is removed when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dockyard_shim.daemon.client import Client
from tests.shim.rootfs_dir import busybox_rootfs


@dataclass
class Node:
    env: dict[str, str]
    root: Path
    daemon: subprocess.Popen[bytes] | None = None

    def dockyard(self, *args: str, check: bool = False,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "dockyard_cli", *args], env=self.env,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def start_daemon(self) -> None:
        with (self.root / "daemon.log").open("ab") as log:
            self.daemon = subprocess.Popen([sys.executable, "-m", "dockyard_cli", "shim"],
                                           env=self.env, stdout=log, stderr=log)
        client = Client(Path(self.env["DOCKYARD_HOST"]))
        deadline = time.monotonic() + 15
        while not client.ping():  # a killed daemon's socket file may still be there
            assert self.daemon.poll() is None, (self.root / "daemon.log").read_text()
            assert time.monotonic() < deadline, (self.root / "daemon.log").read_text()
            time.sleep(0.05)

    def server_pid(self) -> int:
        """The keeper's child: the process that serves the API and parents the containers."""
        assert self.daemon is not None
        children = Path(f"/proc/{self.daemon.pid}/task/{self.daemon.pid}/children").read_text()
        (server,) = [int(pid) for pid in children.split()
                     if b"shim" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        return server

    def kill_daemon(self) -> None:
        """SIGKILL the whole daemon, server first: as a crash or an OOM kill would."""
        server = self.server_pid()
        os.kill(server, signal.SIGKILL)
        self.stop_daemon(signal.SIGKILL)
        end_orphan(server, signal.SIGKILL)

    def stop_daemon(self, signum: int = signal.SIGTERM) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signum)
        self.daemon.wait(timeout=15)
        self.daemon = None


@contextmanager
def busybox_node(tmp_path: Path, **extra_env: str) -> Iterator[Node]:
    """A running daemon under `tmp_path` with busybox:latest imported."""
    env = {**os.environ, "DOCKYARD_ROOT": str(tmp_path / "root"),
           "DOCKYARD_HOST": str(tmp_path / "dockyard.sock"), **extra_env}
    node = Node(env, tmp_path)
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    with tarfile.open(tmp_path / "busybox.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    node.dockyard("import", str(tmp_path / "busybox.tar"), "busybox:latest", check=True)
    node.start_daemon()
    try:
        yield node
    finally:
        if node.daemon is None:
            node.start_daemon()
        ids = node.dockyard("ps", "-a", "-q").stdout.split()
        if ids:
            node.dockyard("rm", "-f", *ids)
        node.stop_daemon()
        reap_adopted_zombies()


def end_orphan(pid: int, signum: int) -> None:
    """Signal a process the test started but whose parent is gone, and wait until it is."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # ours only if this process is a subreaper
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.02)


def reap_adopted_zombies() -> None:
    """Reap what a killed daemon left to this process: when the test process is a child
    subreaper (a `Runtime` opened in it makes it one), a dead daemon's containers and fork
    server are reparented to it, and end as its zombies."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if parent == me and state == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), 0)
