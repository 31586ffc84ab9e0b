import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from re_analysis import ReAnalysisError, create_model
from re_analysis.artifacts import load_tensors
from re_analysis.config import TrainConfig
from re_analysis.augment import StandardAugmentation, recipe_name_for
from re_analysis.data import DATASETS, load_dataset, materialize, register_dataset
from re_analysis.defenses import create_defense
from re_analysis.training import (CHECKPOINT, WEIGHTS, load_checkpoint, load_classifier, lr_at, natural_accuracy,
                                  save_checkpoint, train, train_one_epoch)

from conftest import needs_fonts, run_cli


@pytest.mark.slow
def test_cli_defaults_reach_97_percent(trained):
    for name in ("none", "random-erasing", "eval"):
        m = json.loads((trained[name] / "metrics.json").read_text())
        assert m["natural_accuracy"] >= 0.97, (name, m["natural_accuracy"])
        assert (trained[name] / WEIGHTS).is_file() and not (trained[name] / CHECKPOINT).exists()
        assert m["augmentation"]["name"] == "shift"  # every target and the evaluation model
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


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_run_and_hashes_its_config_not_its_path(trained, tmp_path):
    import shutil

    start = json.loads((trained["none"] / "metrics.json").read_text())
    # at a vanishing learning rate one epoch leaves the weights where they started: the start's accuracy
    # (a random start at this rate stays at chance, 0.2 on five classes)
    cfg = TrainConfig(epochs=1, lr=1e-9, init_from=str(trained["none"]), device="cpu")
    tuned = train(cfg, cache_root=tmp_path / "cache", progress=False)
    assert abs(tuned.metrics["natural_accuracy"] - start["natural_accuracy"]) <= 0.01
    assert tuned.metrics["init_from"]["config_hash"] == start["config_hash"]
    assert json.loads((tuned.run_dir / "config.json").read_text())["config"]["init_from"] == start["config_hash"]
    # the same start copied elsewhere is the same run (no local path in the key)
    moved = tmp_path / "elsewhere" / "start"
    shutil.copytree(trained["none"], moved)
    again = train(TrainConfig(epochs=1, lr=1e-9, init_from=str(moved), device="cpu"), cache_root=tmp_path / "cache",
                  progress=False)
    assert again.run_dir == tuned.run_dir
    # another architecture (the judge: preresnet8, private and public classes) or an unfinished run is refused
    with pytest.raises(ReAnalysisError, match="same architecture"):
        train(TrainConfig(epochs=1, init_from=str(trained["eval"]), device="cpu"), tmp_path / "bad", progress=False)
    with pytest.raises(ReAnalysisError, match="not a finished training run"):
        train(TrainConfig(epochs=1, init_from=str(tmp_path / "nothing"), device="cpu"), tmp_path / "bad2",
              progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()


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


def test_a_run_on_other_data_files_is_refused(tmp_path, monkeypatch):
    """Data built from files with a manifest (glyphs' fonts) keys the run: the same config on
    other files (another font version: another manifest hash) is refused, not reused."""
    import re_analysis.training as training

    monkeypatch.setattr(training, "manifest_hash", lambda splits: "fonts-v1")
    train(short(epochs=1), tmp_path / "r", progress=False)
    monkeypatch.setattr(training, "manifest_hash", lambda splits: "fonts-v2")
    with pytest.raises(ReAnalysisError, match="another config"):
        train(short(epochs=1), tmp_path / "r", progress=False)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    """SIGKILL a training process after its first checkpoint; the restart must end bit-identical."""
    args = ["train", "--defense", "random-erasing", "--epochs", "3", "--seed", "5", "--quiet"]
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
    assert 1 <= done < 3
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


def shifts_of(out: torch.Tensor, x: torch.Tensor, pad: int) -> list:
    """For each image, the (dy, dx) integer shift of ``x`` (edge-replicated) that gives ``out``, or None."""
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="replicate")
    size = x.shape[-1]
    found = []
    for i in range(len(x)):
        match = [(dy - pad, dx - pad) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(padded[i, :, dy:dy + size, dx:dx + size], out[i])]
        found.append(match[0] if match else None)
    return found


def test_digits_get_small_per_image_shifts_and_no_flip():
    splits = load_dataset("mnist5k", seed=0)
    x, _ = materialize(splits.private_train)
    pixels = x[::40][:48].float() / 255
    aug = StandardAugmentation(recipe_name_for("mnist5k", splits.channels), 28, 1, splits.hflip_preserves_labels)
    assert aug.recipe == {"name": "shift", "max_shift_px": 2, "padding_mode": "replicate", "hflip": False,
                          "per_image": True}
    state = torch.get_rng_state()
    out = aug(pixels, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the loop's own random stream is untouched
    shifts = shifts_of(out, pixels, 2)
    assert None not in shifts  # every image is an exact shift of at most 2 px: never mirrored
    assert len(set(shifts)) > 10  # drawn per image (torchvision v2 on a batch would shift all alike)
    assert torch.equal(aug(pixels, seed=7), out) and not torch.equal(aug(pixels, seed=8), out)
    flipping = StandardAugmentation("shift", 28, 1, hflip=True)(pixels, seed=7)
    mirrored = shifts_of(flipping, pixels.flip(-1), 2)
    assert 0.3 < sum(m is not None for m in mirrored) / len(mirrored) < 0.7  # a flip where labels allow it


def test_colour_datasets_get_the_midre_ppa_recipe_per_image():
    aug = StandardAugmentation(recipe_name_for("celeba", 3), 32, 3, hflip=True)
    assert aug.recipe["name"] == "ppa" and aug.recipe["random_resized_crop"] == {"scale": [0.85, 1.0], "ratio": [1.0, 1.0]}
    assert aug.recipe["color_jitter"] == {"brightness": 0.2, "contrast": 0.2, "saturation": 0.1, "hue": 0.1}
    same = torch.rand(1, 3, 32, 32).expand(16, 3, 32, 32).contiguous()
    out = aug(same, seed=0)
    assert out.min() >= 0 and out.max() <= 1
    assert sum(torch.equal(out[0], out[i]) for i in range(1, 16)) == 0  # one draw per image


def test_a_dataset_may_declare_its_recipe(monkeypatch):
    assert recipe_name_for("mnist5k", 1) == "shift" and recipe_name_for("stanford-dogs", 3) == "ppa"
    monkeypatch.setitem(DATASETS._meta, "mnist5k", {**DATASETS.meta("mnist5k"), "augmentation": "none"})
    assert recipe_name_for("mnist5k", 1) == "none"
    with pytest.raises(ReAnalysisError, match="declares augmentation 'rotate'"):
        register_dataset("bad-recipe", augmentation="rotate")
    with pytest.raises(ReAnalysisError, match="recipe must be one of"):
        StandardAugmentation("rotate", 28, 1, False)


def test_none_trains_on_the_standard_augmentation_and_none_noaug_without(tmp_path):
    runs = {d: train(TrainConfig(defense=d, epochs=1), tmp_path / d, progress=False) for d in ("none", "none-noaug")}
    m, plain = runs["none"].metrics, runs["none-noaug"].metrics
    assert m["augmentation"]["name"] == "shift" and m["augmentation"]["library"].startswith("kornia")
    assert plain["augmentation"] == {"name": "none", "library": None}
    assert m["history"][0]["loss"] > plain["history"][0]["loss"]  # shifted digits are harder to fit
    recorded = json.loads((tmp_path / "none" / "config.json").read_text())["config"]["augmentation"]
    assert recorded["name"] == "shift"  # part of the run's key: a change of recipe is a new run
    assert m["config_hash"] != plain["config_hash"]


def test_the_defenses_own_state_is_checkpointed(tmp_path):
    """Trap-MID trains triggers and a discriminator: a resumed run must start from them."""
    splits = load_dataset("mnist5k", seed=0)
    x, y = materialize(splits.private_train)
    cfg = TrainConfig(defense="trap-mid", epochs=1).resolved()

    def setup():
        torch.manual_seed(0)
        model = create_model("cnn28", 5, 1, 28)
        d = create_defense("trap-mid")
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model, opt = d.configure(model, opt, {"config": cfg, "splits": splits, "device": torch.device("cpu")})
        return model, d, opt

    model, d, opt = setup()
    train_one_epoch(model, d, opt, x[:128], y[:128], cfg, 0, torch.device("cpu"))
    save_checkpoint(tmp_path / CHECKPOINT, model, opt, d, {"epoch": 1, "history": []})
    fresh_model, fresh, fresh_opt = setup()
    assert not torch.equal(fresh.triggers, d.triggers)
    load_checkpoint(tmp_path / CHECKPOINT, fresh_model, fresh_opt, fresh)
    assert torch.equal(fresh.triggers, d.triggers)
    assert all(torch.equal(a, b) for a, b in zip(fresh.disc.state_dict().values(), d.disc.state_dict().values()))
    assert fresh.disc_optimizer.state_dict()["state"][0]["step"] == d.disc_optimizer.state_dict()["state"][0]["step"]


@needs_fonts
def test_a_network_that_dies_restarts_from_another_initialisation(tmp_path, monkeypatch):
    """Glyphs with re-partial-boxes at seed 0 (the decisive recipe): after two epochs every unit
    of cnn28s's neck is dead (a constant classifier that no gradient can revive); the run
    restarts from another initialisation, records it, and the new start learns."""
    from re_analysis.training import dead_features, init_seed

    config = TrainConfig(dataset="glyphs", image_size=28, arch="cnn28s", defense="re-partial-boxes", epochs=2, seed=0)
    result = train(config, tmp_path / "boxes")
    restarts = result.metrics["restarts"]
    assert restarts["attempt"] == 1 and [d["epoch"] for d in restarts["dead_starts"]] == [2]
    assert restarts["dead_starts"][0]["loss"] == pytest.approx(4.6052, abs=2e-3)  # ln(100): chance
    x, _ = materialize(load_dataset("glyphs", seed=0, image_size=28).private_train)
    assert not dead_features(result.model, x)
    assert result.metrics["history"][-1]["loss"] < 4.55  # off chance within its two epochs
    assert init_seed(0, 1) != init_seed(0, 0) == 0 and init_seed(5, 0) == 5

    # stopped after the new start's first epoch, the run resumes it: same weights, same dead start
    import re_analysis.training as T

    calls, one_epoch = [], T.train_one_epoch

    def stop_after_three(*args, **kwargs):
        if len(calls) == 3:  # two epochs of the dead start, one of the new
            raise KeyboardInterrupt
        calls.append(1)
        return one_epoch(*args, **kwargs)

    monkeypatch.setattr(T, "train_one_epoch", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped")
    monkeypatch.undo()
    resumed = train(config, tmp_path / "stopped")
    assert resumed.metrics["restarts"] == restarts and resumed.metrics["history"] == result.metrics["history"]
    a, b = load_tensors(tmp_path / "boxes" / WEIGHTS), load_tensors(tmp_path / "stopped" / WEIGHTS)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dead_features_sees_a_constant_classifier_and_only_that():
    from re_analysis.training import dead_features

    torch.manual_seed(0)
    model = create_model("cnn28s", 10, 1, 28)
    x = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    assert not dead_features(model, x) and model.training  # its mode is left as it was
    with torch.no_grad():
        model.neck[0].bias.fill_(-1e3)
    assert dead_features(model, x) and model.training
    assert not dead_features(torch.nn.Linear(4, 2), x)  # no features: never dead
