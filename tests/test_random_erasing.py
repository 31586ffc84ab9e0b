import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

from re_analysis import ReAnalysisError, RandomErasing, create_defense
from re_analysis.defenses import MIDRE_FILL, eraser_of, list_defenses, same_expected_area_scale

N, H, W = 4000, 100, 100


def erased_boxes(eraser, n=N, h=H, w=W, seed=0):
    """Boxes recovered from the erased pixels of a batch of zeros filled with 1."""
    x = torch.zeros(n, 1, h, w)
    out = eraser(x, generator=torch.Generator().manual_seed(seed))
    mask = out[:, 0] == 1
    rows, cols = mask.any(2), mask.any(1)
    hh, ww = rows.sum(1), cols.sum(1)
    top = rows.float().argmax(1)
    left = cols.float().argmax(1)
    assert torch.equal(mask.sum((1, 2)), hh * ww)  # each erased region is one rectangle
    return top.numpy(), left.numpy(), hh.numpy(), ww.numpy()


def test_each_image_gets_its_own_box_with_the_configured_area_and_shape():
    top, left, h, w = erased_boxes(RandomErasing(value=1.0))
    area = h * w / (H * W)
    assert (h > 0).all()  # p = 1: every image erased
    assert np.array_equal(h, w)  # ratio (1, 1): square boxes
    assert area.min() >= 0.1 - 0.01 and area.max() <= 0.4 + 0.01
    assert abs(area.mean() - 0.25) < 0.01  # uniform on (0.1, 0.4)
    assert stats.kstest(area, stats.uniform(0.1, 0.3).cdf).pvalue > 1e-3
    assert len({(a, b, c) for a, b, c in zip(top, left, h)}) > 0.9 * N  # boxes differ per image
    # positions uniform over the valid range
    rel_top = top / (H - h + 1)
    assert abs(rel_top.mean() - 0.5) < 0.02 and stats.kstest(rel_top, "uniform").pvalue > 1e-3


def test_matches_torchvision_box_distribution_per_image():
    ours = erased_boxes(RandomErasing(scale=(0.02, 0.33), ratio=(0.3, 3.3), value=1.0), n=1500, seed=1)
    tv = v2.RandomErasing(p=1.0, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=1.0)
    torch.manual_seed(1)
    ref = [tv(torch.zeros(1, H, W))[0] == 1 for _ in range(1500)]
    ref_h = np.array([int(m.any(1).sum()) for m in ref])
    ref_w = np.array([int(m.any(0).sum()) for m in ref])
    assert stats.ks_2samp(ours[2] * ours[3], ref_h * ref_w).pvalue > 1e-3
    assert stats.ks_2samp(np.log(ours[2] / ours[3]), np.log(ref_h / ref_w)).pvalue > 1e-3


def test_torchvision_on_a_batch_erases_one_shared_box_and_ours_does_not():
    x = torch.zeros(16, 1, 32, 32)
    torch.manual_seed(0)
    tv = v2.RandomErasing(p=1.0, value=1.0)(x)
    assert all(torch.equal(tv[0], tv[i]) for i in range(16))
    ours = RandomErasing(value=1.0)(x, generator=torch.Generator().manual_seed(0))
    assert sum(torch.equal(ours[0], ours[i]) for i in range(1, 16)) < 3


def test_probability_fixed_location_and_fill():
    _, _, h, _ = erased_boxes(RandomErasing(value=1.0, p=0.5), n=2000)
    assert abs((h > 0).mean() - 0.5) < 0.04
    top, left, h, w = erased_boxes(RandomErasing(value=1.0, location="fixed"), n=500)
    assert np.array_equal(top, (H - h) // 2) and np.array_equal(left, (W - w) // 2)
    t2, l2, h2, _ = erased_boxes(RandomErasing(scale=(0.2, 0.2), value=1.0, location="fixed"), n=50)
    assert len(set(zip(t2, l2, h2))) == 1  # one box for every image
    x = torch.full((2, 3, 40, 40), -5.0)
    out = RandomErasing()(x, generator=torch.Generator().manual_seed(0))
    erased = out[0, :, out[0, 0] != -5.0]
    assert torch.allclose(erased, torch.tensor(MIDRE_FILL).view(3, 1).expand_as(erased))
    grey = RandomErasing()(torch.full((1, 1, 40, 40), -5.0), generator=torch.Generator().manual_seed(0))
    assert math.isclose(float(grey[grey != -5.0].unique()), sum(MIDRE_FILL) / 3, rel_tol=1e-6)
    noisy = RandomErasing(value="random")(torch.zeros(4, 3, 40, 40), generator=torch.Generator().manual_seed(0))
    assert noisy.std() > 0.1


def test_seeded_and_single_image():
    e = RandomErasing()
    x = torch.randn(8, 3, 32, 32)
    a = e(x, generator=torch.Generator().manual_seed(3))
    b = e(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert e(x[0], generator=torch.Generator().manual_seed(3)).shape == (3, 32, 32)


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": (0.5, 0.1)}, "scale"), ({"scale": (0.0, 0.4)}, "scale"), ({"ratio": (0, 1)}, "ratio"),
    ({"p": 1.5}, "p must be"), ({"location": "middle"}, "location"), ({"location": (0.5, 2)}, "location"),
    ({"value": "grey"}, "value"),
    ({"value": (1.0, 2.0)}, None)])
def test_parameters_validated_at_construction(kwargs, match):
    if match is None:  # 2 fill values for 3 channels fails when called, naming the fix
        with pytest.raises(ReAnalysisError, match="one per channel"):
            RandomErasing(**kwargs)(torch.zeros(1, 3, 8, 8))
    else:
        with pytest.raises(ReAnalysisError, match=match):
            RandomErasing(**kwargs)


def test_defense_registry_and_parameters():
    d = create_defense("random-erasing", scale=[0.1, 0.8], location="fixed")
    assert d.params["scale"] == [0.1, 0.8] and d.params["location"] == "fixed"
    assert d.params["ratio"] == [1.0, 1.0] and d.params["p"] == 1.0  # MIDRE official defaults
    with pytest.raises(ReAnalysisError, match="bad parameter for defense 'random-erasing'"):
        create_defense("random-erasing", area=0.3)
    with pytest.raises(ReAnalysisError, match="takes no parameters"):
        create_defense("none", p=1)


def erased_fraction(name, n, size=28, seed=0):
    """Erased fraction of each of ``n`` images (size x size) under the defense ``name``."""
    x = torch.zeros(n, 1, size, size)
    out = create_defense(name).transform_batch(x, None, torch.Generator().manual_seed(seed))
    return (out != 0).flatten(1).float().mean(1).numpy()


def test_partial_erasure_keeps_the_expected_erased_area_per_image_seen():
    assert same_expected_area_scale((0.1, 0.4), 0.5) == (0.2, 0.8)
    d = create_defense("re-partial-p0.5")
    assert d.params["p"] == 0.5 and d.params["scale"] == [0.2, 0.8]
    with pytest.raises(ReAnalysisError, match="choose p > 0.40"):
        same_expected_area_scale((0.1, 0.4), 0.3)
    n = 20_000
    full, partial = erased_fraction("random-erasing", n), erased_fraction("re-partial-p0.5", n, seed=1)
    assert (full > 0).all() and abs((partial > 0).mean() - 0.5) < 0.015  # whole images seen only under p < 1
    # same expected erased area per image seen: the difference is within sampling error and tiny
    se = math.sqrt(full.var() / n + partial.var() / n)
    assert abs(full.mean() - partial.mean()) < 4 * se and abs(full.mean() - 0.25) < 0.01
    assert abs(partial[partial > 0].mean() - 0.5) < 0.01  # an erased image loses twice as much


@pytest.mark.parametrize("name, anchor", [("re-fixed-center", (0.5, 0.5)), ("re-fixed-corner", (0.0, 0.0)),
                                          ("re-fixed-edge", (0.5, 0.0))])
def test_fixed_location_ablations_move_only_the_box(name, anchor):
    fixed = erased_boxes(create_defense(name, value=1.0).eraser, n=3000, seed=2)
    rand = erased_boxes(create_defense("random-erasing", value=1.0).eraser, n=3000, seed=3)
    top, left, h, w = fixed
    assert np.array_equal(top, ((H - h) * anchor[0]).astype(int)) and np.array_equal(left, ((W - w) * anchor[1]).astype(int))
    assert stats.ks_2samp(h * w, rand[2] * rand[3]).pvalue > 1e-3  # same area distribution as MIDRE
    assert np.array_equal(h, w)  # square, as MIDRE
    params = {k: v for k, v in create_defense(name).params.items() if k != "location"}
    assert params == {k: v for k, v in create_defense("random-erasing").params.items() if k != "location"}


def test_area_sweep_and_fixed_properties():
    for hi in (0.2, 0.4, 0.6, 0.8):
        _, _, h, w = erased_boxes(create_defense(f"re-area{hi}", value=1.0).eraser, n=2000)
        area = h * w / (H * W)
        assert area.max() <= hi + 0.01 and area.min() >= 0.1 - 0.01 and abs(area.mean() - (0.1 + hi) / 2) < 0.01
    assert create_defense("re-area0.4").params == create_defense("random-erasing").params
    assert create_defense("re-area0.8", p=0.5).params["p"] == 0.5  # the other parameters stay settable
    with pytest.raises(ReAnalysisError, match="re-area0.8 fixes scale"):
        create_defense("re-area0.8", scale=[0.1, 0.3])
    with pytest.raises(ReAnalysisError, match="re-fixed-corner fixes location"):
        create_defense("re-fixed-corner", location="random")


def test_every_ablation_is_a_registered_name_usable_in_compositions():
    ablations = {"re-partial-p0.5", "re-partial-boxes", "re-fixed-center", "re-fixed-corner", "re-fixed-edge",
                 "re-area0.2", "re-area0.4", "re-area0.6", "re-area0.8"}
    assert ablations <= set(list_defenses())
    d = create_defense("re-fixed-corner+nls", alpha=-0.1)
    assert d.params["re-fixed-corner.location"] == "corner" and d.params["nls.alpha"] == -0.1
    assert eraser_of("re-fixed-corner+nls", {"alpha": -0.1}).location == "corner"
    assert eraser_of("re-area0.8").scale == (0.1, 0.8) and eraser_of("nls") is None


def test_partial_erasure_control_erases_every_image_with_the_p05_boxes():
    boxes, partial = create_defense("re-partial-boxes").params, create_defense("re-partial-p0.5").params
    assert boxes["scale"] == partial["scale"] == [0.2, 0.8] and boxes["p"] == 1.0 and partial["p"] == 0.5
    assert {k: v for k, v in boxes.items() if k != "p"} == {k: v for k, v in partial.items() if k != "p"}
    assert (erased_fraction("re-partial-boxes", 4000) > 0).all()


def test_random_erasing_records_how_much_ink_a_box_hides_each_epoch():
    """Centred 'glyphs' (a bright 10 x 10 square on black): a corner box hides mostly background,
    a centre box mostly ink; the counts restart every epoch."""
    x = torch.full((2000, 1, 28, 28), -1.0)
    x[:, :, 9:19, 9:19] = 1.0
    shares = {}
    for name in ("re-fixed-corner", "re-fixed-center", "random-erasing"):
        d = create_defense(name)
        for epoch in range(2):
            d.transform_batch(x[:1000], None, torch.Generator().manual_seed(epoch))
            d.transform_batch(x[1000:], None, torch.Generator().manual_seed(10 + epoch))
            shares[name, epoch] = d.epoch_stats()
        assert d.epoch_stats() == {}  # nothing seen since the last epoch
    corner, centre = shares["re-fixed-corner", 1], shares["re-fixed-center", 1]
    assert corner["foreground_erased_share"] < 0.4 < 0.9 < centre["foreground_erased_share"]
    assert corner["erased_foreground_share"] < 0.2 < 0.4 < centre["erased_foreground_share"]
    # the box is where the ink is: every centre box (at least 9 x 9 px of 28) lies inside or covers the square
    assert 0 < shares["random-erasing", 0]["foreground_erased_share"] < centre["foreground_erased_share"]
    assert shares["random-erasing", 0] != shares["random-erasing", 1]  # a fresh count per epoch
