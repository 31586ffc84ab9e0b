"""The study on dask.distributed: two workers, one of them killed mid-attack, give the tables of
the study computed as units in two shares in one process (byte for byte), finished steps are never
redone, and a scheduler that cannot be reached is one clear error. On ``tests/data/tiny.yaml`` (the smoke study at its
smallest budgets), one torch thread per process as `make test` runs it."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from re_analysis.study import load_preset, run_study
from re_analysis.study.units import run_units, select_units
from conftest import call_cli

pytestmark = pytest.mark.slow
TINY = Path(__file__).parent / "data" / "tiny.yaml"
TABLES = ("results", "judgements", "natural", "chance", "gap_samples", "summary", "comparisons", "verdicts",
          "verdict_summary")


def tables(folder: Path) -> dict[str, bytes]:
    return {name: (folder / f"{name}.csv").read_bytes() for name in TABLES}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """The tiny study in this one process, computed as units in two shares into one folder (what
    `--units 1/2` and `--units 2/2` on two machines do), then the study's own pass, which finds
    every step done and writes the tables. The dask run below is a whole run: its tables equal
    these byte for byte, which settles both "two workers give the tables of one" and "two shares
    give one whole run" in one tiny study fewer (CI's 30 minutes)."""
    p = load_preset(TINY)
    out = tmp_path_factory.mktemp("tiny") / "one"
    first = run_units(p, out, select_units(p, "1/2"), progress=False)
    second = run_units(p, out, select_units(p, "2/2"), progress=False)
    assert [r["unit"] for r in first + second] == ["none-s0", "random-erasing-s0"]
    steps = {q: q.stat().st_mtime_ns for q in out.rglob("manifest.json") if q.parent != out}
    run_study(p, out, progress=False)
    assert steps == {q: q.stat().st_mtime_ns for q in out.rglob("manifest.json") if q.parent != out}  # none redone
    return out


def study_process(out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "re_analysis.cli", "study", "--preset", str(TINY), "--out", str(out),
                             "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_dask_workers_one_killed_mid_attack_give_the_tables_of_one(one_worker, tmp_path):
    """A study on two dask workers (the run log names the scheduler) in which the worker computing
    an attack (the holder of its run's lock) is killed mid-step: its nanny restarts it, dask
    reschedules the step, which resumes under the lock, and the tables equal one worker's byte for
    byte. (One run for both of issue 38's tests: a clean two-worker run is the same run without
    the kill, and CI's 30 minutes do not hold a third tiny study.)"""
    import json

    import psutil

    out = tmp_path / "killed"
    proc = study_process(out, "--workers", "2")
    killed = []
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and not killed:
        for holder in (out / "attacks").glob(".*.lock.holder") if (out / "attacks").is_dir() else []:
            try:
                pid = json.loads(holder.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue  # written or removed just now
            if pid != proc.pid and psutil.pid_exists(pid):
                psutil.Process(pid).kill()
                killed.append(pid)
                break
        time.sleep(0.02)
    stdout, err = proc.communicate(timeout=1200)
    assert killed, "no attack was caught in flight"
    assert proc.returncode == 0, err[-2000:]
    assert "dask scheduler" in (out / "study.log").read_text()  # the run log names the scheduler
    assert tables(out) == tables(one_worker)
    # finished steps are never redone: a one-process pass over the dask run's folder computes nothing
    steps = {q: q.stat().st_mtime_ns for q in out.rglob("manifest.json") if q.parent != out}
    run_study(load_preset(TINY), out, progress=False)
    assert steps == {q: q.stat().st_mtime_ns for q in out.rglob("manifest.json") if q.parent != out}


def test_a_scheduler_that_cannot_be_reached_is_one_clear_error(tmp_path):
    proc = call_cli("study", "--preset", TINY, "--scheduler", "tcp://127.0.0.1:9", "--out", tmp_path / "x", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot reach the dask scheduler at 'tcp://127.0.0.1:9'" in proc.stderr
