"""A container's open-file limit is containerd's default (1024 soft, 524288 hard), never
above the node's own hard limit, in the main process and in exec'd ones.

The attack: a limit inherited from the runtime (often in the millions) lets a container
hold descriptors the node needs, and makes programs that close or poll every descriptor
up to the limit crawl.
"""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from dockyard_shim.runtime.process import NOFILE_HARD, NOFILE_SOFT
from tests.security.harness import Containers

LIMITS = "grep 'Max open files' /proc/self/limits"


def _limits(text: str) -> tuple[int, int]:
    soft, hard = text.split()[3:5]
    return int(soft), int(hard)


@pytest.mark.root
def test_the_main_and_an_execd_process_get_the_default_limit(containers: Containers) -> None:
    assert (NOFILE_SOFT, NOFILE_HARD) == (1024, 524288)
    _, node = resource.getrlimit(resource.RLIMIT_NOFILE)  # the runtime runs in this process
    expected = (min(1024, node), min(524288, node))
    code, out = containers.run(LIMITS)
    assert (code, _limits(out)) == (0, expected), out
    record = containers.start("exec sleep 60")
    try:
        code, out = containers.exec(record, LIMITS)
        assert (code, _limits(out)) == (0, expected), out
    finally:
        containers.runtime.kill(record.id, 9)


@pytest.mark.parametrize(("node", "container"), [
    ("100:2048", (1024, 2048)), ("100:512", (512, 512)), ("2000:2000", (1024, 2000))])
def test_the_limit_never_exceeds_the_nodes_hard_limit(node: str,
                                                       container: tuple[int, int]) -> None:
    probe = ("import resource; from dockyard_shim.runtime.process import limit_open_files; "
             "limit_open_files(); print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
    done = subprocess.run(["prlimit", f"--nofile={node}", sys.executable, "-c", probe],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert tuple(map(int, done.stdout.split())) == container
