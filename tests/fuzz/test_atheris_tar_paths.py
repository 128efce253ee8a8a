"""The atheris target for the archive path resolver, run briefly so CI exercises it.

A few thousand inputs from a fixed seed, in a child process (libFuzzer ends the process it
runs in); the target removes its own sandbox and writes any crash under `tmp_path`. For a
long run, see the target's docstring or docs/testing.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).with_name("atheris_tar_paths.py")
RUNS = 2000


def test_the_path_resolver_target_holds_its_invariants_for_a_few_thousand_inputs(
        tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(TARGET), f"-runs={RUNS}", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"Done {RUNS} runs" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
