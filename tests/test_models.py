import pytest
import torch

from re_analysis import ReAnalysisError, create_model, list_models

CASES = {"cnn28": (1, 28), "lenet28": (1, 28), "vgg16": (3, 64), "ir152": (3, 64),
         "facenet64": (3, 64), "resnet18": (3, 64)}


def test_registry_lists_the_literature_models():
    assert set(CASES) <= set(list_models())


@pytest.mark.parametrize("name", sorted(CASES))
def test_features_are_penultimate_and_forward_gives_logits(name):
    channels, size = CASES[name]
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_channels=channels, image_size=size).eval()
    x = torch.randn(2, channels, size, size)
    f = m.features(x)
    assert f.shape == (2, m.feature_dim)
    logits = m(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, m.head(f))


def test_known_feature_widths():
    assert create_model("vgg16", 10, 3, 64).feature_dim == 2048  # 512 x 2 x 2, as in GMI
    assert create_model("ir152", 10, 3, 64).feature_dim == 512
    n152 = sum(p.numel() for p in create_model("ir152", 10, 3, 64).parameters())
    n50 = sum(p.numel() for p in create_model("facenet64", 10, 3, 64).parameters())
    assert n152 > 1.5 * n50  # 152 layers really are deeper than 50


def test_bad_model_requests():
    with pytest.raises(ReAnalysisError, match="unknown model 'vgg19'"):
        create_model("vgg19", 5)
    with pytest.raises(ReAnalysisError, match="at least 32 px"):
        create_model("ir152", 5, 3, 16)
    with pytest.raises(ReAnalysisError, match="num_classes"):
        create_model("cnn28", 1, 1, 28)


@pytest.mark.parametrize("name", ["cnn28s", "preresnet8", "lenet28"])
def test_channels_last_changes_the_layout_not_the_logits(name):
    from re_analysis.models.inputs import channels_last

    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_channels=1, image_size=28).eval()
    x = torch.randn(4, 1, 28, 28)
    before = m(x)
    m2, x2, labels = channels_last(m, x, torch.arange(4))
    assert m2 is m and x2.is_contiguous(memory_format=torch.channels_last)
    assert labels.tolist() == [0, 1, 2, 3]  # anything that is not an image batch passes unchanged
    conv = next(p for p in m.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    torch.testing.assert_close(m(x2), before, rtol=1e-4, atol=1e-5)
