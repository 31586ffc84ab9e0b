"""The verdict rules' error rates on synthetic studies whose truth is known.

Each case simulates whole studies the way the suite's tables come out of a real one: per
seed, every arm's target trained separately (a seed effect per arm), identities that are
hard or easy for every target (an identity effect shared by the arms), Bernoulli hits, chance
samples per identity, per-image natural accuracy, a feature-space gap share per
reconstruction and held-out separation margins. Where the truth is "no effect", neither
"supported" nor "not supported" may come out more than 5% of the time, per claim; where the
truth is an effect, the rate it is found is reported (and must be far above 5%).
"""

import os

import numpy as np
import pandas as pd
import pytest

from re_analysis.verdicts import (LITTLE_COST, NOT_SUPPORTED, SEPARATION_MARGIN, SUPPORTED, Roles, claim_verdicts,
                                  summarize_verdicts)

# More replicates for a measurement (benchmarks/RESULTS.md): RE_ANALYSIS_RULE_REPLICATES=300 pytest -s ...
REPLICATES = int(os.environ.get("RE_ANALYSIS_RULE_REPLICATES", 60))
ROLES = Roles(partial=["re-partial-p0.5"], partial_control=["re-partial-boxes"], location=["re-fixed-center"],
              baselines=["bido"], compositions={"bido": "random-erasing+bido"})


def synthetic_study(rng, accuracy, chance=0.1, natural=None, share=None, margin=None, seeds=5, ids=40,
                    sd_seed=0.05, sd_id=0.15, chance_per_class=60, test_images=600, with_chance=True):
    """The tables of one simulated study: ``accuracy`` (arm -> true attack accuracy), ``chance``
    (one rate, or arm -> rate), ``natural`` (arm -> natural accuracy, default 0.82 each),
    ``share`` (arm -> true share of reconstructions nearer erased, default 0.5), ``margin``
    (arm -> true mean held-out separation margin, default 0.3)."""
    arms = list(accuracy)
    chance = chance if isinstance(chance, dict) else {a: chance for a in arms}
    natural = {a: 0.82 for a in arms} | (natural or {})
    share = {a: 0.5 for a in arms} | (share or {})
    margin = {a: 0.3 for a in arms} | (margin or {})
    identity = rng.normal(0, sd_id, (seeds, ids))  # a hard font is hard for every target of its seed
    judged, chanced, nat, gap, sep = [], [], [], [], []
    labels = np.arange(ids)
    for arm in arms:
        for s in range(seeds):
            p = np.clip(accuracy[arm] + rng.normal(0, sd_seed) + identity[s], 0, 1)
            key = {"dataset": "glyphs", "defense": arm, "attack": "lomma-gmi", "seed": s}
            judged.append(pd.DataFrame({**key, "index": labels, "label": labels,
                                        "hit_top1": (rng.random(ids) < p).astype(int), "hit_target": 1}))
            if with_chance:
                q = np.clip(chance[arm] + rng.normal(0, 0.02, ids), 0, 1)
                chanced.append(pd.DataFrame({**key, "label": np.repeat(labels, chance_per_class),
                                             "hit_top1": (rng.random(ids * chance_per_class)
                                                          < np.repeat(q, chance_per_class)).astype(int)}))
            n = np.clip(natural[arm] + rng.normal(0, 0.01), 0, 1)
            nat.append(pd.DataFrame({"dataset": "glyphs", "defense": arm, "seed": s, "index": np.arange(test_images),
                                     "correct": (rng.random(test_images) < n).astype(int)}))
            g = np.clip(share[arm] + rng.normal(0, 0.05) + rng.normal(0, 0.1, ids), 0, 1)
            gap.append(pd.DataFrame({**key, "index": labels, "label": labels,
                                     "nearer_erased": (rng.random(ids) < g).astype(int)}))
            m = margin[arm] + rng.normal(0, 0.02)
            sep.append(pd.DataFrame({"dataset": "glyphs", "defense": arm, "seed": s, "index": np.arange(200),
                                     "label": np.arange(200) % ids, "margin": rng.normal(m, 0.2, 200),
                                     "split": "test"}))
    cat = lambda parts: pd.concat(parts, ignore_index=True) if parts else None  # noqa: E731
    return dict(judgements=cat(judged), chance=cat(chanced), natural=cat(nat), gap=cat(gap), separation=cat(sep))


def rates(case, replicates=REPLICATES, seed=0, roles=ROLES, **kw):
    """Share of replicates whose summary verdict per claim is supported / not supported."""
    rng = np.random.default_rng(seed)
    counts = {}
    for _ in range(replicates):
        tables = synthetic_study(rng, **case)
        v = claim_verdicts(**tables, roles=roles, judges=("top1",), primary_attack="lomma-gmi", **kw)
        for r in summarize_verdicts(v, attack="lomma-gmi").itertuples():
            c = counts.setdefault(r.claim, {SUPPORTED: 0, NOT_SUPPORTED: 0})
            if r.verdict in c:
                c[r.verdict] += 1
    return {claim: {k: n / replicates for k, n in c.items()} for claim, c in counts.items()}


ALL_ARMS = ("none", "random-erasing", "re-partial-p0.5", "re-partial-boxes", "re-fixed-center", "bido",
            "random-erasing+bido")


def test_no_effect_anywhere_gives_neither_verdict_more_than_5_percent():
    """Every arm equal: every attack claim, claim 3 at its level (one half, as the controls),
    claim 2 and claim 4 at their non-inferiority margins (the boundary is the null there)."""
    case = dict(accuracy={a: 0.3 for a in ALL_ARMS}, natural={"random-erasing": 0.82 - LITTLE_COST},
                margin={"random-erasing": 0.3 - SEPARATION_MARGIN})
    got = rates(case)
    assert set(got) == {1, 2, 3, 4, 5, 6, 7, 8}
    print("no effect:", {c: (r[SUPPORTED], r[NOT_SUPPORTED]) for c, r in sorted(got.items())})
    for claim, r in got.items():
        assert r[SUPPORTED] <= 0.05 and r[NOT_SUPPORTED] <= 0.05, (claim, r)


def test_a_clear_effect_is_found_and_its_opposite_refuted():
    n = max(30, REPLICATES // 2)
    lower = rates(dict(accuracy={"none": 0.35, "random-erasing": 0.15}), replicates=n, roles=None)
    higher = rates(dict(accuracy={"none": 0.3, "random-erasing": 0.5}), replicates=n, seed=1, roles=None)
    print(f"claim 1, RE 20 points below none: supported {lower[1][SUPPORTED]:.2f}; "
          f"20 points above: not supported {higher[1][NOT_SUPPORTED]:.2f}")
    assert lower[1][SUPPORTED] >= 0.5 and lower[1][NOT_SUPPORTED] == 0
    assert higher[1][NOT_SUPPORTED] >= 0.5 and higher[1][SUPPORTED] == 0


def test_nothing_is_supported_where_nothing_leaks():
    at_chance = rates(dict(accuracy={a: 0.1 for a in ALL_ARMS}, chance=0.1), replicates=30)
    for claim in (1, 5, 6, 7, 8):
        assert at_chance[claim][SUPPORTED] <= 0.05, (claim, at_chance[claim])
    # none exactly at chance and RE below it: the drop is real but there was nothing to protect
    below = rates(dict(accuracy={"none": 0.15, "random-erasing": 0.03}, chance=0.15), replicates=30, roles=None)
    assert below[1][SUPPORTED] <= 0.05


def test_without_chance_rates_no_attack_claim_is_supported():
    got = rates(dict(accuracy={"none": 0.4, "random-erasing": 0.1, "re-partial-p0.5": 0.4, "re-partial-boxes": 0.1,
                               "re-fixed-center": 0.4, "bido": 0.4, "random-erasing+bido": 0.1},
                     with_chance=False), replicates=10)
    for claim in (1, 5, 6, 7, 8):
        assert got[claim][SUPPORTED] == 0, (claim, got[claim])


def test_a_15_point_utility_loss_refutes_claims_2_and_8():
    case = dict(accuracy={"none": 0.4, "random-erasing": 0.2, "bido": 0.4, "random-erasing+bido": 0.2},
                natural={"random-erasing": 0.67, "random-erasing+bido": 0.67})
    got = rates(case, replicates=20, roles=Roles(baselines=["bido"], compositions={"bido": "random-erasing+bido"}))
    assert got[2][NOT_SUPPORTED] >= 0.95 and got[8][NOT_SUPPORTED] >= 0.95 and got[8][SUPPORTED] == 0
    assert got[7][SUPPORTED] == 0  # RE leaks less than BiDO but costs 15 points: a trade, not a win


def test_margins_of_zero_never_support_claim_4():
    got = rates(dict(accuracy={"none": 0.3, "random-erasing": 0.3}, margin={"none": 0.0, "random-erasing": 0.0}),
                replicates=30, roles=None)
    assert got[4][SUPPORTED] == 0


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_identical_seed_means_keep_a_valid_interval(n_seeds):
    """Rare hits (a weak attack, 40 identities): identical seed means happen; no interval has
    zero width, and the 95% intervals still cover the true difference."""
    from re_analysis.metrics.stats import paired_comparison

    rng = np.random.default_rng(n_seeds)
    covered, zero, ties = [], 0, 0
    for _ in range(400):
        seeds = np.repeat(np.arange(n_seeds), 40)
        a = (rng.random(len(seeds)) < 0.02).astype(float)
        b = (rng.random(len(seeds)) < 0.02).astype(float)
        out = paired_comparison(a, b, seeds, np.tile(np.arange(40), n_seeds))
        means = [(a - b)[seeds == s].mean() for s in range(n_seeds)]
        ties += np.ptp(means) == 0
        if np.isfinite(out["ci_low"]):
            zero += out["ci_high"] - out["ci_low"] == 0
            covered.append(out["ci_low"] <= 0 <= out["ci_high"])
        else:  # nothing varies at all: no interval, so nothing claimed
            covered.append(True)
    assert ties > 0 and zero == 0
    assert np.mean(covered) >= 0.93
