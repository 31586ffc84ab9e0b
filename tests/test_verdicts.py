"""The verdict on each claim of the paper, on tables with a known answer: every rule can fail."""

import numpy as np
import pandas as pd
import pytest

from re_analysis import ReAnalysisError
from re_analysis.verdicts import (INCONCLUSIVE, NO_VERDICT, NOT_SUPPORTED, RULES_VERSION, SUPPORTED, Roles,
                                  claim_verdicts, combine_verdicts, infer_roles, leak, summarize_verdicts,
                                  verdict_from_interval)


def hits(defense: str, rate: float, attack: str = "gmi", seeds=(0, 1, 2), ids: int = 40, restarts: int = 3,
         rng_seed: int = 0, column: str = "hit_top1"):
    """Per reconstruction: ``ids`` identities x ``restarts`` per seed, each a Bernoulli(rate) hit."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in seeds:
        n = ids * restarts
        rows.append(pd.DataFrame({"dataset": "glyphs", "defense": defense, "attack": attack, "seed": s,
                                  "index": np.arange(n), "label": np.repeat(np.arange(ids), restarts),
                                  column: (rng.random(n) < rate).astype(int), "hit_target": 1}))
    return pd.concat(rows, ignore_index=True)


def chance(defense: str, rate: float, attack: str = "gmi", seeds=(0, 1, 2), ids: int = 40, per_class: int = 200,
           rng_seed: int = 9):
    rng = np.random.default_rng(rng_seed)
    n = ids * per_class
    return pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": defense, "attack": attack, "seed": s,
                                    "label": np.repeat(np.arange(ids), per_class),
                                    "hit_top1": (rng.random(n) < rate).astype(int)}) for s in seeds],
                     ignore_index=True)


def low_chance(table, rate=0.01):
    """Chance samples for every arm of ``table``, far below its accuracy: the attack leaks."""
    return pd.concat([chance(d, rate, attack=a, seeds=tuple(g["seed"].unique()), rng_seed=k)
                      for k, ((d, a), g) in enumerate(table.groupby(["defense", "attack"]))], ignore_index=True)


def natural(defense: str, rate: float, n: int = 4000, rng_seed: int = 0, seeds=(0, 1, 2)):
    rng = np.random.default_rng(rng_seed)
    return pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": defense, "seed": s, "index": np.arange(n),
                                    "correct": (rng.random(n) < rate).astype(int)}) for s in seeds],
                     ignore_index=True)


def verdict(table, claim, **kw):
    kw.setdefault("chance", low_chance(table))
    v = claim_verdicts(table, roles=Roles(**kw.pop("roles", {})), **kw)
    return v[v["claim"] == claim]


def test_interval_rules():
    assert verdict_from_interval(-0.1, -0.2, -0.01, "negative") == SUPPORTED
    assert verdict_from_interval(0.1, 0.01, 0.2, "negative") == NOT_SUPPORTED
    assert verdict_from_interval(0.0, -0.1, 0.1, "negative") == INCONCLUSIVE
    assert verdict_from_interval(-0.01, -0.02, 0.0, "above", margin=0.03) == SUPPORTED
    assert verdict_from_interval(-0.1, -0.12, -0.08, "above", margin=0.03) == NOT_SUPPORTED


def test_claim_1_follows_the_paired_interval_and_says_what_it_rules_out():
    none = hits("none", 0.7, rng_seed=1)
    lower = verdict(pd.concat([none, hits("random-erasing", 0.3, rng_seed=2)]), 1)
    assert lower["verdict"].tolist() == [SUPPORTED] and lower["estimate"].iloc[0] == pytest.approx(-0.4, abs=0.06)
    assert lower["ci_high"].iloc[0] < 0 and lower["n_units"].iloc[0] == 120  # 3 seeds x 40 identities
    assert lower["method"].iloc[0].startswith("t over 3 seed means")
    assert (lower["rules"] == RULES_VERSION).all() and lower["primary"].all()
    same = verdict(pd.concat([none, hits("random-erasing", 0.7, rng_seed=1)]), 1)  # identical hits: no difference
    assert same["verdict"].tolist() == [INCONCLUSIVE] and "no interval" in same["note"].iloc[0]
    near = verdict(pd.concat([none, hits("random-erasing", 0.68, rng_seed=11)]), 1).iloc[0]
    assert near["verdict"] == INCONCLUSIVE and near["gate"] == ""
    assert near["rules_out"] == pytest.approx(max(abs(near["ci_low"]), abs(near["ci_high"])))
    assert f"no effect larger than {100 * near['rules_out']:.1f} points" in near["note"]
    assert 0 < near["mde"] < 1 and "post hoc" in near["mde_source"]
    higher = verdict(pd.concat([none, hits("random-erasing", 0.95, rng_seed=3)]), 1)
    assert higher["verdict"].tolist() == [NOT_SUPPORTED]


def test_claim_1_shows_the_natural_accuracy_difference_and_the_designs_power():
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2)])
    nat = pd.concat([natural("none", 0.9, rng_seed=1), natural("random-erasing", 0.75, rng_seed=2)])
    design = {"seed": 0.0055, "unit": 0.287, "within": 0.0, "source": "a pilot"}
    row = verdict(j, 1, natural=nat, design_components=design).iloc[0]
    assert row["verdict"] == SUPPORTED  # claim 1 is not a trade-off: utility is shown, never a gate
    assert row["natural_estimate"] == pytest.approx(-0.15, abs=0.04) and row["natural_ci_high"] < 0
    from re_analysis.metrics.stats import design_mde
    assert row["mde"] == pytest.approx(design_mde(design, 3, 40)) and row["mde_source"] == "design: a pilot"


def test_restarts_of_one_identity_do_not_narrow_the_interval():
    # the same identity means repeated 1 or 10 times per identity: the same clusters, the same interval
    a = pd.concat([hits("none", 0.7, rng_seed=1, restarts=1), hits("random-erasing", 0.4, rng_seed=2, restarts=1)])
    many = pd.concat([a.assign(index=a["index"] * 10 + k) for k in range(10)], ignore_index=True)
    one, ten = verdict(a, 1).iloc[0], verdict(many, 1).iloc[0]
    assert (one["ci_low"], one["ci_high"]) == pytest.approx((ten["ci_low"], ten["ci_high"]))


def test_the_chance_gate_cannot_vanish():
    low = pd.concat([hits("none", 0.12, rng_seed=5), hits("random-erasing", 0.02, rng_seed=6)])
    none_only = verdict(low, 1, chance=None).iloc[0]  # no chance rows: never silently ungated
    assert none_only["verdict"] == INCONCLUSIVE and none_only["gate"] == "no chance rate"
    assert "no chance rate for none" in none_only["note"] and np.isnan(none_only["rules_out"])
    c = pd.concat([chance("none", 0.15), chance("random-erasing", 0.02)])
    at_chance = verdict(low, 1, chance=c).iloc[0]
    assert at_chance["verdict"] == INCONCLUSIVE and at_chance["gate"] == "no leak"
    assert "does not leak against none" in at_chance["note"] and "nothing to protect" in at_chance["note"]
    assert "rules out" not in at_chance["note"] and np.isnan(at_chance["rules_out"])
    assert at_chance["leak_ci_low"] <= 0 and not at_chance["can_refute"]
    leaks = verdict(low, 1, chance=pd.concat([chance("none", 0.01), chance("random-erasing", 0.02)])).iloc[0]
    assert leaks["verdict"] == SUPPORTED and leaks["leak_ci_low"] > 0
    # claim 8 is gated on ITS reference arm (the baseline), not on none; claim 7 on the baseline too
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2),
                   hits("bido", 0.12, rng_seed=3), hits("random-erasing+bido", 0.02, rng_seed=4)])
    c8 = pd.concat([chance(d, r) for d, r in (("none", 0.01), ("random-erasing", 0.01), ("bido", 0.11),
                                              ("random-erasing+bido", 0.01))])
    roles = {"baselines": ["bido"], "compositions": {"bido": "random-erasing+bido"}}
    v8 = verdict(j, 8, chance=c8, roles=roles)
    assert v8["verdict"].tolist() == [INCONCLUSIVE] and "against bido" in v8["note"].iloc[0]
    v7 = verdict(j, 7, chance=c8, roles=roles,
                 natural=pd.concat([natural(d, 0.9, rng_seed=k) for k, d in enumerate(j["defense"].unique())]))
    assert v7["verdict"].tolist() == [INCONCLUSIVE] and v7["gate"].tolist() == ["no leak"]
    assert verdict(j, 7, chance=None, roles=roles)["gate"].tolist() == ["no chance rate"]


def test_leak_pairs_each_identity_with_its_own_chance_rate():
    j = pd.DataFrame({"defense": "none", "seed": np.repeat([0, 1], 3), "label": [0, 1, 2] * 2,
                      "hit_top1": [1, 1, 0, 1, 0, 0]})
    c = pd.DataFrame({"defense": "none", "seed": [0, 0, 0, 1, 1], "label": [0, 0, 1, 0, 1],
                      "hit_top1": [1, 0, 0, 0, 1]})
    out = leak(j, c, "hit_top1", "none")
    # seed 0: identities 0, 1, 2 -> 1 - 0.5, 1 - 0, 0 - 0.25 (no samples of class 2: the seed's mean chance)
    # seed 1: 1 - 0, 0 - 1, 0 - 0.5; seed means 0.4167 and -0.1667
    assert out["estimate"] == pytest.approx((1.25 / 3 - 0.5 / 3) / 2)
    assert out["method"].startswith("t over 2 seed means") and np.isfinite(out["ci_low"])
    one = leak(j[j["seed"] == 0], c, "hit_top1", "none")
    assert one["method"].startswith("t over 3 identity means") and np.isfinite(one["ci_low"])
    assert leak(j, c.assign(defense="re"), "hit_top1", "none") is None


def test_fewer_than_three_seeds_give_no_verdict():
    j = pd.concat([hits("none", 0.7, seeds=(0, 1), rng_seed=1), hits("random-erasing", 0.2, seeds=(0, 1), rng_seed=2)])
    v = verdict(j, 1)
    assert v["verdict"].tolist() == [NO_VERDICT] and "fewer than 3 seeds" in v["note"].iloc[0]


def test_claim_2_little_cost_and_claim_7_needs_every_baseline():
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2),
                   hits("nls", 0.6, rng_seed=7), hits("bido", 0.3, rng_seed=8)])
    nat_small = pd.concat([natural(d, 0.95, rng_seed=k) for k, d in enumerate(("none", "random-erasing", "nls", "bido"))])
    assert verdict(j, 2, natural=nat_small)["verdict"].tolist() == [SUPPORTED]
    nat_big = pd.concat([natural("none", 0.95, rng_seed=1), natural("random-erasing", 0.70, rng_seed=2)])
    assert verdict(j, 2, natural=nat_big)["verdict"].tolist() == [NOT_SUPPORTED]
    v7 = verdict(j, 7, natural=nat_small, roles={"baselines": ["nls", "bido"]})
    assert v7["verdict"].tolist() == [SUPPORTED, INCONCLUSIVE]  # beats NLS, not BiDO (same attack accuracy)
    s = summarize_verdicts(claim_verdicts(j, natural=nat_small, chance=low_chance(j), roles=Roles(baselines=["nls", "bido"])))
    assert s.set_index("claim").loc[7, "verdict"] == INCONCLUSIVE  # one baseline beaten is not "the baselines"
    # RE leaks less than NLS but costs 15 points more: a trade, not a win
    nat_re_costly = pd.concat([natural("nls", 0.95, rng_seed=1), natural("random-erasing", 0.80, rng_seed=2)])
    v = verdict(j, 7, natural=nat_re_costly, roles={"baselines": ["nls"]}).iloc[0]
    assert v["verdict"] == INCONCLUSIVE and v["gate"] == "utility" and "trades utility" in v["note"]


def gap_table(shares, rng, accepted=None):
    return pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": d, "attack": "gmi", "seed": s,
                                    "index": np.arange(120), "label": np.repeat(np.arange(40), 3),
                                    "nearer_erased": (rng.random(120) < p).astype(int)})
                      for d, p in shares for s in (0, 1, 2)])


def test_claim_3_reads_every_reconstruction_with_the_accepted_share_beside_it():
    j = pd.concat([hits("none", 0.7), hits("random-erasing", 0.3, rng_seed=2), hits("bido", 0.5, rng_seed=3)])
    rng = np.random.default_rng(0)
    v = verdict(j, 3, gap=gap_table((("none", 0.3), ("random-erasing", 0.8), ("bido", 0.3)), rng),
                roles={"baselines": ["bido"]})
    assert v["verdict"].tolist() == [SUPPORTED] * 3
    assert v["comparison"].tolist() == ["random-erasing: share nearer erased vs one half", "random-erasing vs none",
                                        "random-erasing vs bido"]
    assert v["threshold"].tolist() == [0.5, 0.0, 0.0]
    # erasing pulls every model's reconstructions to erased features: RE no different from the control
    v = verdict(j, 3, gap=gap_table((("none", 0.3), ("random-erasing", 0.8), ("bido", 0.8)), rng),
                roles={"baselines": ["bido"]})
    assert v["verdict"].tolist()[2] != SUPPORTED
    assert summarize_verdicts(claim_verdicts(j, gap=gap_table((("none", 0.3), ("random-erasing", 0.8),
                                                                  ("bido", 0.8)), rng),
                                             roles=Roles(baselines=["bido"]))).set_index("claim").loc[3, "verdict"] \
        != SUPPORTED
    # reconstructions the target rejects still count; the accepted-only share is shown beside
    g = gap_table((("none", 0.3), ("random-erasing", 0.8)), rng)
    half = j.assign(hit_target=np.where((j["defense"] == "random-erasing") & (j["index"] % 2 == 0), 0, 1))
    v = verdict(half, 3, gap=g)
    assert len(v) == 2 and v.iloc[0]["verdict"] == SUPPORTED
    assert np.isfinite(v.iloc[0]["accepted_estimate"]) and v.iloc[0]["accepted_estimate"] != v.iloc[0]["estimate"]
    none_accepted = verdict(j.assign(hit_target=0), 3, gap=g)
    assert len(none_accepted) == 2 and none_accepted["accepted_estimate"].isna().all()


def sep_table(margins, rng, split="test", sd=0.05):
    return pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": d, "seed": s, "index": np.arange(100),
                                    "label": np.arange(100) % 10, "margin": rng.normal(m, sd, 100), "split": split})
                      for d, m in margins for s in (0, 1, 2)])


def test_claim_4_needs_separated_features_and_non_inferiority():
    j = pd.concat([hits("none", 0.7), hits("random-erasing", 0.3, rng_seed=2)])
    rng = np.random.default_rng(0)
    ok = verdict(j, 4, separation=sep_table((("none", 0.3), ("random-erasing", 0.3)), rng, sd=0.02))
    assert ok["verdict"].tolist() == [SUPPORTED, SUPPORTED]
    assert summarize_verdicts(claim_verdicts(j, separation=sep_table((("none", 0.3), ("random-erasing", 0.3)), rng, sd=0.02))
                              ).set_index("claim").loc[4, "verdict"] == SUPPORTED
    below = verdict(j, 4, separation=sep_table((("none", 0.3), ("random-erasing", 0.1)), rng))
    assert below["verdict"].tolist()[1] == NOT_SUPPORTED  # RE's margin clearly below none's
    # margins of zero everywhere: non-inferior to none, but nothing is separated
    zero = claim_verdicts(j, separation=sep_table((("none", 0.0), ("random-erasing", 0.0)), rng))
    assert summarize_verdicts(zero).set_index("claim").loc[4, "verdict"] != SUPPORTED
    # a positive margin on TRAINING features, which any trained model has, is not read
    assert verdict(j, 4, separation=sep_table((("none", 0.3), ("random-erasing", 0.3)), rng, split="train")).empty


def test_claims_5_6_and_8_need_agreeing_arms_and_comparable_utility():
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2),
                   hits("re-partial-p0.5", 0.6, rng_seed=3), hits("re-partial-boxes", 0.3, rng_seed=4),
                   hits("re-fixed-center", 0.3, rng_seed=2), hits("re-fixed-corner", 0.6, rng_seed=5),
                   hits("nls", 0.6, rng_seed=4), hits("random-erasing+nls", 0.2, rng_seed=5)])
    roles = infer_roles(j["defense"].unique())
    assert roles.partial == ["re-partial-p0.5"] and roles.partial_control == ["re-partial-boxes"]
    assert roles.location == ["re-fixed-center", "re-fixed-corner"]
    assert roles.baselines == ["nls"] and roles.compositions == {"nls": "random-erasing+nls"}
    same = pd.concat([natural(d, 0.9, rng_seed=k) for k, d in enumerate(j["defense"].unique())])
    v = claim_verdicts(j, natural=same, chance=low_chance(j), roles=roles)
    got = {c: v[v["claim"] == c]["verdict"].tolist() for c in (5, 6, 8)}
    assert got == {5: [SUPPORTED, SUPPORTED], 6: [INCONCLUSIVE, SUPPORTED], 8: [SUPPORTED]}
    s = summarize_verdicts(v).set_index("claim")
    assert s.loc[1, "verdict"] == SUPPORTED and s.loc[5, "verdict"] == SUPPORTED
    assert s.loc[6, "verdict"] == INCONCLUSIVE  # the centre box does not differ from random boxes
    # the partial arm is also clearly more accurate than RE: its higher leak is not credited to p
    unequal = pd.concat([same[same["defense"] != "re-partial-p0.5"], natural("re-partial-p0.5", 0.99, rng_seed=2)])
    v5 = verdict(j, 5, natural=unequal, roles=roles.__dict__)
    assert v5["verdict"].tolist()[0] == INCONCLUSIVE and v5["gate"].tolist()[0] == "utility"
    assert v5["natural_estimate"].iloc[0] < -0.03
    # RE+NLS costs 15 points against NLS: RE does not ADD to NLS, it trades utility for privacy
    costly = pd.concat([same[same["defense"] != "random-erasing+nls"], natural("random-erasing+nls", 0.75, rng_seed=3)])
    v8 = verdict(j, 8, natural=costly, roles=roles.__dict__).iloc[0]
    assert v8["verdict"] == NOT_SUPPORTED and "trades utility" in v8["note"]


def test_summary_combines_rows_by_intersection_union_and_holm():
    assert combine_verdicts([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine_verdicts([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine_verdicts([SUPPORTED, NOT_SUPPORTED]) == NOT_SUPPORTED
    assert combine_verdicts([SUPPORTED, NO_VERDICT]) == NO_VERDICT
    rows = pd.DataFrame({"verdict": [NOT_SUPPORTED, INCONCLUSIVE, INCONCLUSIVE], "can_refute": True,
                         "p_against": [0.012, 0.5, 0.6]})
    assert combine_verdicts(rows) == INCONCLUSIVE  # 0.012 < 0.025 alone, not after Holm over 3 rows (0.0083)
    assert combine_verdicts(rows.assign(p_against=[0.005, 0.5, 0.6])) == NOT_SUPPORTED
    assert combine_verdicts(rows.assign(p_against=[0.005, 0.5, 0.6], can_refute=False)) == INCONCLUSIVE
    # the summary reads the pre-registered primary attack only
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2),
                   hits("none", 0.7, attack="ppa", rng_seed=3), hits("random-erasing", 0.7, attack="ppa", rng_seed=3)])
    v = claim_verdicts(j, chance=low_chance(j), primary_attack="gmi")
    assert v[v["attack"] == "gmi"]["primary"].all() and not v[v["attack"] == "ppa"]["primary"].any()
    assert summarize_verdicts(v, attack="gmi").set_index("claim").loc[1, "verdict"] == SUPPORTED
    assert summarize_verdicts(v, attack="ppa").set_index("claim").loc[1, "verdict"] == INCONCLUSIVE
    assert (summarize_verdicts(v, attack="gmi")["rules"] == RULES_VERSION).all()


def test_identical_seed_means_never_give_certainty():
    """RE loses 1 of 40 hits in each of 3 seeds: three identical seed means (the old rules gave
    [-0.025, -0.025] and "supported"). The identity floor keeps an honest interval."""
    none = hits("none", 1.0, restarts=1)
    re_ = none.assign(defense="random-erasing", hit_top1=np.where(none["index"] == 7, 0, 1))
    row = verdict(pd.concat([none, re_]), 1).iloc[0]
    assert row["estimate"] == pytest.approx(-0.025)
    assert row["ci_high"] - row["ci_low"] > 0.05 and row["ci_high"] > 0 and row["verdict"] == INCONCLUSIVE
    assert "identity floor" in row["method"]


def test_pairs_must_hold_the_same_identity():
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2)])
    shuffled = j.assign(label=np.where(j["defense"] == "random-erasing", (j["label"] + 1) % 40, j["label"]))
    with pytest.raises(ReAnalysisError, match="different labels under the two arms"):
        claim_verdicts(shuffled, chance=low_chance(j))


def test_a_study_with_one_defense_has_no_verdicts_rather_than_an_error():
    # Found when a study of the undefended target alone (LOMMA-GMI at its own budget) failed in
    # its tables with KeyError 'claim' after an hour of attacks.
    v = claim_verdicts(hits("none", 0.5, rng_seed=1))
    assert v.empty and "verdict" in v.columns
    s = summarize_verdicts(v)
    assert s.empty and list(s.columns)[:4] == ["claim", "claim_text", "dataset", "verdict"]


def test_a_new_claim_is_one_registration_and_reaches_every_table():
    """Issue 37: a claim is one rule in one place; registered, its rows reach verdicts.csv, the
    summary, the forest plot and the conclusions' overview without a branch anywhere else."""
    from re_analysis.report import verdict_overview
    from re_analysis.report.forest import forest_rows
    from re_analysis.verdicts import Claim, paired, register_claim, unregister_claim, verdict_row

    def rule(ev, roles, ctx):  # RE's natural accuracy at least none's (no margin)
        cmp = paired(ev.natural, "correct", roles.re, "none") if ev.natural is not None else None
        return [verdict_row(9, "glyphs", "", "natural accuracy", f"{roles.re} vs none", cmp, ctx, threshold=0.0,
                            below=False)] if cmp else []

    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2)])
    nat = pd.concat([natural("none", 0.80, rng_seed=1), natural("random-erasing", 0.90, rng_seed=2)])
    register_claim(Claim(9, "RE costs no natural accuracy at all", "natural", "natural.csv", rule,
                         arms=lambda roles: [roles.re, "none"]))
    try:
        v = claim_verdicts(j, natural=nat, chance=low_chance(j))
        nine = v[v["claim"] == 9]
        assert nine["verdict"].tolist() == [SUPPORTED] and nine["claim_text"].iloc[0].startswith("RE costs no")
        s = summarize_verdicts(v).set_index("claim")
        assert s.loc[9, "verdict"] == SUPPORTED
        assert "9. random-erasing vs none" in forest_rows(v, attack="gmi")["label"].tolist()
        assert "9. RE costs no natural accuracy at all" in verdict_overview(s.reset_index(), v)["claim"].tolist()
        with pytest.raises(ReAnalysisError, match="claim 9 is registered already"):
            register_claim(Claim(9, "again", "natural", "", rule, arms=lambda roles: []))
    finally:
        unregister_claim(9)
    assert 9 not in set(claim_verdicts(j, natural=nat, chance=low_chance(j))["claim"])


def test_a_new_ablation_registered_with_its_role_is_compared_as_one():
    """Issue 37: roles are declared at registration, not guessed from names."""
    from re_analysis.defenses import DEFENSES
    from re_analysis.defenses.random_erasing import register_ablation

    register_ablation("middle-box", "RE ablation: every box in the middle", role="location", location="center")
    try:
        roles = infer_roles(["none", "random-erasing", "middle-box", "bido"])
        assert roles.location == ["middle-box"] and roles.baselines == ["bido"]  # not a baseline for claim 7
        j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2),
                       hits("middle-box", 0.6, rng_seed=3)])
        v = verdict(j, 6, natural=pd.concat([natural(d, 0.9, rng_seed=k) for k, d in enumerate(j["defense"].unique())]),
                    roles=roles.__dict__)
        assert v["comparison"].tolist() == ["middle-box vs random-erasing"]
    finally:
        DEFENSES._items.pop("middle-box"), DEFENSES._meta.pop("middle-box"), DEFENSES._descriptions.pop("middle-box")
