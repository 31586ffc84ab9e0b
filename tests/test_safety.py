"""Artifacts that detect their own damage; runs that never do the same work twice (issue 14).

Everything runs on the embedded mnist5k digits with a tiny study (two 2-epoch targets, an
8-step GAN prior, 10 GMI iterations): real runs, small enough for CI.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from re_analysis.artifacts import (DamagedArtifactError, RunBusyError, atomic_write_json, claim_run_dir,
                                   claim_scope, ensure_intact, lock_run_dir, read_json, verify_runs)
from re_analysis.config import TrainConfig

pytestmark = pytest.mark.slow

TINY = """
name: tiny
description: the smallest real study, for the safety tests
dataset: mnist5k
seeds: [0]
per_class: 1
train: {epochs: 2, arch: cnn28s, batch_size: 128}
eval_model: {epochs: 1, arch: mlp28}
prior: {steps: 8, seed: 0}
defenses:
  none: {}
  random-erasing: {defense: random-erasing}
attacks:
  gmi: {iterations: 10}
embed: false
device: cpu
"""


@pytest.fixture(scope="module")
def preset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def reference(preset_file, tmp_path_factory):
    """An uninterrupted tiny study: its directory, its results.csv text and how long it took.

    Run by the CLI in a fresh process, as the killed runs are: the comparison is then about
    interruption alone, not about what an earlier test file left in this worker's torch."""
    root = tmp_path_factory.mktemp("reference") / "study"
    t0 = time.perf_counter()
    run_cli("study", "--preset", preset_file, "--out", root, "--quiet")
    return root, (root / "results.csv").read_text(), time.perf_counter() - t0


def one_run(root: Path, pattern: str) -> Path:
    (run,) = [p for p in root.glob(pattern) if ".damaged-" not in p.name]
    return run


def copy_run(root: Path, pattern: str, dest: Path) -> Path:
    """A finished run copied out of the study: a stand-alone run directory of its own."""
    return Path(shutil.copytree(one_run(root, pattern), dest / one_run(root, pattern).name))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def assert_one_line(exc: DamagedArtifactError, path: Path, problem: str, fix: str) -> None:
    text = str(exc)
    assert "\n" not in text and str(path.name) in text and problem in text and fix in text, text
    assert exc.path.name == path.name


# --------------------------------------------------------------------------- manifests

def test_every_artifact_of_a_study_is_recorded_with_its_checksum(reference):
    root, _, _ = reference
    report = verify_runs(root)
    assert report.clean and report.runs == 8 and not report.notes, [str(p) for p in report.problems]
    recorded = {}
    for manifest in root.rglob("manifest.json"):
        for key, entry in json.loads(manifest.read_text())["artifacts"].items():
            recorded[manifest.parent / key] = entry
    written = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
               and p.name not in ("manifest.json", "study.log")]
    assert set(written) == set(recorded)  # nothing written outside the manifests
    names = {p.name for p in written}
    assert {"model.safetensors", "generator.safetensors", "discriminator.safetensors", "reconstructions.safetensors",
            "metrics.json", "grid.png", "gap.json", "results.csv", "study.json"} <= names
    weights = one_run(root, "targets/none-*") / "model.safetensors"
    assert recorded[weights] == {"sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                                 "size": weights.stat().st_size}


# --------------------------------------------------------------------------- damaged artifacts, one line each

def test_truncated_weights_stop_the_cli_with_one_line_and_the_fix(reference, tmp_path):
    """The issue's case: a target's weights cut to half, then `re-analysis attack --target DIR`."""
    target = copy_run(reference[0], "targets/none-*", tmp_path)
    truncate(target / "model.safetensors")
    proc = run_cli("attack", "--target", target, "--out", tmp_path / "attack", "--quiet", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{target / 'model.safetensors'} is damaged (size differs" in lines[0]
    assert f"re-run `re-analysis train --out {target}`" in lines[0]
    assert not (tmp_path / "attack" / "reconstructions.safetensors").exists()


@pytest.mark.parametrize("damage, problem", [(flip_byte, "checksum differs"), (Path.unlink, "missing")])
def test_altered_or_missing_weights_are_named(reference, tmp_path, capsys, damage, problem):
    from re_analysis.cli import main

    target = copy_run(reference[0], "targets/none-*", tmp_path)
    damage(target / "model.safetensors")
    assert main(["attack", "--target", str(target), "--out", str(tmp_path / "attack"), "--cache",
                 str(tmp_path / "cache"), "--device", "cpu", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{target / 'model.safetensors'} is damaged ({problem}" in line


def test_truncated_weights_without_a_manifest_still_give_one_line(reference, tmp_path, capsys):
    """A run made before manifests: the safetensors header check catches the truncation."""
    from re_analysis.cli import main

    target = copy_run(reference[0], "targets/none-*", tmp_path)
    (target / "manifest.json").unlink()
    truncate(target / "model.safetensors")
    assert main(["attack", "--target", str(target), "--out", str(tmp_path / "attack"), "--cache",
                 str(tmp_path / "cache"), "--device", "cpu", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model.safetensors is damaged (unreadable: Error while deserializing header" in line


def test_each_kind_of_artifact_names_its_damage(reference, tmp_path):
    from re_analysis.attacks.priors import load_prior
    from re_analysis.attacks.runner import load_attack_run
    from re_analysis.training import load_classifier

    root = reference[0]
    prior = copy_run(root, "cache/priors/prior-wgan-gp-*", tmp_path)
    truncate(prior / "generator.safetensors")
    with pytest.raises(DamagedArtifactError) as err:
        load_prior(prior)
    assert_one_line(err.value, prior / "generator.safetensors", "size differs",
                    f"move {prior} aside: the next attack that needs this prior trains it again")

    attack = copy_run(root, "attacks/none--gmi-*", tmp_path)
    truncate(attack / "reconstructions.safetensors")
    with pytest.raises(DamagedArtifactError) as err:
        load_attack_run(attack)
    assert_one_line(err.value, attack / "reconstructions.safetensors", "size differs",
                    f"re-run `re-analysis attack --out {attack}`")

    flip_byte(attack / "metrics.json")
    with pytest.raises(DamagedArtifactError) as err:
        read_json(attack / "metrics.json")
    assert_one_line(err.value, attack / "metrics.json", "checksum differs", "re-analysis attack --out")

    truncate(attack / "grid.png")  # a figure is read by nobody in the suite: the run check finds it
    problems = {p.path.name: p.problem for p in verify_runs(attack).problems}
    assert problems["grid.png"].startswith("size differs")
    assert set(problems) == {"reconstructions.safetensors", "metrics.json", "grid.png"}

    target = copy_run(root, "targets/none-*", tmp_path)
    flip_byte(target / "model.safetensors")
    with pytest.raises(DamagedArtifactError, match="checksum differs"):
        load_classifier(target)


def test_a_damaged_checkpoint_is_named_when_training_resumes(tmp_path, monkeypatch):
    import re_analysis.training as training

    cfg = TrainConfig(dataset="mnist5k", arch="cnn28s", epochs=2, batch_size=128, seed=3, device="cpu")
    real_epoch = training.train_one_epoch

    def stop_after_first_epoch(*args, **kwargs):
        if args[6] == 1:  # the epoch argument: interrupted as a kill would, after the first checkpoint
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)
    ckpt = tmp_path / "run" / training.CHECKPOINT
    truncate(ckpt)
    with pytest.raises(DamagedArtifactError) as err:
        training.train(cfg, tmp_path / "run", progress=False)
    assert_one_line(err.value, ckpt, "size differs", f"re-run `re-analysis train --out {tmp_path / 'run'}`")


# --------------------------------------------------------------------------- verify

def test_verify_reports_damage_and_unrecorded_files(reference, tmp_path, capsys):
    from re_analysis.cli import main

    root = Path(shutil.copytree(reference[0], tmp_path / "study"))
    assert main(["verify", str(root)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "clean: 59 files in 8 runs match their manifests"
    weights = one_run(root, "targets/random-erasing-*") / "model.safetensors"
    truncate(weights)
    gap = one_run(root, "attacks/none--gmi-*") / "gap.json"
    gap.unlink()
    stray = one_run(root, "attacks/none--gmi-*") / "notes.txt"
    stray.write_text("written by hand")
    assert main(["verify", str(root)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert f"damaged: {weights}: size differs: {weights.stat().st_size} bytes" in "\n".join(out)
    assert f"damaged: {gap}: missing" in out
    assert any(line.startswith(f"unrecorded: {stray}") for line in out)
    assert out[-1].startswith("3 problem(s) in 8 runs; to repair: re-run the study")


# --------------------------------------------------------------------------- the study recomputes damaged steps

def test_study_sets_damaged_steps_aside_and_recomputes_only_them(reference, preset_file, tmp_path):
    root = Path(shutil.copytree(reference[0], tmp_path / "study"))
    untouched = one_run(root, "targets/random-erasing-*") / "model.safetensors"
    stamp = untouched.stat().st_mtime_ns
    damaged = {
        "weights": one_run(root, "targets/none-*") / "model.safetensors",
        "prior": one_run(root, "cache/priors/prior-*") / "generator.safetensors",
        "figure": one_run(root, "attacks/none--gmi-*") / "grid.png",
        "metrics": one_run(root, "attacks/random-erasing--gmi-*") / "metrics.json",
        "table": root / "results.csv",
    }
    for path in damaged.values():
        truncate(path)
    run_cli("study", "--preset", preset_file, "--out", root, "--quiet")
    assert (root / "results.csv").read_text() == reference[1]  # recomputed to the same numbers
    assert len(pd.read_csv(root / "results.csv")) == 2 and "damaged" not in (root / "results.csv").read_text()
    log = (root / "study.log").read_text()
    for path in damaged.values():
        assert f"damaged {path} (size differs" in log
    aside = sorted(p.name.split(".damaged-")[0] for p in root.rglob("*.damaged-*"))
    assert aside == sorted([damaged["weights"].parent.name, damaged["prior"].parent.name,
                            damaged["figure"].parent.name, damaged["metrics"].parent.name, "results.csv"])
    assert untouched.stat().st_mtime_ns == stamp  # the intact target was reused, not retrained
    report = verify_runs(root)
    assert report.clean, [str(p) for p in report.problems]


# --------------------------------------------------------------------------- locks: work done once

COUNTED_TRAIN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import re_analysis.training as training
    from re_analysis.config import TrainConfig

    out, counter, me, other = sys.argv[1:5]
    real_epoch = training.train_one_epoch
    def counted(*args, **kwargs):
        with open(counter, "a") as fh:
            fh.write(f"{me} epoch\\n")
        return real_epoch(*args, **kwargs)
    training.train_one_epoch = counted
    Path(me).touch()
    while not Path(other).exists():  # both processes are up before either starts
        time.sleep(0.05)
    cfg = TrainConfig(dataset="mnist5k", arch="cnn28s", epochs=2, batch_size=128, seed=1, device="cpu")
    print(training.train(cfg, out, progress=False).metrics["natural_accuracy"])
""")


def test_two_processes_on_one_run_train_it_once(tmp_path):
    script = tmp_path / "counted_train.py"
    script.write_text(COUNTED_TRAIN)
    counter, a, b = tmp_path / "epochs.txt", tmp_path / "a.ready", tmp_path / "b.ready"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), str(counter), str(me), str(other)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in ((a, b), (b, a))]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    epochs = counter.read_text().splitlines()
    assert len(epochs) == 2 and len({line.split()[0] for line in epochs}) == 1  # one process trained
    assert outs[0][0] == outs[1][0]  # the other reused its result
    assert "waiting for it to finish" in outs[0][1] + outs[1][1]


HOLDER = textwrap.dedent("""
    import sys, time
    from re_analysis.artifacts import claim_run_dir, claim_scope
    with claim_scope():
        claim_run_dir(sys.argv[1], {"epochs": 1}, kind="train")
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_busy_run_names_its_holder_and_a_killed_holder_leaves_no_lock(tmp_path, monkeypatch, capsys):
    from re_analysis.cli import main

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with claim_scope(), pytest.raises(RunBusyError, match=f"being computed by process {proc.pid} on "):
            lock_run_dir(run, timeout=0)
        monkeypatch.setenv("RE_ANALYSIS_LOCK_TIMEOUT", "0")
        assert main(["train", "--epochs", "1", "--out", str(run), "--device", "cpu", "--quiet"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{run.absolute()} is being computed by process {proc.pid}" in line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with claim_scope():  # the OS released the dead holder's lock: no stale lock to clean up
        lock_run_dir(run, timeout=0)
        atomic_write_json(run / "note.json", {"after": "crash"})
    assert read_json(run / "note.json") == {"after": "crash"}


def test_claims_are_reentrant_within_a_process(tmp_path):
    with claim_scope():
        claim_run_dir(tmp_path / "run", {"a": 1}, kind="train")
        with claim_scope():
            claim_run_dir(tmp_path / "run", {"a": 1}, kind="train")  # the study calls train inside its own claim
        lock_run_dir(tmp_path / "run", timeout=0)
    ensure_intact(tmp_path / "run")


# (a study on two workers: tests/test_scheduler.py, byte-identical tables and no step redone)


# --------------------------------------------------------------------------- kill -9 at random moments

def test_a_study_killed_at_random_moments_resumes_to_identical_results(reference, preset_file, tmp_path):
    root = tmp_path / "study"
    args = [sys.executable, "-m", "re_analysis.cli", "study", "--preset", str(preset_file), "--out", str(root),
            "--quiet"]
    rng = random.Random(14)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3, 3 + 0.7 * reference[2]))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "every run finished before it could be killed"
    run_cli("study", "--preset", preset_file, "--out", root, "--quiet")
    assert (root / "results.csv").read_text() == reference[1]
    assert not list(root.rglob("*.damaged-*"))  # an interruption never looks like damage
    report = verify_runs(root)
    assert report.clean, [str(p) for p in report.problems]
