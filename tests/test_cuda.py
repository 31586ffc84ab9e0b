"""CUDA paths (run by benchmarks/gpu_check.sh on a GPU machine; skipped elsewhere). The same
functions run on CPU in the other test files."""

import pytest
import torch

from re_analysis import RandomErasing

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_random_erasing_on_device_per_image():
    x = torch.zeros(2048, 3, 64, 64, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    out = RandomErasing(value=1.0)(x, generator=g)
    assert out.device.type == "cuda"
    mask = (out[:, 0] == 1)
    area = mask.flatten(1).float().mean(1)
    assert (area > 0.08).all() and (area < 0.42).all() and abs(area.mean().item() - 0.25) < 0.02
    tops = mask.any(2).float().argmax(1)
    assert len(tops.unique()) > 20  # positions differ per image
    again = RandomErasing(value=1.0)(x, generator=torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(out, again)


def test_training_on_cuda_uses_amp_and_channels_last(tmp_path):
    from re_analysis.config import TrainConfig
    from re_analysis.training import train

    res = train(TrainConfig(defense="random-erasing", epochs=3, device="cuda"), tmp_path / "t", progress=False)
    assert res.metrics["device"].startswith("cuda") and res.metrics["natural_accuracy"] > 0.95
    conv = next(m for m in res.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_gmi_attack_on_cuda(tmp_path):
    from re_analysis.attacks import AttackConfig, run_attack
    from re_analysis.config import TrainConfig
    from re_analysis.training import train

    train(TrainConfig(epochs=3, device="cuda"), tmp_path / "t", progress=False)
    res = run_attack(AttackConfig(attack="gmi", target=str(tmp_path / "t"), iterations=200, prior_steps=150,
                                  device="cuda"), tmp_path / "a", cache_root=tmp_path / "cache", progress=False)
    assert res.info["target_accuracy_on_reconstructions"] >= 0.6


def test_speed_levers_on_cuda():
    """The levers of re_analysis.models.levers on CUDA: the default ones leave the search's bits,
    the rounding ones compute the same function, bf16 runs (tests/test_levers.py on CPU)."""
    import copy

    from re_analysis.attacks import create_attack
    from re_analysis.attacks.gan import Discriminator, Generator
    from re_analysis.attacks.priors import Prior
    from re_analysis.models import create_model
    from re_analysis.models.frozen import frozen
    from re_analysis.models.levers import levers

    torch.manual_seed(0)
    target = create_model("cnn28s", 5, 1, 28).cuda().eval()
    prior = Prior("wgan-gp", Generator(28, 1, z_dim=20, dim=8).cuda().eval(), Discriminator(28, 1, dim=8).cuda().eval(),
                  {"hflip_preserves_labels": False})
    labels = torch.arange(5, device="cuda").repeat_interleave(2)

    def search(iterations=10):
        attack = create_attack("gmi", iterations=iterations)
        return attack.run(copy.deepcopy(target), copy.deepcopy(prior), labels, seed=0, progress=False)

    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True  # two runs of the same path must agree bit for bit first
    try:
        with levers(all=False):
            ref = search()
        res = search()
    finally:
        torch.backends.cudnn.deterministic = deterministic
    assert ref.loss_history == res.loss_history and torch.equal(ref.latents, res.latents)
    with levers(fold_batchnorm=True):
        first = search(1)
        x = torch.rand(8, 1, 28, 28, device="cuda") * 2 - 1
        assert torch.allclose(frozen(target)(x), target(x), atol=1e-4)
    with levers(all=False):
        ref1 = search(1)
    assert (first.latents - ref1.latents).abs().max() <= 1e-4  # TF32/cuDNN choices allow a little more than CPU
    with levers(bf16_search=True):
        assert torch.isfinite(torch.tensor(search(3).loss_history)).all()
