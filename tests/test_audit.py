"""The audit of a user's own model: the three forms a model comes in, the input adapters,
and one clear error for each bad input."""

import pytest
import torch
from torch import nn

from re_analysis import ReAnalysisError
from re_analysis.audit import InputConvention, load_user_model
from re_analysis.models import create_model

MEAN, STD = (0.485,), (0.229,)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("cnn28", 5, 1, 28).eval()


class ZeroOne(nn.Module):
    """The same network, but it wants pixels in [0, 1] (it rescales them itself)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x * 2 - 1)


class ImageNetNormalised(nn.Module):
    """The same network, but it wants (pixels - mean) / std."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x * STD[0] + MEAN[0]) * 2 - 1)


def suite_batch():
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_three_forms_give_the_model_s_own_logits(cnn, tmp_path, monkeypatch):
    x = suite_batch()
    with torch.no_grad():
        want = cnn(x)
    script = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(cnn, torch.zeros(1, 1, 28, 28)), str(script))
    from safetensors.torch import save_file

    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(weights))
    legacy = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in cnn.state_dict().items()}}, str(legacy))
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from re_analysis.models import create_model\n\n"
                                     "def build(num_classes):\n    return create_model('cnn28', num_classes, 1, 28)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    conv = InputConvention()
    models = {"torchscript": load_user_model(script, 5, 1, 28, conv),
              "safetensors + arch": load_user_model(weights, 5, 1, 28, conv, arch="cnn28"),
              "torch.save + arch": load_user_model(legacy, 5, 1, 28, conv, arch="cnn28"),
              "entry point": load_user_model(weights, 5, 1, 28, conv, entry="mypkg:build")}
    for name, m in models.items():
        with torch.no_grad():
            assert torch.allclose(m(x), want, atol=1e-5), name
    assert models["safetensors + arch"].has_features and not models["torchscript"].has_features
    with torch.no_grad():  # without features of its own, the features are the logits
        assert torch.allclose(models["torchscript"].features(x), want, atol=1e-5)


@pytest.mark.parametrize("wrapper, convention", [(ZeroOne, InputConvention.parse(pixels="0-1")),
                                                  (ImageNetNormalised, InputConvention.parse(normalize="0.485,0.229"))])
def test_input_adapters_feed_the_model_its_own_convention(cnn, tmp_path, wrapper, convention):
    script = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(wrapper(cnn).eval(), torch.zeros(1, 1, 28, 28)), str(script))
    x = suite_batch()
    m = load_user_model(script, 5, 1, 28, convention)
    with torch.no_grad():
        assert torch.allclose(m(x), cnn(x), atol=1e-5)
        # fed the suite's [-1, 1] as if it were the model's convention, the logits would differ
        assert not torch.allclose(load_user_model(script, 5, 1, 28, InputConvention())(x), cnn(x), atol=1e-3)


def test_bad_inputs_get_one_clear_error_each(cnn, tmp_path, monkeypatch):
    script = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(cnn, torch.zeros(1, 1, 28, 28)), str(script))
    conv = InputConvention()
    with pytest.raises(ReAnalysisError, match="returns shape \\(2, 5\\) but the private data has 7 classes"):
        load_user_model(script, 7, 1, 28, conv)
    with pytest.raises(ReAnalysisError, match="fails on images of shape \\(N, 3, 28, 28\\)"):
        load_user_model(script, 5, 3, 28, conv)
    junk = tmp_path / "notes.pt"
    junk.write_text("not a model")
    with pytest.raises(ReAnalysisError, match="does not load as a TorchScript model"):
        load_user_model(junk, 5, 1, 28, conv)
    with pytest.raises(ReAnalysisError, match="is not a model file the audit can read"):
        load_user_model(junk, 5, 1, 28, conv, arch="cnn28")
    pickled = tmp_path / "object.pt"
    torch.save({"model": nn.Linear(2, 2)}, str(pickled))  # a pickled object, never unpickled
    with pytest.raises(ReAnalysisError, match="is not a model file the audit can read"):
        load_user_model(pickled, 5, 1, 28, conv, arch="cnn28")
    with pytest.raises(ReAnalysisError, match="does not import"):
        load_user_model(None, 5, 1, 28, conv, entry="no_such_package_here:build")
    with pytest.raises(ReAnalysisError, match="pkg.module:function"):
        load_user_model(None, 5, 1, 28, conv, entry="nocolon")
    with pytest.raises(ReAnalysisError, match="is not an architecture of the suite"):
        load_user_model(script, 5, 1, 28, conv, arch="resnet9000")
    with pytest.raises(ReAnalysisError, match="does not exist"):
        load_user_model(tmp_path / "missing.pt", 5, 1, 28, conv)
    with pytest.raises(ReAnalysisError, match="either --pixels or --normalize"):
        InputConvention.parse(pixels="0-1", normalize="0.5,0.5")
    with pytest.raises(ReAnalysisError, match="--pixels must be one of"):
        InputConvention.parse(pixels="0-255")


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    """The embedded digits as a user would have them: private 0-4 and public 5-9 as class folders."""
    from PIL import Image

    from re_analysis.data import load_dataset, materialize

    root = tmp_path_factory.mktemp("digits")
    splits = load_dataset("mnist5k")
    for tree, parts, names in (("private", (splits.private_train, splits.private_test), range(5)),
                               ("public", (splits.public,), range(5, 10))):
        for part in parts:
            x, y = materialize(part)
            for i, (img, label) in enumerate(zip(x, y.tolist())):
                folder = root / tree / f"digit{list(names)[label]}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img[0].numpy()).save(folder / f"{tree}-{len(list(folder.iterdir()))}.png")
    return root


@pytest.mark.slow
def test_audit_of_an_exported_target_equals_the_study_of_that_target(digit_folders, tmp_path):
    """A target trained by the suite on the digits (as folders), exported as a state dict and as
    TorchScript: the audit's attack accuracy equals what the study measured for that target,
    same seed and budgets, and the report renders."""
    import pandas as pd
    from safetensors.torch import save_file

    from re_analysis.audit import AuditConfig, run_audit
    from re_analysis.study import load_preset, run_study
    from re_analysis.training import load_classifier

    params = {"private": str(digit_folders / "private"), "public": str(digit_folders / "public"), "channels": 1}
    preset = load_preset("smoke", dataset="folders", image_size=28, dataset_params=params,
                         defenses={"none": {}}, gap_figures=[])
    study = run_study(preset, tmp_path / "study", progress=False)
    target = load_classifier(tmp_path / "study" / study["target_dir"].iloc[0])
    save_file({k: v.contiguous() for k, v in target.state_dict().items()}, str(tmp_path / "target.safetensors"))
    torch.jit.save(torch.jit.trace(target, torch.zeros(1, 1, 28, 28)), str(tmp_path / "target.pt"))
    common = dict(private=params["private"], public=params["public"], image_size=28, channels=1, preset="smoke")
    by_state = run_audit(AuditConfig(model=str(tmp_path / "target.safetensors"), arch="cnn28", out=str(tmp_path / "audit"),
                                     **common), progress=False)
    audited = pd.read_csv(tmp_path / "audit" / "results.csv")
    for col in ("attack_accuracy_top1", "attack_accuracy_top1_closed", "attack_accuracy_pixel", "natural_accuracy"):
        assert audited[col].iloc[0] == pytest.approx(study[col].iloc[0], abs=1e-9), col
    html = by_state.read_text()
    assert by_state.name == "report.html" and "Leakage under each judge" in html and "<img" in html
    run_audit(AuditConfig(model=str(tmp_path / "target.pt"), out=str(tmp_path / "audit-ts"), **common), progress=False)
    scripted = pd.read_csv(tmp_path / "audit-ts" / "results.csv")
    assert scripted["attack_accuracy_top1"].iloc[0] == pytest.approx(study["attack_accuracy_top1"].iloc[0], abs=1e-9)
