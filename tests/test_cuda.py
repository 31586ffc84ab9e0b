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
