"""The verdict on each claim of the paper, on tables with a known answer."""

import numpy as np
import pandas as pd
import pytest

from re_analysis.verdicts import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Roles, claim_verdicts, infer_roles,
                                  summarize_verdicts, verdict_from_interval)


def hits(defense: str, rate: float, attack: str = "gmi", seeds=(0, 1, 2), n: int = 150, rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in seeds:
        h = rng.random(n) < rate
        rows.append(pd.DataFrame({"dataset": "glyphs", "defense": defense, "attack": attack, "seed": s,
                                  "index": np.arange(n), "eval_hit": h.astype(int)}))
    return pd.concat(rows, ignore_index=True)


def natural(defense: str, rate: float, n: int = 400, rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    return pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": defense, "seed": s, "index": np.arange(n),
                                    "correct": (rng.random(n) < rate).astype(int)}) for s in (0, 1, 2)],
                     ignore_index=True)


def verdict(table, claim, **kw):
    v = claim_verdicts(table, roles=Roles(**kw.pop("roles", {})), **kw)
    return v[v["claim"] == claim]


def test_interval_rules():
    assert verdict_from_interval(-0.1, -0.2, -0.01, "negative") == SUPPORTED
    assert verdict_from_interval(0.1, 0.01, 0.2, "negative") == NOT_SUPPORTED
    assert verdict_from_interval(0.0, -0.1, 0.1, "negative") == INCONCLUSIVE
    assert verdict_from_interval(-0.01, -0.02, 0.0, "above", margin=0.03) == SUPPORTED
    assert verdict_from_interval(-0.1, -0.12, -0.08, "above", margin=0.03) == NOT_SUPPORTED


def test_claim_1_follows_the_paired_interval():
    none = hits("none", 0.7, rng_seed=1)
    lower = verdict(pd.concat([none, hits("random-erasing", 0.3, rng_seed=2)]), 1)
    assert lower["verdict"].tolist() == [SUPPORTED] and lower["estimate"].iloc[0] == pytest.approx(-0.4, abs=0.06)
    assert lower["ci_high"].iloc[0] < 0
    same = verdict(pd.concat([none, hits("random-erasing", 0.7, rng_seed=1)]), 1)  # identical hits: no difference
    assert same["verdict"].tolist() == [INCONCLUSIVE] and "covers zero" in same["note"].iloc[0]
    higher = verdict(pd.concat([none, hits("random-erasing", 0.95, rng_seed=3)]), 1)
    assert higher["verdict"].tolist() == [NOT_SUPPORTED]


def test_ceiling_and_chance_make_a_claim_inconclusive():
    ceiling = verdict(pd.concat([hits("none", 1.0), hits("random-erasing", 0.5, rng_seed=4)]), 1)
    assert ceiling["verdict"].tolist() == [INCONCLUSIVE] and "ceiling" in ceiling["note"].iloc[0]
    low = pd.concat([hits("none", 0.12, rng_seed=5), hits("random-erasing", 0.02, rng_seed=6)])
    chance = pd.DataFrame({"dataset": ["glyphs"], "defense": ["none"], "attack": ["gmi"], "chance_eval_hit": [0.10]})
    at_chance = verdict(low, 1, chance=chance)
    assert at_chance["verdict"].tolist() == [INCONCLUSIVE] and "chance" in at_chance["note"].iloc[0]
    assert verdict(low, 1)["verdict"].tolist() == [SUPPORTED]  # without the baseline the drop would count


def test_claim_2_little_cost_and_claim_7_dominance():
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2),
                   hits("nls", 0.6, rng_seed=7)])
    nat_small = pd.concat([natural("none", 0.95, rng_seed=1), natural("random-erasing", 0.95, rng_seed=1),
                           natural("nls", 0.95, rng_seed=1)])
    v2 = verdict(j, 2, natural=nat_small)
    assert v2["verdict"].tolist() == [SUPPORTED]
    nat_big = pd.concat([natural("none", 0.95, rng_seed=1), natural("random-erasing", 0.70, rng_seed=2)])
    assert verdict(j, 2, natural=nat_big)["verdict"].tolist() == [NOT_SUPPORTED]
    v7 = verdict(j, 7, natural=nat_small, roles={"baselines": ["nls"]})
    assert v7["verdict"].tolist() == [SUPPORTED] and v7["comparison"].iloc[0] == "random-erasing vs nls"


def test_claims_3_and_4_on_feature_tables():
    j = pd.concat([hits("none", 0.7), hits("random-erasing", 0.3, rng_seed=2)])
    rng = np.random.default_rng(0)
    gap = pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": d, "attack": "gmi", "seed": s, "index": np.arange(100),
                                   "nearer_erased": (rng.random(100) < p).astype(int)})
                     for d, p in (("none", 0.3), ("random-erasing", 0.8)) for s in (0, 1, 2)])
    assert verdict(j, 3, gap=gap)["verdict"].tolist() == [SUPPORTED]
    sep = pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": d, "seed": s, "index": np.arange(100),
                                   "margin": rng.normal(m, 0.05, 100)})
                     for d, m in (("none", 0.3), ("random-erasing", -0.2)) for s in (0, 1, 2)])
    assert verdict(j, 4, separation=sep)["verdict"].tolist() == [NOT_SUPPORTED]


def test_ablation_and_composition_claims_and_summary():
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2),
                   hits("re-partial-p0.5", 0.6, rng_seed=3), hits("re-fixed-center", 0.3, rng_seed=2),
                   hits("nls", 0.6, rng_seed=4), hits("random-erasing+nls", 0.2, rng_seed=5)])
    roles = infer_roles(j["defense"].unique())
    assert roles.partial == ["re-partial-p0.5"] and roles.location == ["re-fixed-center"]
    assert roles.baselines == ["nls"] and roles.compositions == {"nls": "random-erasing+nls"}
    v = claim_verdicts(j, roles=roles)
    got = {c: v[v["claim"] == c]["verdict"].tolist() for c in (5, 6, 8)}
    assert got == {5: [SUPPORTED], 6: [INCONCLUSIVE], 8: [SUPPORTED]}
    s = summarize_verdicts(v).set_index("claim")
    assert s.loc[1, "verdict"] == SUPPORTED and s.loc[6, "verdict"] == INCONCLUSIVE


def test_a_study_with_one_defense_has_no_verdicts_rather_than_an_error():
    # Found when a study of the undefended target alone (LOMMA-GMI at its own budget) failed in
    # its tables with KeyError 'claim' after an hour of attacks.
    v = claim_verdicts(hits("none", 0.5, rng_seed=1))
    assert v.empty and "verdict" in v.columns
    s = summarize_verdicts(v)
    assert s.empty and list(s.columns)[:4] == ["claim", "claim_text", "dataset", "verdict"]
