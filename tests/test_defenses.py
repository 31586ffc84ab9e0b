"""Each baseline defense's mechanism, tested so that it would fail if the mechanism were absent."""

import json

import numpy as np
import pytest
import torch

from re_analysis import ReAnalysisError, create_defense, create_model, list_defenses
from re_analysis.config import TrainConfig
from re_analysis.data import load_dataset
from re_analysis.defenses.bido import gaussian_kernel, hsic, normalized_hsic
from re_analysis.defenses.nls import NLSDefense
from re_analysis.training import load_classifier, train, train_one_epoch

from conftest import run_cli


def test_registry_has_the_baselines():
    assert {"none", "random-erasing", "mid", "bido", "nls", "tl-dmi", "dp-sgd"} <= set(list_defenses())


def test_mid_kl_term_and_training_time_stochasticity():
    torch.manual_seed(0)
    d = create_defense("mid", beta=0.5)
    model = d.wrap_model(create_model("cnn28", 5, 1, 28))
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 5, (16,))
    model.train()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # z = mu + std * eps in training
    loss, logits = d.loss(model, x, y, 0)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert model.last_kl > 0 and loss.item() == pytest.approx((ce + 0.5 * model.last_kl).item(), rel=1e-6)
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # the mean at test time
    torch.testing.assert_close(model(x), model.head(model.features(x)))
    assert model.features(x).shape == (16, model.base.feature_dim // 2)


def test_hsic_equals_hand_computation_and_detects_dependence():
    k = torch.tensor([[1.0, 0.5, 0.2], [0.5, 1.0, 0.1], [0.2, 0.1, 1.0]], dtype=torch.float64)
    l = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    m = 3
    K, L = k.numpy(), l.numpy()
    H = np.eye(m) - np.ones((m, m)) / m
    hand = np.trace(K @ H @ L @ H) / (m - 1) ** 2
    assert hsic(k, l).item() == pytest.approx(hand, rel=1e-12)
    assert hand != 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g)
    indep = torch.randn(300, 4, generator=g)
    dep = x.pow(2) + 0.05 * torch.randn(300, 4, generator=g)
    kx = gaussian_kernel(x, 1.0)
    assert normalized_hsic(kx, gaussian_kernel(indep, 1.0)) < 0.05
    assert normalized_hsic(kx, gaussian_kernel(dep, 1.0)) > 0.2


def test_bido_penalises_input_and_rewards_label_dependence():
    torch.manual_seed(0)
    model = create_model("cnn28", 5, 1, 28)
    x, y = torch.randn(32, 1, 28, 28), torch.arange(32) % 5
    ce = torch.nn.functional.cross_entropy(model(x), y).item()
    only_x, _ = create_defense("bido", lambda_x=1.0, lambda_y=0.0).loss(model, x, y, 0)
    only_y, _ = create_defense("bido", lambda_x=0.0, lambda_y=1.0).loss(model, x, y, 0)
    assert only_x.item() > ce + 0.1 and only_y.item() < ce - 0.01


def test_nls_schedule_reaches_the_loss(monkeypatch, tmp_path):
    d = NLSDefense(alpha=-0.1)
    d.epochs = 9
    assert [round(d.alpha_at(e), 4) for e in range(9)] == [0, 0, 0, -0.025, -0.05, -0.075, -0.1, -0.1, -0.1]
    t = d.targets(torch.tensor([1]), 5, 8)
    assert t.sum().item() == pytest.approx(1.0) and t[0, 1].item() == pytest.approx(1.1 - 0.02)
    assert (t[0, [0, 2, 3, 4]] < 0).all()  # negative smoothing
    seen = {}
    original = NLSDefense.targets

    def spy(self, y, num_classes, epoch):
        seen.setdefault(epoch, self.alpha_at(epoch))
        return original(self, y, num_classes, epoch)

    monkeypatch.setattr(NLSDefense, "targets", spy)
    train(TrainConfig(defense="nls", epochs=6, defense_params={"alpha": -0.05}), tmp_path / "nls", progress=False)
    ref = NLSDefense(alpha=-0.05)
    ref.epochs = 6
    assert seen == {e: ref.alpha_at(e) for e in range(6)} and seen[0] == 0 and seen[5] == -0.05


def test_tl_dmi_pretrains_on_public_and_keeps_frozen_layers_fixed():
    cfg = TrainConfig(defense="tl-dmi", epochs=1).resolved()
    splits = load_dataset("mnist5k")
    torch.manual_seed(0)
    model = create_model("cnn28", 5, 1, 28)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    d = create_defense("tl-dmi", pretrain_epochs=1)
    opt = torch.optim.Adam(model.parameters())
    model, opt = d.configure(model, opt, {"config": cfg, "splits": splits, "device": torch.device("cpu"),
                                          "epochs": 1, "num_samples": 0, "batch_size": 64})
    assert not torch.equal(init["body.0.weight"], model.state_dict()["body.0.weight"])  # public pre-training happened
    frozen_before = [p.detach().clone() for p in d.frozen]
    trainable_before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    from re_analysis.data import materialize
    x, y = materialize(splits.private_train)
    train_one_epoch(model, d, opt, x, y, cfg, 0, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(frozen_before, d.frozen))
    assert any(not torch.equal(a, b) for a, b in zip(trainable_before, [p for p in model.parameters() if p.requires_grad]))
    assert len(d.frozen) > 0 and all(not p.requires_grad for p in d.frozen)


def test_dp_sgd_reports_epsilon_growing_with_epochs(tmp_path):
    one = train(TrainConfig(defense="dp-sgd", epochs=1), tmp_path / "one", progress=False).metrics
    two = train(TrainConfig(defense="dp-sgd", epochs=2), tmp_path / "two", progress=False).metrics
    assert 0 < one["epsilon"] < two["epsilon"] and one["delta"] == pytest.approx(1 / one["train_size"])
    model = load_classifier(tmp_path / "two")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # replaced for per-sample privacy
    d = create_defense("dp-sgd")
    d.n, d.sample_rate = 2250, 64 / 2250
    eps = [d.epsilon(s) for s in (10, 100, 1000)]
    assert eps == sorted(eps) and eps[0] < eps[-1]


def test_composition_routes_parameters_and_refuses_two_losses(tmp_path):
    d = create_defense("random-erasing+nls", alpha=-0.2, scale=[0.1, 0.8])
    assert d.params == {**{f"random-erasing.{k}": v for k, v in create_defense("random-erasing", scale=[0.1, 0.8]).params.items()},
                        "nls.alpha": -0.2, "nls.start_epoch": None, "nls.ramp_epochs": None}
    x = torch.zeros(4, 1, 28, 28)
    assert (d.transform_batch(x, None, torch.Generator().manual_seed(0)) != 0).any()  # RE applied
    with pytest.raises(ReAnalysisError, match="both change the loss"):
        create_defense("mid+nls")
    with pytest.raises(ReAnalysisError, match="matches 0 member"):
        create_defense("random-erasing+nls", beta=1)
    run_cli("train", "--defense", "random-erasing+mid", "--epochs", "1", "--quiet", "--out", tmp_path / "c")
    model = load_classifier(tmp_path / "c")  # the bottleneck is rebuilt from the saved wrapper info
    assert model.feature_dim == 64


@pytest.mark.parametrize("defense, param, message", [
    ("mid", "beta=-1", "beta must be a non-negative number"),
    ("nls", "alpha=2", "alpha must be a number in (-1, 1)"),
    ("dp-sgd", "noise_multiplier=0", "noise_multiplier must be a positive number"),
    ("tl-dmi", "finetune_layers=0", "finetune_layers must be a positive integer"),
    ("bido", "sigma=0", "sigma must be a positive number"),
])
def test_bad_defense_parameters_are_refused(tmp_path, defense, param, message):
    proc = run_cli("train", "--defense", defense, "--defense-param", param, "--out", tmp_path / "x", check=False)
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("defense", ["mid", "bido", "nls", "tl-dmi", "dp-sgd"])
def test_every_defense_trains_from_the_cli(tmp_path, defense):
    run_cli("train", "--defense", defense, "--epochs", "2", "--quiet", "--out", tmp_path / defense)
    m = json.loads((tmp_path / defense / "metrics.json").read_text())
    assert m["natural_accuracy"] > 0.6 and m["defense"] == defense
