import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _fonts_dir() -> Path:
    from re_analysis.data import glyphs

    return Path(glyphs.FONT_PACKAGES["fonts-aenigma"])


# the glyphs dataset's fonts (Debian's fonts-aenigma), which `make test` installs when run as root
needs_fonts = pytest.mark.skipif(not _fonts_dir().is_dir(), reason="Debian package fonts-aenigma not installed "
                                 "(make test installs it when run as root)")


def run_cli(*args, check=True, env=None, timeout=900):
    """Run the installed console script; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "re_analysis.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    return checked(proc, args, check)


def checked(proc: subprocess.CompletedProcess, args, check: bool) -> subprocess.CompletedProcess:
    """``proc`` itself, or an AssertionError with its stderr when ``check`` and it failed."""
    if check and proc.returncode != 0:
        raise AssertionError(f"re-analysis {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def call_cli(*args, check=True):
    """The CLI's ``main`` in this process: the same parsing, messages and exit codes as
    :func:`run_cli`, without a fresh interpreter's 6-10 s of torch and torchvision imports
    (measured: ``python -X importtime -m re_analysis.cli``). For tests of the CLI's wiring
    and its errors; tests that compare runs across processes keep :func:`run_cli`."""
    from re_analysis.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return checked(subprocess.CompletedProcess(["re-analysis", *map(str, args)], code, out.getvalue(), err.getvalue()),
                   args, check)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: the CPUs this process may use (affinity and the cgroup's CPU quota), not the
    host's core count, which pytest-xdist reads through psutil when it is installed: a
    2-CPU container on a 64-core host would otherwise start 64 workers.
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still overrides it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to read
    return max(1, cpus)


# Test files in the order pytest-xdist should hand them out (``--dist loadfile
# --no-loadscope-reorder``): the longest first, so no worker starts a long file near the end
# (measured: benchmarks/RESULTS.md, "test suite"). Files not named follow in their own order.
HEAVIEST_FIRST = ["test_book.py", "test_attacks.py", "test_audit.py", "test_safety.py", "test_scheduler.py",
                  "test_judges.py", "test_defenses.py", "test_distributed.py", "test_training.py", "test_levers.py",
                  "test_cli.py", "test_attack_fidelity.py", "test_verdict_rules.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps each file's order


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Targets (no defense, Random Erasing) and the evaluation model, trained once with CLI defaults.

    Once per test session, not once per pytest-xdist worker: every worker points at the same
    folders, and the suite's run-directory lock makes the first worker train each model while
    another waits and reuses it. Workers start at different models, so they train in parallel
    instead of waiting on each other.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... under xdist, else unset
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker else base) / "trained"  # xdist: the folder all workers share
    models = [("none", []), ("random-erasing", ["--defense", "random-erasing"]), ("eval", ["--role", "eval"])]
    shift = int(worker[2:]) if worker else 0
    for name, extra in models[shift % 3:] + models[:shift % 3]:
        run_cli("train", "--seed", 0, "--out", root / name, "--quiet", *extra)
    return {name: root / name for name, _ in models}
