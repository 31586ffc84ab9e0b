"""torchrun on CPU (gloo): 2-rank DDP training and a 2-rank class-sharded attack, checked
against single-process runs."""

import json
import os
import subprocess
import sys

import pytest
import torch

from re_analysis.config import TrainConfig
from re_analysis.artifacts import load_tensors
from re_analysis.defenses import create_defense
from re_analysis.models import create_model
from re_analysis.training import train_one_epoch

from conftest import run_cli

pytestmark = pytest.mark.slow


def torchrun(*args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                           "-m", "re_analysis.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ranks_take_disjoint_shards_and_draw_their_own_boxes():
    cfg = TrainConfig(defense="random-erasing", epochs=1, batch_size=64).resolved()
    n = 1000
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n) // 256  # each image carries its index in two pixels
    x[:, 0, 0, 1] = torch.arange(n) % 256
    y = torch.arange(n) % 5
    seen = {0: {"idx": [], "masks": []}, 1: {"idx": [], "masks": []}}

    class Spy:
        def __init__(self, rank):
            self.rank, self.inner = rank, create_defense("random-erasing")

        def transform_batch(self, xb, yb, generator=None):
            pix = ((xb[:, 0, 0, :2] * 0.5 + 0.5) * 255).round().long()
            seen[self.rank]["idx"] += (pix[:, 0] * 256 + pix[:, 1]).tolist()
            out = self.inner.transform_batch(xb, yb, generator)
            seen[self.rank]["masks"].append(out != xb)
            return out

        def loss(self, model, xb, yb, epoch):
            logits = model(xb)
            return torch.nn.functional.cross_entropy(logits, yb), logits

    for rank in (0, 1):
        torch.manual_seed(0)
        model = create_model("cnn28", 5, 1, 28)
        train_one_epoch(model, Spy(rank), torch.optim.SGD(model.parameters(), lr=0.0), x, y, cfg, 0,
                        torch.device("cpu"), rank=rank, world=2)
    i0, i1 = set(seen[0]["idx"]), set(seen[1]["idx"])
    assert not i0 & i1 and i0 | i1 == set(range(n))  # disjoint shards covering the epoch once
    assert len(seen[0]["idx"]) == len(seen[1]["idx"]) == n // 2
    assert not torch.equal(seen[0]["masks"][0], seen[1]["masks"][0])  # independent boxes per rank


def test_two_rank_ddp_training_matches_single_process(tmp_path):
    args = ["train", "--defense", "random-erasing", "--epochs", "4", "--seed", "1", "--quiet"]
    torchrun(*args, "--out", tmp_path / "ddp")
    run_cli(*args, "--out", tmp_path / "single")
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["natural_accuracy"] >= 0.95
    assert abs(ddp["natural_accuracy"] - single["natural_accuracy"]) <= 0.03
    assert ddp["train_size"] == single["train_size"]


def test_two_rank_sharded_attack_matches_single_process(tmp_path, trained):
    args = ["attack", "--target", trained["none"], "--iterations", "60", "--per-class", "2",
            "--classes-per-chunk", "1", "--prior-steps", "60", "--cache", tmp_path / "cache", "--quiet"]
    torchrun(*args, "--out", tmp_path / "ddp")
    run_cli(*args, "--out", tmp_path / "single")
    info = json.loads((tmp_path / "ddp" / "attack.json").read_text())
    assert info["classes"] == [0, 1, 2, 3, 4]  # every class exactly once
    a = load_tensors(tmp_path / "ddp" / "reconstructions.safetensors")
    b = load_tensors(tmp_path / "single" / "reconstructions.safetensors")
    assert a["labels"].tolist() == b["labels"].tolist() == [c for c in range(5) for _ in range(2)]
    torch.testing.assert_close(a["images"], b["images"], atol=1e-5, rtol=0)
