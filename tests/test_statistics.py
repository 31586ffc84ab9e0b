import numpy as np
import pandas as pd
import pytest
from scipy import stats

from re_analysis import ReAnalysisError
from re_analysis.metrics.stats import compare_with_none, judgement_intervals
from re_analysis.metrics import (NO_DIFFERENCE, bootstrap_interval, cluster_means, clustered_interval, design_mde,
                                 expected_half_width, minimum_detectable_effect, paired_comparison,
                                 variance_components)


def test_bootstrap_interval_on_a_known_binomial_matches_the_normal_approximation():
    hits = np.r_[np.ones(60), np.zeros(140)]  # 60 / 200 = 0.3
    m, lo, hi = bootstrap_interval(hits, n_resamples=20_000, seed=1)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 200)  # Wald half-width, 0.0635
    assert m == 0.3
    assert lo == pytest.approx(0.3 - half, abs=0.01) and hi == pytest.approx(0.3 + half, abs=0.01)


def simulate(n_seeds, ids, restarts, sd_seed, sd_id, p, rng):
    """Bernoulli hits with a known mean ``p`` and known seed and identity effects."""
    a = rng.normal(0, sd_seed, n_seeds)[:, None, None]
    b = rng.normal(0, sd_id, (n_seeds, ids))[:, :, None]
    prob = np.clip(p + a + b, 0, 1) * np.ones((n_seeds, ids, restarts))
    y = (rng.random(prob.shape) < prob).astype(float).ravel()
    seeds = np.repeat(np.arange(n_seeds), ids * restarts)
    units = np.tile(np.repeat(np.arange(ids), restarts), n_seeds)
    return y, seeds, units


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_clustered_intervals_cover_the_truth_with_seed_and_identity_effects(n_seeds):
    """A known answer: studies simulated with seed (sd 0.06) and identity (sd 0.12) effects and
    5 restarts per identity; the 95% interval covers the true mean at least 93% of the time,
    where the old interval (seeds then reconstructions) covered 83-94%."""
    rng = np.random.default_rng(n_seeds)
    covered, flat = [], []
    for k in range(400):
        y, seeds, units = simulate(n_seeds, 20, 5, 0.06, 0.12, 0.35, rng)
        out = clustered_interval(y, seeds, units)
        covered.append(out["ci_low"] <= 0.35 <= out["ci_high"])
        _, lo, hi = bootstrap_interval(y, n_resamples=500, seed=k)  # restarts taken as independent draws
        flat.append(lo <= 0.35 <= hi)
    assert np.mean(covered) >= 0.93
    assert np.mean(flat) < 0.85  # the interval that ignores clustering is too narrow


def test_paired_comparison_covers_a_known_difference_and_its_p_value_holds_its_level():
    rng = np.random.default_rng(7)
    covered = []
    for k in range(300):
        y0, seeds, units = simulate(3, 20, 3, 0.06, 0.12, 0.4, rng)
        shift = np.repeat(rng.normal(0, 0.04, 3), 60)  # the defense's effect also varies by seed
        y1 = (rng.random(len(y0)) < np.clip(0.3 + shift + (y0 - 0.4) * 0.3, 0, 1)).astype(float)
        out = paired_comparison(y1, y0, seeds, units)
        covered.append(out["ci_low"] <= -0.1 <= out["ci_high"])  # E[y1 - y0] = 0.3 - 0.4
    assert np.mean(covered) >= 0.93


def test_p_value_at_the_seed_level_is_not_fooled_by_restarts():
    rng = np.random.default_rng(11)
    false = []
    for _ in range(300):  # no effect; a seed-level random difference that restarts repeat
        y0, seeds, units = simulate(4, 10, 5, 0.0, 0.1, 0.5, rng)
        seed_shift = np.repeat(rng.normal(0, 0.08, 4), 50)
        y1 = (rng.random(len(y0)) < np.clip(0.5 + seed_shift, 0, 1)).astype(float)
        false.append(paired_comparison(y1, y0, seeds, units)["p_value"] < 0.05)
    assert np.mean(false) <= 0.08


def test_cluster_means_average_restarts_of_one_identity():
    means, seeds = cluster_means([1, 0, 1, 1, 0, 0], seeds=[0, 0, 0, 0, 1, 1], units=[3, 3, 4, 4, 3, 3])
    assert means.tolist() == [0.5, 1.0, 0.0] and seeds.tolist() == [0, 0, 1]
    out = clustered_interval([1, 1, 1, 0, 0, 0, 0, 1], seeds=[0, 0, 0, 0, 1, 1, 1, 1], units=[3, 3, 4, 4, 3, 3, 4, 4])
    seed_means = np.array([0.75, 0.25])  # identity means 1, 0.5 and 0, 0.5: the identity floor (0.18) < 0.25
    half = stats.t.ppf(0.975, 1) * seed_means.std(ddof=1) / np.sqrt(2)
    assert (out["estimate"], out["ci_low"], out["ci_high"]) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    assert not out["floored"]
    assert out["n_units"] == 4 and out["method"] == "t over 2 seed means"


def test_many_seeds_use_the_t_over_seed_means_and_one_seed_says_it_covers_identities_only():
    """One method at every seed count: the two-level bootstrap from 20 seeds counted the
    identity variance twice (resampled identities inside resampled seeds) and is gone."""
    rng = np.random.default_rng(2)
    y, seeds, units = simulate(20, 10, 2, 0.05, 0.1, 0.5, rng)
    out = clustered_interval(y, seeds, units)
    assert out["method"].startswith("t over 20 seed means") and out["ci_low"] < out["estimate"] < out["ci_high"]
    assert out["ci_low"] == pytest.approx(out["estimate"] - stats.t.ppf(0.975, 19) * out["se"])
    one = clustered_interval(y[seeds == 0], seeds[seeds == 0], units[seeds == 0])
    assert "seed-to-seed variation not covered" in one["method"] and one["df"] == 9


def test_the_identity_floor_and_no_interval_where_nothing_varies():
    seeds = np.repeat([0, 1, 2], 40)
    lost_one = np.tile(np.r_[np.zeros(39), -1.0], 3)  # three identical seed means, -0.025 each
    out = clustered_interval(lost_one, seeds, np.tile(np.arange(40), 3))
    floor = np.sqrt(3 * lost_one[:40].var(ddof=1) / 40) / 3  # sqrt(sum var_s / n_s) / S
    assert out["floored"] and out["se"] == pytest.approx(floor) and 0 < out["p_value"] < 1
    assert out["ci_low"] == pytest.approx(-0.025 - stats.t.ppf(0.975, 2) * floor)
    flat = clustered_interval(np.zeros(120), seeds)
    assert np.isnan(flat["ci_low"]) and np.isnan(flat["p_value"]) and "no variation at any level" in flat["method"]
    # where the seeds spread more than identities explain, the floor does not bind
    spread = clustered_interval(np.r_[np.zeros(40), np.ones(40), np.zeros(20), np.ones(20)], seeds)
    assert not spread["floored"]


def test_design_mde_has_its_power_at_few_degrees_of_freedom():
    c = {"seed": 0.0055, "unit": 0.287, "within": 0.0}
    for n_seeds in (3, 10):
        mde = design_mde(c, n_seeds, 40)
        se = np.sqrt((c["seed"] + c["unit"] / 40) / n_seeds)
        rng = np.random.default_rng(n_seeds)
        est = mde + se * rng.standard_normal(100_000)
        s_hat = se * np.sqrt(rng.chisquare(n_seeds - 1, 100_000) / (n_seeds - 1))
        power = np.mean(np.abs(est / s_hat) > stats.t.ppf(0.975, n_seeds - 1))
        assert power == pytest.approx(0.80, abs=0.01)
    # the normal-theory approximation falls short at 2 degrees of freedom
    se3 = np.sqrt((c["seed"] + c["unit"] / 40) / 3)
    assert minimum_detectable_effect(se3, 2) < design_mde(c, 3, 40)


def test_paired_comparison_hand_computed_and_verdicts():
    seeds = np.repeat([0, 1, 2], 30)
    none = np.ones(90)
    lowered = np.tile([1.0, 0.0, 0.0], 30)  # the defense removes 2 of 3 hits in every seed
    out = paired_comparison(lowered, none, seeds)
    assert out["difference"] == pytest.approx(-2 / 3)
    assert out["ci_high"] < 0 and out["verdict"] == "lower" and out["p_value"] < 0.01
    assert out["floored"]  # three identical seed means: the identities' spread sets the standard error
    same = paired_comparison(none, none, seeds)
    assert same["difference"] == 0.0 and np.isnan(same["p_value"]) and same["verdict"] == NO_DIFFERENCE
    # 2 discordant pairs in 90: the interval covers zero -> no measurable difference
    tiny = none.copy()
    tiny[[5, 50]] = 0
    out = paired_comparison(tiny, none, seeds)
    assert out["ci_low"] <= 0 <= out["ci_high"] and out["verdict"] == NO_DIFFERENCE and out["p_value"] > 0.1


def test_variance_components_and_the_design_they_size():
    rng = np.random.default_rng(5)
    runs = [variance_components(*simulate(8, 40, 5, 0.08, 0.15, 0.4, rng)) for _ in range(20)]
    mean = {k: np.mean([c[k] for c in runs]) for k in ("seed", "unit", "within")}  # unbiased estimates
    assert mean["unit"] == pytest.approx(0.15 ** 2, rel=0.15) and mean["seed"] == pytest.approx(0.08 ** 2, rel=0.5)
    assert mean["within"] == pytest.approx(0.4 * 0.6 - 0.15 ** 2 - 0.08 ** 2, abs=0.01)  # Bernoulli less the rest
    c = runs[0]
    assert (c["n_seeds"], c["units_per_seed"], c["restarts"]) == (8, 40, 5)
    # the half-width's formula, and that identities buy more than restarts
    hw = expected_half_width(c, 4, 40, 1)
    by_hand = stats.t.ppf(0.975, 3) * np.sqrt((c["seed"] + c["unit"] / 40 + c["within"] / 40) / 4)
    assert hw == pytest.approx(by_hand)
    assert expected_half_width(c, 4, 200, 1) < expected_half_width(c, 4, 40, 5)
    # simulated designs reach the half-width the formula predicts (within 15%)
    widths = []
    for _ in range(200):
        yy, ss, uu = simulate(4, 40, 1, 0.08, 0.15, 0.4, rng)
        o = clustered_interval(yy, ss, uu)
        widths.append((o["ci_high"] - o["ci_low"]) / 2)
    assert np.mean(widths) == pytest.approx(expected_half_width({"seed": 0.08 ** 2, "unit": 0.15 ** 2,
                                                                 "within": 0.4 * 0.6 - 0.15 ** 2 - 0.08 ** 2},
                                                                4, 40, 1), rel=0.15)


def test_minimum_detectable_effect_has_its_power():
    se, df = 0.03, 7
    mde = minimum_detectable_effect(se, df)
    rng = np.random.default_rng(0)
    # a true effect of size mde, estimated with standard error se on df degrees of freedom
    est = mde + se * rng.standard_t(df, 20_000)
    assert np.mean(np.abs(est / se) > stats.t.ppf(0.975, df)) == pytest.approx(0.80, abs=0.04)


def test_statistics_bad_input():
    with pytest.raises(ReAnalysisError, match="empty"):
        bootstrap_interval([])
    with pytest.raises(ReAnalysisError, match="NaN"):
        clustered_interval([1.0, np.nan])
    with pytest.raises(ReAnalysisError, match="one label per value"):
        clustered_interval([1, 0, 1], [0, 1])
    with pytest.raises(ReAnalysisError, match="same reconstructions under both"):
        paired_comparison([1, 0], [1, 0, 1])
    with pytest.raises(ReAnalysisError, match="at least 2 seeds"):
        expected_half_width({"seed": 0, "unit": 0, "within": 0.2}, 1, 10)


def test_intervals_and_comparisons_over_judgement_tables():
    rows = []
    for defense, p in (("none", 1.0), ("random-erasing", 0.0)):
        for seed in (0, 1, 2):
            for i in range(10):
                hit = p if i < 7 + seed else 1 - p  # seeds differ: 0.7, 0.8, 0.9 (none)
                rows.append({"dataset": "d", "attack": "gmi", "defense": defense, "seed": seed, "index": i,
                             "label": i // 2, "hit_top1": hit, "hit_pixel": 1.0})
    table = pd.DataFrame(rows)
    iv = judgement_intervals(table).set_index("defense")
    assert iv.loc["none", "hit_top1"] == pytest.approx(0.8) and iv.loc["random-erasing", "hit_top1"] == pytest.approx(0.2)
    # t over the seed means 0.7, 0.8, 0.9, the standard error at the identity floor (2 identities of 5
    # per seed alternate within them: their spread exceeds the seeds')
    ident = table[table["defense"] == "none"].groupby(["seed", "label"])["hit_top1"].mean()
    floor = np.sqrt(sum(g.var(ddof=1) / len(g) for _, g in ident.groupby(level="seed"))) / 3
    assert floor > 0.1 / np.sqrt(3)
    assert iv.loc["none", "hit_top1_ci_low"] == pytest.approx(0.8 - stats.t.ppf(0.975, 2) * floor)
    assert iv.loc["none", "n_seeds"] == 3 and iv.loc["none", "n_units"] == 15
    assert iv.loc["none", "hit_pixel"] == 1.0 and np.isnan(iv.loc["none", "hit_pixel_ci_low"])  # nothing varies
    cmp = compare_with_none(table, "hit_top1")
    assert len(cmp) == 1 and cmp.loc[0, "defense"] == "random-erasing"
    assert cmp.loc[0, "difference"] == pytest.approx(-0.6) and cmp.loc[0, "floored"]
    assert cmp.loc[0, "verdict"] == ("lower" if cmp.loc[0, "ci_high"] < 0 else NO_DIFFERENCE)
    assert compare_with_none(table, "hit_pixel").loc[0, "verdict"] == NO_DIFFERENCE


def test_a_proportions_interval_stays_within_0_and_1():
    """One seed, 5 identities, 4 of them always accepted: the t-interval over identity means
    reaches past 1; a proportion cannot, so the level interval is clipped there (and a
    difference or a margin, which may be negative, is not)."""
    from re_analysis.metrics.stats import clustered_interval, interval_table

    hits = np.array([1.0] * 16 + [0.0, 1.0, 1.0, 1.0])  # identity 4 accepted 3 times of 4
    units = np.repeat(np.arange(5), 4)
    free = clustered_interval(hits, np.zeros(20), units)
    assert free["ci_high"] > 1  # t over 5 means 1, 1, 1, 1, 0.75
    kept = clustered_interval(hits, np.zeros(20), units, bounds=(0.0, 1.0))
    assert kept["ci_high"] == 1.0 and kept["ci_low"] == pytest.approx(free["ci_low"]) and kept["estimate"] == 0.95
    t = pd.DataFrame({"seed": 0, "label": units, "hit": hits, "margin": hits - 0.96})
    row = interval_table(t, ["hit", "margin"], unit="label").iloc[0]
    assert row["hit_ci_high"] == 1.0 and row["margin_ci_low"] < 0 and row["margin_ci_high"] > 0.04
