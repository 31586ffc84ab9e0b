import numpy as np
import pytest
import torch

from re_analysis import ReAnalysisError
from re_analysis.features import class_separation, feature_gap, feature_scale, hull_overlap, umap_embed
from re_analysis.metrics import PrivateIndex, attack_accuracy, frechet_distance, knn_distance, prdc, prdc_per_class


def anchors_knn(recon, recon_y, priv, priv_y):
    """The anchors' convention: per class, torch.cdist(...) ** 2, min over private, mean."""
    out = []
    for c in np.unique(recon_y):
        d = torch.cdist(torch.from_numpy(recon[recon_y == c]).double(), torch.from_numpy(priv[priv_y == c]).double()) ** 2
        out.append(d.min(1).values)
    return torch.cat(out).numpy()


def random_set(seed, n=600, d=64, classes=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


def test_knn_distance_equals_brute_force():
    priv, py = random_set(0)
    rec, ry = random_set(1, n=90)
    ours = knn_distance(priv, py, rec, ry, per_sample=True)
    order = np.argsort(ry, kind="stable")
    ref = anchors_knn(rec[order], ry[order], priv, py)
    np.testing.assert_allclose(ours[order], ref, rtol=1e-12)
    assert knn_distance(priv, py, rec, ry) == pytest.approx(ref.mean(), rel=1e-12)
    # torch tensors are accepted too, and a reused index gives the same answer
    index = PrivateIndex(torch.from_numpy(priv), torch.from_numpy(py))
    assert knn_distance(index, None, torch.from_numpy(rec), torch.from_numpy(ry)) == pytest.approx(ref.mean(), rel=1e-12)


def test_knn_distance_is_squared_and_same_class_only():
    priv = np.array([[0.0, 0.0], [10.0, 0.0]], "float32")
    assert knn_distance(priv, [0, 1], np.array([[3.0, 4.0]], "float32"), [0]) == 25.0  # squared, not 5
    assert knn_distance(priv, [0, 1], np.array([[9.0, 0.0]], "float32"), [0]) == 81.0  # class 1 point ignored


def test_hnsw_index_recall_is_measured():
    priv, py = random_set(2, n=3000, d=32, classes=3)
    rec, ry = random_set(3, n=200, d=32, classes=3)
    approx = PrivateIndex(priv, py, kind="hnsw")
    assert approx.recall_against_exact(rec, ry) >= 0.9
    assert PrivateIndex(priv, py).recall_against_exact(rec, ry) == 1.0


@pytest.mark.parametrize("make, message", [
    (lambda p, r: (r[:, :5], p), "has 5 dimensions but private features has 64"),
    (lambda p, r: (np.where(np.arange(r.size).reshape(r.shape) == 7, np.nan, r), p), "NaN or infinite values in 1 row"),
    (lambda p, r: (np.where(np.arange(r.size).reshape(r.shape) == 7, np.inf, r), p), "NaN or infinite"),
    (lambda p, r: (r[0], p), "must be a 2-D"),
])
def test_knn_distance_bad_input(make, message):
    priv, py = random_set(0)
    rec, ry = random_set(1, n=10)
    r, p = make(priv, rec)
    with pytest.raises(ReAnalysisError, match=message):
        knn_distance(p, py, r, ry if r.ndim == 2 else ry[:1])


def test_reconstruction_labels_absent_from_private_set():
    priv, py = random_set(0, classes=3)
    rec, _ = random_set(1, n=4)
    with pytest.raises(ReAnalysisError, match=r"labels \[7\] have no private features"):
        knn_distance(priv, py, rec, [0, 1, 7, 7])


def test_prdc_matches_the_prdc_package():
    prdc_pkg = pytest.importorskip("prdc")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 16)).astype("float32")
    fake = (rng.normal(size=(300, 16)) * 1.3 + 0.4).astype("float32")
    ours = prdc(real, fake, nearest_k=5, block=64)
    ref = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    for k in ("precision", "recall", "density", "coverage"):
        assert ours[k] == pytest.approx(float(ref[k]), abs=1e-9), k


def test_frechet_distance_hand_computed():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # same covariance, mean shifted by (1, 2, 2): FID = |shift|^2 = 9
    assert frechet_distance(a, a + np.array([1, 2, 2])) == pytest.approx(9, rel=1e-6)
    # 1-D: (mu1-mu2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    x, y = rng.normal(0, 1, size=(20000, 1)), rng.normal(0, 2, size=(20000, 1))
    s1, s2 = np.var(x, ddof=1), np.var(y, ddof=1)
    hand = (x.mean() - y.mean()) ** 2 + s1 + s2 - 2 * np.sqrt(s1 * s2)
    assert frechet_distance(x, y) == pytest.approx(hand, rel=1e-6)


def test_feature_gap_separates_known_cases():
    rng = np.random.default_rng(0)
    priv = rng.normal(size=(300, 8)).astype("float32")
    y = np.repeat(np.arange(3), 100)
    erased = priv + np.float32(4.0)  # the "erased" cloud sits elsewhere
    near_erased = erased[::10] + rng.normal(scale=0.05, size=(30, 8)).astype("float32")
    near_priv = priv[::10] + rng.normal(scale=0.05, size=(30, 8)).astype("float32")
    g_e = feature_gap(priv, y, erased, y, near_erased, y[::10])
    g_p = feature_gap(priv, y, erased, y, near_priv, y[::10])
    assert g_e["fraction_nearer_erased"] == 1.0 and g_p["fraction_nearer_erased"] == 0.0
    assert g_e["mean_dist_private"] > g_e["mean_dist_erased"] and g_p["mean_dist_private"] < g_p["mean_dist_erased"]
    assert g_p["coverage_private"] > g_e["coverage_private"]
    assert set(g_e["per_class"]) == {0, 1, 2}


def test_hull_overlap_known_squares():
    sq = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
    assert hull_overlap(sq, sq) == pytest.approx(1.0)
    assert hull_overlap(sq, sq + [1, 0]) == pytest.approx(2 / 6)  # overlap 2, union 6
    assert hull_overlap(sq, sq + [5, 5]) == 0.0


def test_umap_is_seeded():
    x = np.random.default_rng(0).normal(size=(80, 10))
    a, b = umap_embed(x, seed=1), umap_embed(x, seed=1)
    assert a.shape == (80, 2) and np.array_equal(a, b)


def test_umap_leaves_torch_on_its_threads():
    """numba (under umap-learn) sets the process's OpenMP threads to every core; torch read that
    count, so a model trained after an embedding in the same process came out other (the study's
    one-process tables differed from a fresh process's). In a fresh process with one thread:"""
    import os
    import subprocess
    import sys

    code = ("import numpy as np, torch; from re_analysis.features import umap_embed; before = torch.get_num_threads(); "
            "umap_embed(np.random.default_rng(0).normal(size=(60, 8))); print(before, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.split()[-2:] == ["1", "1"]


def test_attack_accuracy_hand_computed():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # logits = mean intensity per class prototype
            m = x.flatten(1).mean(1, keepdim=True)
            return torch.cat([-m, m, torch.zeros_like(m)], 1) + self.w

    imgs = torch.stack([torch.full((1, 4, 4), v) for v in (-0.9, 0.9, 0.9, -0.9)])
    acc = attack_accuracy(Fixed(), imgs, torch.tensor([0, 1, 0, 2]), topk=(1, 2))
    # predictions: 0, 1, 1, 0 -> top-1 hits 2/4; top-2 of 3 classes is not reported (3 <= 2 * 2)
    assert acc["top1"] == 0.5 and np.isnan(acc["top2"])


def test_prdc_per_class_by_hand():
    # class 0: real at 0, 1, 2, 3, 4 (1-D); k = 3 radii: 3, 2, 2, 2, 3
    real = np.array([[0.], [1.], [2.], [3.], [4.], [100.], [101.], [102.], [103.], [104.]], "float32")
    ry = np.repeat([0, 1], 5)
    # class 0 fakes: 1.5 (inside), 2.5 (inside), 9 (outside every ball), 10 (outside); class 1 fakes at real + 0.25
    fake = np.array([[1.5], [2.5], [9.], [10.], [100.25], [101.25], [102.25], [103.25]], "float32")
    fy = np.repeat([0, 1], 4)
    m = prdc_per_class(real, ry, fake, fy, nearest_k=3)
    c0 = prdc(real[:5], fake[:4], nearest_k=3)
    assert c0["precision"] == 0.5  # 1.5 and 2.5 lie in some real ball, 9 and 10 in none
    # 1.5 and 2.5 each lie in all five balls (radii 3, 2, 2, 2, 3); density = 10 / (k * 4 fakes)
    assert c0["density"] == pytest.approx(10 / 12)
    assert m["per_class"][0] == c0 and m["per_class"][1] == prdc(real[5:], fake[4:], nearest_k=3)
    for k in ("precision", "recall", "density", "coverage"):
        assert m[k] == pytest.approx((m["per_class"][0][k] + m["per_class"][1][k]) / 2)
    assert (m["classes"], m["nearest_k"]) == (2, 3)


def test_prdc_per_class_does_not_count_another_class_as_precise():
    rng = np.random.default_rng(0)
    real = np.r_[rng.normal(0, 1, (50, 4)), rng.normal(8, 1, (50, 4))].astype("float32")
    ry = np.repeat([0, 1], 50)
    fake = real[[0, 1, 2, 3, 4, 50, 51, 52, 53, 54]] + np.float32(0.01)
    fy = np.array([1] * 5 + [0] * 5)  # every reconstruction looks like the OTHER class
    assert prdc(real, fake, nearest_k=3)["precision"] == 1.0  # pooled over classes: "precise"
    assert prdc_per_class(real, ry, fake, fy)["precision"] == 0.0


def test_gap_is_normalised_by_the_targets_own_scale():
    rng = np.random.default_rng(1)
    priv = rng.normal(size=(120, 6)).astype("float32")
    y = np.repeat([0, 1, 2], 40)
    erased, recon = priv + np.float32(2.0), priv[::6] + np.float32(1.0)
    g = feature_gap(priv, y, erased, y, recon, y[::6])
    nn = [np.sort(((priv[y == c][:, None] - priv[y == c][None]) ** 2).sum(-1), 1)[:, 1] for c in range(3)]
    assert g["feature_scale"] == pytest.approx(np.median(np.concatenate(nn)), rel=1e-5)
    assert g["mean_dist_private_normalized"] == pytest.approx(g["mean_dist_private"] / g["feature_scale"])
    # another target whose features are 10x larger: raw distances x100, normalised ones equal
    g10 = feature_gap(priv * 10, y, erased * 10, y, recon * 10, y[::6])
    assert g10["mean_dist_private"] == pytest.approx(100 * g["mean_dist_private"], rel=1e-4)
    assert g10["mean_dist_private_normalized"] == pytest.approx(g["mean_dist_private_normalized"], rel=1e-4)
    assert g10["mean_dist_erased_normalized"] == pytest.approx(g["mean_dist_erased_normalized"], rel=1e-4)
    assert feature_scale(np.array([[0.], [2.], [10.], [13.]], "float32"), [0, 0, 1, 1]) == 6.5  # median(4, 4, 9, 9)


def test_class_separation_on_constructed_clusters():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    centres = np.array([[0, 0], [10, 0], [0, 10]], "float32")
    apart = (centres[y] + rng.normal(0, 0.5, (180, 2))).astype("float32")
    mixed = rng.normal(0, 1, (180, 2)).astype("float32")  # labels carry no geometry
    a, m = class_separation(apart, y), class_separation(mixed, y)
    assert a["nn_purity"] == 1.0 and a["margin"] > 0.8 and a["silhouette"] > 0.85
    # random labels: 2 of 3 neighbours belong to other classes, so the nearest other-class point
    # is usually nearer than the nearest same-class one (negative margin)
    assert m["nn_purity"] == pytest.approx(1 / 3, abs=0.12) and -0.4 < m["margin"] < 0 and abs(m["silhouette"]) < 0.1
    # by hand, 1-D: class 0 at 0, 1; class 1 at 3 -> point 0: same 1, other 3 -> (3 - 1) / 4
    s = class_separation(np.array([[0.], [1.], [3.], [3.5]], "float32"), [0, 0, 1, 1], silhouette=False)
    assert s["per_class"][0]["margin"] == pytest.approx(((3 - 1) / 4 + (2 - 1) / 3) / 2)
    with pytest.raises(ReAnalysisError, match="at least two classes"):
        class_separation(apart[:5], np.zeros(5, int))
