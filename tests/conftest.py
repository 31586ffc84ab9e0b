import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args, check=True, env=None, timeout=900):
    """Run the installed console script; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "re_analysis.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"re-analysis {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Targets (no defense, Random Erasing) and the evaluation model, trained once with CLI defaults."""
    root = tmp_path_factory.mktemp("trained")
    runs = {}
    for name, extra in (("none", []), ("random-erasing", ["--defense", "random-erasing"]),
                        ("eval", ["--role", "eval"])):
        out = root / name
        run_cli("train", "--seed", 0, "--out", out, "--quiet", *extra)
        runs[name] = out
    return runs
