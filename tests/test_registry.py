"""The one Registry behind datasets, models, defenses and attacks; the one input convention."""

import pytest
import torch

from re_analysis import ReAnalysisError
from re_analysis.attacks import ATTACKS
from re_analysis.data import DATASETS, hflip_preserves_labels, load_dataset
from re_analysis.defenses import DEFENSES
from re_analysis.features import extract_features
from re_analysis.models import create_model
from re_analysis.models.inputs import as_model_input, predict_logits
from re_analysis.models.registry import MODELS
from re_analysis.registry import Registry


def test_one_registry_class_serves_all_four():
    for reg, name in ((DATASETS, "mnist5k"), (MODELS, "cnn28"), (DEFENSES, "random-erasing"), (ATTACKS, "gmi")):
        assert isinstance(reg, Registry) and name in reg and name in reg.names() and reg.info()[name]
        with pytest.raises(ReAnalysisError, match=f"unknown {reg.kind} 'nope'; choose one of"):
            reg.get("nope")


def test_datasets_declare_whether_a_flip_keeps_labels():
    assert hflip_preserves_labels("mnist5k") is False
    assert hflip_preserves_labels("celeba") is True and hflip_preserves_labels("fashion-mnist") is True
    assert load_dataset("mnist5k").hflip_preserves_labels is False


def test_predict_logits_and_extract_features_share_one_input_convention():
    torch.manual_seed(0)
    m = create_model("cnn28", 5, 1, 28).eval()
    pixels = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    normed = as_model_input(pixels)
    assert normed.min() >= -1 and normed.max() <= 1
    bright = (normed + 1) / 2  # a float tensor without negative values is still read as normalised
    with torch.no_grad():
        assert torch.allclose(predict_logits(m, bright), m(bright), atol=1e-5)
        assert torch.allclose(extract_features(m, bright), m.features(bright), atol=1e-5)
        assert torch.allclose(extract_features(m, pixels), m.features(normed), atol=1e-5)
    with pytest.raises(ReAnalysisError, match="uint8 pixels or normalised floats"):
        as_model_input(torch.zeros(2, dtype=torch.int64))
