import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from re_analysis import ReAnalysisError
from re_analysis.artifacts import load_tensors
from re_analysis.config import TrainConfig
from re_analysis.training import CHECKPOINT, WEIGHTS, load_classifier, lr_at, natural_accuracy, train

from conftest import run_cli


@pytest.mark.slow
def test_cli_defaults_reach_97_percent(trained):
    for name in ("none", "random-erasing", "eval"):
        m = json.loads((trained[name] / "metrics.json").read_text())
        assert m["natural_accuracy"] >= 0.97, (name, m["natural_accuracy"])
        assert (trained[name] / WEIGHTS).is_file() and not (trained[name] / CHECKPOINT).exists()
    assert json.loads((trained["eval"] / "metrics.json").read_text())["arch"] == "preresnet8"  # never the target's
    # Random Erasing really changed what the model saw: its training loss stays higher
    loss = {n: json.loads((trained[n] / "metrics.json").read_text())["history"][-1]["loss"]
            for n in ("none", "random-erasing")}
    assert loss["random-erasing"] > 2 * loss["none"]


@pytest.mark.slow
def test_saved_model_reloads_with_the_same_accuracy(trained):
    from re_analysis.data import load_dataset, materialize

    model = load_classifier(trained["random-erasing"])
    x, y = materialize(load_dataset("mnist5k", seed=0).private_test)
    acc = natural_accuracy(model, x, y)
    assert acc == json.loads((trained["random-erasing"] / "metrics.json").read_text())["natural_accuracy"]


def short(**kw):
    return TrainConfig(**{"epochs": 2, "defense": "random-erasing", **kw})


def test_same_seed_same_metrics_other_seed_differs(tmp_path):
    a = train(short(seed=3), tmp_path / "a", progress=False)
    b = train(short(seed=3), tmp_path / "b", progress=False)
    c = train(short(seed=4), tmp_path / "c", progress=False)
    assert a.metrics["history"] == b.metrics["history"]
    assert a.metrics["natural_accuracy"] == b.metrics["natural_accuracy"]
    wa, wb = load_tensors(tmp_path / "a" / WEIGHTS), load_tensors(tmp_path / "b" / WEIGHTS)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics["history"] != c.metrics["history"]


def test_finished_run_is_reused_and_other_config_refused(tmp_path):
    cfg = short(epochs=1)
    first = train(cfg, tmp_path / "r", progress=False)
    stamp = (tmp_path / "r" / "metrics.json").stat().st_mtime_ns
    again = train(cfg, tmp_path / "r", progress=False)
    assert again.metrics == first.metrics and (tmp_path / "r" / "metrics.json").stat().st_mtime_ns == stamp
    with pytest.raises(ReAnalysisError, match="another config"):
        train(short(epochs=1, seed=9), tmp_path / "r", progress=False)
    # content-addressed default location
    cached = train(cfg, cache_root=tmp_path / "cache", progress=False)
    assert cached.run_dir.parent == tmp_path / "cache" and cached.run_dir.name.startswith("train-")


def test_killed_run_resumes_to_identical_weights(tmp_path):
    """SIGKILL a training process after its first checkpoint; the restart must end bit-identical."""
    args = ["train", "--defense", "random-erasing", "--epochs", "4", "--seed", "5", "--quiet"]
    reference = tmp_path / "reference"
    run_cli(*args, "--out", reference)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "re_analysis.cli", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / CHECKPOINT
    deadline = time.time() + 300
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_file(), "the process finished before it could be killed"
    assert not (killed / "metrics.json").exists()
    from safetensors import safe_open
    with safe_open(str(ckpt), framework="pt") as fh:
        done = json.loads(fh.metadata()["state"])["meta"]["epoch"]
    assert 1 <= done < 4
    run_cli(*args, "--out", killed)
    m_ref = json.loads((reference / "metrics.json").read_text())
    m_res = json.loads((killed / "metrics.json").read_text())
    assert m_res["history"] == m_ref["history"] and m_res["natural_accuracy"] == m_ref["natural_accuracy"]
    w_ref, w_res = load_tensors(reference / WEIGHTS), load_tensors(killed / WEIGHTS)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]  # no half-written files


def test_learning_rate_schedule_is_multistep():
    cfg = TrainConfig(epochs=100, lr=1e-3, milestones=(0.75, 0.9))
    assert lr_at(cfg, 0) == 1e-3 and lr_at(cfg, 74) == 1e-3
    assert lr_at(cfg, 75) == pytest.approx(1e-4) and lr_at(cfg, 90) == pytest.approx(1e-5)


def test_bad_configs_are_refused():
    with pytest.raises(ReAnalysisError, match="epochs must be a positive integer"):
        TrainConfig(epochs=0)
    with pytest.raises(ReAnalysisError, match="evaluation model is trained without a defense"):
        TrainConfig(role="eval", defense="random-erasing")
    with pytest.raises(ReAnalysisError, match="unknown training option"):
        TrainConfig.from_dict({"epoch": 3})
