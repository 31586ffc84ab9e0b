import numpy as np
import pandas as pd
import pytest
from scipy import stats

from re_analysis import ReAnalysisError
from re_analysis.evaluation import compare_with_none, judgement_intervals
from re_analysis.metrics import (NO_DIFFERENCE, bootstrap_interval, hierarchical_bootstrap, paired_comparison,
                                 proportion_sample_size, reconstructions_per_class)


def test_bootstrap_interval_on_a_known_binomial_matches_the_normal_approximation():
    hits = np.r_[np.ones(60), np.zeros(140)]  # 60 / 200 = 0.3
    m, lo, hi = bootstrap_interval(hits, n_resamples=20_000, seed=1)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 200)  # Wald half-width, 0.0635
    assert m == 0.3
    assert lo == pytest.approx(0.3 - half, abs=0.01) and hi == pytest.approx(0.3 + half, abs=0.01)


def test_bootstrap_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = [lo <= 0.7 <= hi for lo, hi in
               (bootstrap_interval(rng.random(100) < 0.7, n_resamples=2000, seed=i)[1:] for i in range(300))]
    assert 0.90 <= np.mean(covered) <= 0.985


def test_hierarchical_bootstrap_widens_with_seed_to_seed_spread():
    rng = np.random.default_rng(0)
    seeds = np.repeat([0, 1, 2, 3, 4], 40)
    homogeneous = (rng.random(200) < 0.5).astype(float)
    spread = np.concatenate([rng.random(40) < p for p in (0.1, 0.3, 0.5, 0.7, 0.9)]).astype(float)
    _, lo_h, hi_h = hierarchical_bootstrap(homogeneous, seeds, n_resamples=4000)
    _, lo_s, hi_s = hierarchical_bootstrap(spread, seeds, n_resamples=4000)
    _, lo_f, hi_f = bootstrap_interval(spread, n_resamples=4000)
    assert hi_s - lo_s > 1.5 * (hi_f - lo_f)  # seeds differ: the flat bootstrap is too narrow
    # seeds alike: resampling both levels counts the within-seed noise twice, so the interval
    # is conservative, about sqrt(2) times the flat one (Davison & Hinkley 1997, sec. 3.8)
    assert 1.0 < (hi_h - lo_h) / (hi_f - lo_f) < 1.7
    # one seed is the ordinary bootstrap
    assert hierarchical_bootstrap(spread[:40], seeds[:40], seed=3) == bootstrap_interval(spread[:40], seed=3)


def test_paired_comparison_hand_computed_and_verdicts():
    seeds = np.repeat([0, 1, 2], 30)
    none = np.ones(90)
    lowered = np.tile([1.0, 0.0, 0.0], 30)  # the defense removes 2 of 3 hits in every seed
    out = paired_comparison(lowered, none, seeds, n_resamples=4000)
    assert out["difference"] == pytest.approx(-2 / 3)
    assert out["ci_high"] < 0 and out["verdict"] == "lower" and out["p_value"] < 0.001
    same = paired_comparison(none, none, seeds)
    assert (same["difference"], same["p_value"], same["verdict"]) == (0.0, 1.0, NO_DIFFERENCE)
    # 2 discordant pairs in 90: the interval covers zero -> no measurable difference
    tiny = none.copy()
    tiny[[5, 50]] = 0
    out = paired_comparison(tiny, none, seeds, n_resamples=4000)
    assert out["ci_low"] <= 0 <= out["ci_high"] and out["verdict"] == NO_DIFFERENCE and out["p_value"] > 0.2


def test_paired_p_value_agrees_with_an_exact_sign_test():
    rng = np.random.default_rng(3)
    a = (rng.random(150) < 0.8).astype(float)
    b = np.where(rng.random(150) < 0.15, 1 - a, a)  # flip some pairs
    out = paired_comparison(b, a, n_resamples=20_000)
    d = b - a
    exact = stats.binomtest(int((d > 0).sum()), int((d != 0).sum()), 0.5).pvalue  # McNemar's exact test
    assert out["p_value"] == pytest.approx(exact, abs=0.03)


def test_sample_size_hand_computed_and_its_power_simulated():
    # Fleiss: (1.95996 sqrt(2 .45 .55) + 0.84162 sqrt(.25 + .24))^2 / .01 = 387.4 -> 388
    assert proportion_sample_size(0.5, 0.10, 0.05, 0.80) == 388
    assert reconstructions_per_class(num_classes=5, num_seeds=3) == 26  # 388 / 15
    rng = np.random.default_rng(0)
    n = 388
    a, b = rng.binomial(n, 0.5, 4000) / n, rng.binomial(n, 0.4, 4000) / n
    pooled = (a + b) / 2
    z = (a - b) / np.sqrt(2 * pooled * (1 - pooled) / n)
    assert np.mean(np.abs(z) > 1.959964) == pytest.approx(0.80, abs=0.03)


def test_statistics_bad_input():
    with pytest.raises(ReAnalysisError, match="empty"):
        bootstrap_interval([])
    with pytest.raises(ReAnalysisError, match="NaN"):
        hierarchical_bootstrap([1.0, np.nan])
    with pytest.raises(ReAnalysisError, match="one seed per value"):
        hierarchical_bootstrap([1, 0, 1], [0, 1])
    with pytest.raises(ReAnalysisError, match="same reconstructions under both"):
        paired_comparison([1, 0], [1, 0, 1])
    with pytest.raises(ReAnalysisError, match="must lie in"):
        proportion_sample_size(0.05, 0.10)


def test_intervals_and_comparisons_over_judgement_tables():
    rows = []
    for defense, p in (("none", 1.0), ("random-erasing", 0.0)):
        for seed in (0, 1, 2):
            for i in range(10):
                rows.append({"dataset": "d", "attack": "gmi", "defense": defense, "seed": seed, "index": i,
                             "eval_hit": p if i < 8 else 1 - p, "pixel_hit": 1.0})
    table = pd.DataFrame(rows)
    iv = judgement_intervals(table, n_resamples=2000).set_index("defense")
    assert iv.loc["none", "eval_hit"] == pytest.approx(0.8) and iv.loc["random-erasing", "eval_hit"] == pytest.approx(0.2)
    assert iv.loc["none", "eval_hit_ci_low"] < 0.8 < iv.loc["none", "eval_hit_ci_high"]
    assert iv.loc["none", "n_seeds"] == 3 and iv.loc["none", "pixel_hit_ci_low"] == 1.0
    cmp = compare_with_none(table, "eval_hit", n_resamples=2000)
    assert len(cmp) == 1 and cmp.loc[0, "defense"] == "random-erasing"
    assert cmp.loc[0, "difference"] == pytest.approx(-0.6) and cmp.loc[0, "verdict"] == "lower"
    assert compare_with_none(table, "pixel_hit", n_resamples=2000).loc[0, "verdict"] == NO_DIFFERENCE
