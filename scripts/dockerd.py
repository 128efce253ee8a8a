"""A private Docker engine (Debian's docker.io) for comparisons: parity tests, benchmarks.

It runs on a temporary root with its networking off (no bridge, no iptables, no
masquerading), so it changes nothing of the host's. The root is a short path under /tmp:
containerd's sockets live under it, and unix socket paths are limited to 104 bytes, which
pytest's temporary paths can exceed. Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DockerdUnavailableError(RuntimeError):
    """dockerd is not installed, or did not start (the message holds its log)."""


@contextmanager
def private_dockerd(timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start dockerd; yield the environment (`DOCKER_HOST`) for `docker` commands."""
    if shutil.which("dockerd") is None:
        raise DockerdUnavailableError("dockerd is not installed: run scripts/setup.sh "
                                 "(Debian's docker.io)")
    root = Path(tempfile.mkdtemp(prefix="dy-docker-", dir="/tmp"))
    env = {**os.environ, "DOCKER_HOST": f"unix://{root}/docker.sock"}
    with (root / "log").open("ab") as log:
        # Under a reaper of its own (see `_reap_under`): containerd's shims daemonize, and
        # must not be orphaned onto us when we are a child subreaper (a runtime test is).
        engine = subprocess.Popen(
            [sys.executable, __file__, "--reap", "dockerd", "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "pid"), "-H", env["DOCKER_HOST"], "--bridge=none",
             "--iptables=false", "--ip6tables=false", "--ip-masq=false",
             "--userland-proxy=false"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + timeout
        while subprocess.run(["docker", "info"], env=env, capture_output=True,
                             check=False).returncode != 0:
            if engine.poll() is not None or time.monotonic() > deadline:
                raise DockerdUnavailableError("dockerd did not start:\n" +
                                         (root / "log").read_text())
            time.sleep(0.2)
        yield env
    finally:
        engine.terminate()
        engine.wait(timeout=60)
        # Its overlay mounts, if it left any.
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _reap_under(command: list[str]) -> int:
    """Run `command` as a child subreaper would: every orphan of its tree comes to us and
    is reaped; SIGTERM is passed on; we return once the whole tree has ended."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = 0
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return code
        except InterruptedError:
            continue
        if pid == child.pid:
            child.returncode = code = os.waitstatus_to_exitcode(status)


if __name__ == "__main__" and sys.argv[1:2] == ["--reap"]:
    sys.exit(_reap_under(sys.argv[2:]))
