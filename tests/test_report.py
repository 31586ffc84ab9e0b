"""The conclusions chapter's functions, on verdict tables with a known answer."""

import numpy as np
import pandas as pd

from re_analysis.report import (claim_by_judge, conclusion_caveats, inconclusive_reasons, judge_ceiling_table,
                                verdict_effect, verdict_overview)
from re_analysis.verdicts import Roles, claim_verdicts, summarize_verdicts


def hits(defense, rate, seed_rates=None, ids=30, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in (0, 1, 2):
        p = rate + (seed_rates[s] if seed_rates else 0)
        rows.append(pd.DataFrame({"dataset": "glyphs", "defense": defense, "attack": "gmi", "seed": s,
                                  "index": np.arange(ids), "label": np.arange(ids),
                                  "hit_top1": (rng.random(ids) < p).astype(int),
                                  "hit_pixel": (rng.random(ids) < 0.05).astype(int), "hit_target": 1}))
    return pd.concat(rows, ignore_index=True)


def chance_for(j, rate=0.01, per_class=50):
    """Unoptimised prior samples for every arm of ``j``, far below its accuracy: the attack leaks."""
    rng = np.random.default_rng(5)
    parts = []
    for (d, s), g in j.groupby(["defense", "seed"]):
        labels = np.repeat(np.sort(g["label"].unique()), per_class)
        parts.append(pd.DataFrame({"dataset": "glyphs", "defense": d, "attack": "gmi", "seed": s, "label": labels,
                                   "hit_top1": (rng.random(len(labels)) < rate).astype(int),
                                   "hit_pixel": (rng.random(len(labels)) < rate).astype(int)}))
    return pd.concat(parts, ignore_index=True)


def natural_for(defenses, n=2000, rate=0.8, flips=0.02):
    """Per test image: two targets of one seed agree on most images (a shared draw), each
    flipping its own 2%: equal natural accuracy, paired as the suite pairs it."""
    parts = []
    for s in (0, 1, 2):
        base = np.random.default_rng(100 + s).random(n) < rate
        for k, d in enumerate(defenses):
            flip = np.random.default_rng(10 * k + s).random(n) < flips
            parts.append(pd.DataFrame({"dataset": "glyphs", "defense": d, "seed": s, "index": np.arange(n),
                                       "correct": (base ^ flip).astype(int)}))
    return pd.concat(parts, ignore_index=True)


def tables():
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.2, rng_seed=2),
                   hits("bido", 0.6, (0.1, -0.1, 0.0), rng_seed=3)])
    v = claim_verdicts(j, chance=chance_for(j), roles=Roles(baselines=["bido"]))
    return v, summarize_verdicts(v, attack="gmi")


def test_verdict_effect_says_what_is_found_or_ruled_out():
    assert verdict_effect({"claim": 1, "verdict": "supported", "estimate": -0.12, "ci_low": -0.2,
                           "ci_high": -0.04}) == "-12.0 [-20.0, -4.0] points"
    assert verdict_effect({"claim": 1, "verdict": "inconclusive", "estimate": 0.01, "ci_low": -0.03,
                           "ci_high": 0.05, "rules_out": 0.05}) == "no effect larger than 5.0 points (+1.0 [-3.0, +5.0])"
    assert verdict_effect({"claim": 1, "verdict": "inconclusive", "estimate": np.nan}) == "no interval"


def test_overview_lists_every_claim_with_its_verdict_and_the_designs_power():
    v, s = tables()
    o = verdict_overview(s, v)
    assert len(o) == 8 and o["claim"].str.startswith("1.").iloc[0]
    one = o.iloc[0]
    assert one["verdict"] == "supported" and "random-erasing vs none" in one["effect found or ruled out [95% CI]"]
    assert one["design detects (80% power)"].endswith("points") and one["judged by"] == "open-set evaluation model, gmi"
    untested = o[o["verdict"] == "not tested"]
    assert len(untested) == 6 and untested["effect found or ruled out [95% CI]"].str.startswith("this study lacks").all()


def test_inconclusive_reasons_and_claim_by_judge():
    v, s = tables()
    text = inconclusive_reasons(s, v)
    assert "Claim 7" in text and "no effect larger than" in text
    c1 = claim_by_judge(v, 1)
    assert list(c1["judge"]) == ["open-set evaluation model", "pixel nearest neighbours"]
    assert c1["verdict"].iloc[0] == "supported" and c1["difference, points [95% CI]"].iloc[0].endswith("points")
    assert claim_by_judge(v, 6).empty
    one_seed = v.assign(leak_estimate=0.213, leak_ci_low=float("nan"), leak_ci_high=float("nan"))
    assert claim_by_judge(one_seed, 1)["leak: accuracy − chance (points)"].iloc[0] == "+21.3 (no interval: one seed)"


def test_ceilings_and_caveats_come_from_the_tables():
    summary = pd.DataFrame({"dataset": ["glyphs"] * 2, "defense": ["none", "random-erasing"], "attack": ["gmi"] * 2,
                            "natural_accuracy_mean": [0.85, 0.75], "attack_accuracy_top1_mean": [0.35, 0.2],
                            "chance_accuracy_top1_mean": [0.05, 0.04], "ceiling_top1_mean": [0.7, 0.7]})
    t = judge_ceiling_table(summary)
    assert t.to_dict("records") == [{"judge": "open-set evaluation model", "attack": "gmi", "ceiling": 0.7,
                                     "attack accuracy (none)": 0.35, "chance": 0.05, "share of the ceiling": 0.5}]
    results = pd.DataFrame({"dataset": ["glyphs"] * 2, "seed": [0, 0], "ceiling_top1": [0.7, 0.7]})
    text = conclusion_caveats(results, summary)
    assert "0.85 natural accuracy" in text and "accept 0.70 (open-set evaluation model)" in text
    assert "fewer than 3 seeds no claim gets a verdict" in text


def test_ablation_table_reads_the_verdicts_and_shows_the_ink_each_box_hid():
    from re_analysis.report.ablations import ablation_figure, ablation_groups, ablation_sentences, ablation_table
    from re_analysis.study import summarize

    labels = ["none", "random-erasing", "re-partial-p0.5", "re-partial-boxes", "re-fixed-corner"]
    rates = {"none": 0.7, "random-erasing": 0.2, "re-partial-p0.5": 0.6, "re-partial-boxes": 0.2,
             "re-fixed-corner": 0.6}
    j = pd.concat([hits(d, rates[d], rng_seed=i) for i, d in enumerate(labels)])
    nat = pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": d, "seed": s, "index": np.arange(200),
                                   "correct": (np.random.default_rng(s).random(200) < 0.8).astype(int)})
                     for d in labels for s in (0, 1, 2)])
    nat = natural_for(labels)
    v = claim_verdicts(j, natural=nat, chance=chance_for(j))
    results = pd.DataFrame([{"dataset": "glyphs", "defense": d, "defense_name": d, "attack": "gmi", "seed": s,
                             "natural_accuracy": 0.8, "attack_accuracy_top1": rates[d],
                             "foreground_erased_share": {"re-fixed-corner": 0.27}.get(d, 0.47)}
                            for d in labels for s in (0, 1, 2)])
    summary = summarize(results, j, nat)
    groups = ablation_groups(labels)
    assert [(g[1], g[2]) for g in groups] == [("re-partial-p0.5", "random-erasing"),
                                             ("re-partial-p0.5", "re-partial-boxes"),
                                             ("re-fixed-corner", "random-erasing")]
    t = ablation_table(results, summary, v)
    assert list(t["verdict"]) == ["supported", "supported", "supported"]
    assert list(t["ink erased in training"]) == ["47%", "47%", "27%"]
    assert t["natural: protected arm − leaking arm"].str.contains(r"\[").all()
    assert "Claim 5" in ablation_sentences(v) and "re-partial-p0.5 vs re-partial-boxes" in ablation_sentences(v)
    fig = ablation_figure(summary, labels, ["gmi"])
    assert len(fig.axes) == 2


def test_attack_chapter_tables_show_chance_ceiling_and_the_judges_gap():
    from re_analysis.report.attacks import (accuracy_figure, accuracy_tables, distribution_table, judge_agreement,
                                            judge_gap_text, study_order)
    from re_analysis.study import summarize

    j = pd.concat([hits("none", 0.6, rng_seed=1), hits("random-erasing", 0.3, rng_seed=2)])
    j["hit_top1_closed"] = np.maximum(j["hit_top1"], (np.arange(len(j)) % 4 == 0).astype(int))  # closed set accepts more
    j["all_accept"] = j["hit_top1"] & j["hit_pixel"]
    results = pd.DataFrame([{"dataset": "glyphs", "defense": d, "defense_name": d, "attack": "gmi", "seed": s,
                             "natural_accuracy": 0.8, "attack_accuracy_top1": r, "chance_accuracy_top1": 0.05,
                             "ceiling_top1": 0.7, "knn_distance": 100.0 + s, "iterations_fraction": 1.0,
                             "prior_steps_fraction": 1.0, "reduced_budget": False}
                            for d, r in (("none", 0.6), ("random-erasing", 0.3)) for s in (0, 1, 2)])
    summary = summarize(results, j)
    assert study_order(results) == (["gmi"], ["none", "random-erasing"])
    [(attack, table, html_cols)] = accuracy_tables(results, summary)
    cell = table["open-set evaluation model"].iloc[0]
    assert attack == "gmi" and "chance 0.05" in cell and "ceiling 0.70" in cell and list(table["budget"]) == ["paper"] * 2
    agree, shown = judge_agreement(results, j)
    assert agree.loc[0, "closed_only_mean"] > 0 and "all judges accept" in shown
    text = judge_gap_text(agree, summary, ["gmi"])
    assert text.startswith("**gmi, no defense.**") and "pass the closed-set judge only" in text
    assert distribution_table(summary)["KNN distance"].iloc[0] == "101.0 ± 1.0"
    assert accuracy_figure(results, summary) is not None


def test_training_chapter_tables_and_curves(tmp_path):
    import json

    from re_analysis.report.training import judges_table, natural_accuracy, privacy_table, training_curves

    results = pd.DataFrame([{"dataset": "glyphs", "defense": d, "defense_name": d, "defense_params": "",
                             "attack": "gmi", "seed": s, "natural_accuracy": a, "target_dir": f"t/{d}-{s}",
                             "attack_dir": f"a/{d}-{s}", "eval_natural_accuracy": 0.67, "eval_arch": "preresnet8",
                             "epsilon": np.nan}
                            for d, a in (("none", 0.83), ("bido", 0.84)) for s in (0, 1, 2)])
    for r in results.itertuples():
        (tmp_path / r.target_dir).mkdir(parents=True)
        loss = [2.0, 1.0] if r.defense == "none" else [-50.0, -60.0]  # BiDO's loss is negative
        (tmp_path / r.target_dir / "metrics.json").write_text(json.dumps(
            {"history": [{"epoch": e, "loss": v, "train_accuracy": 0.5 + e / 10} for e, v in enumerate(loss)]}))
    summary = pd.DataFrame({"defense": ["none", "bido"], "natural_accuracy_mean": [0.83, 0.84],
                            "natural_accuracy_ci_low": [0.8, 0.81], "natural_accuracy_ci_high": [0.86, 0.87],
                            "n_seeds": [3, 3]})
    comparisons = pd.DataFrame({"defense": ["bido"], "judge": ["natural accuracy"], "difference": [0.01],
                                "ci_low": [-0.02], "ci_high": [0.04]})
    nat, table, text = natural_accuracy(results, summary, comparisons)
    assert list(table["defense"]) == ["none", "bido"] and table["change vs none [95% CI]"].iloc[1] == "+0.01 [-0.02, +0.04]"
    assert "No measurable difference from no defense: bido" in text
    judges, text = judges_table(results, tmp_path)
    assert judges["accuracy (all identities)"].iloc[0] == "0.67" and "67% of held-out private" in text
    assert privacy_table(results) is None
    fig, n = training_curves(results, tmp_path)
    assert n == 3 and fig.axes[0].get_yscale() == "linear"  # a negative loss cannot go on a log axis


def test_feature_and_tradeoff_chapters_read_their_tables():
    from re_analysis.report.features import claim3_text, claim4_text, gap_table, separation_table
    from re_analysis.report.tradeoff import drop_interval, judge_comparisons, tradeoff_table

    rng = np.random.default_rng(0)
    results = pd.DataFrame([{"dataset": "glyphs", "defense": d, "attack": "gmi", "seed": s, "mean_dist_private": 20.0,
                             "mean_dist_private_normalized": 2.0, "separation_nn_purity": 0.9,
                             "separation_silhouette": 0.2 + s / 100}
                            for d in ("none", "random-erasing") for s in (0, 1, 2)])
    gap = pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": d, "attack": "gmi", "seed": s, "index": np.arange(30),
                                   "label": np.arange(30) // 3, "d_private": 10.0, "d_erased": 5.0 if d != "none" else 20.0,
                                   "nearer_erased": (rng.random(30) < (0.8 if d != "none" else 0.2)).astype(float)})
                     for d in ("none", "random-erasing") for s in (0, 1, 2)])
    g, table, normalized = gap_table(gap, results)
    assert normalized and g["private_mean"].tolist() == [1.0, 1.0]  # 10 / (20 / 2): in units of the target's scale
    assert table["nearer erased, vs none"].iloc[0] == "(baseline)" and "[" in table["nearer erased, vs none"].iloc[1]
    sep = pd.concat([pd.DataFrame({"dataset": "glyphs", "defense": d, "seed": s, "index": np.arange(20),
                                   "label": np.arange(20) % 4, "margin": rng.normal(0.3, 0.05, 20), "split": split})
                     for d in ("none", "random-erasing") for s in (0, 1, 2) for split in ("train", "test")])
    t = separation_table(sep, results)
    assert {"margin (training features)", "margin (held-out features)", "silhouette (± sd over seeds)"} <= set(t.columns)
    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.2, rng_seed=2)])
    v = claim_verdicts(j.assign(hit_target=1), gap=gap, separation=sep)
    assert "against none" in claim3_text(v) and "Verdict on the paper's second" in claim4_text(v)
    assert claim3_text(v[v["claim"] != 3]) is None
    tradeoff = pd.DataFrame({"dataset": ["glyphs"], "attack": ["gmi"], "defense": ["random-erasing"],
                             "attack_acc_drop": [50.0], "natural_acc_drop": [10.0], "tradeoff": [5.0]})
    comparisons = pd.DataFrame({"attack": ["gmi", "(natural accuracy)"], "defense": ["random-erasing"] * 2,
                                "judge": ["top1", "natural accuracy"], "difference": [-0.5, -0.1],
                                "ci_low": [-0.6, -0.12], "ci_high": [-0.4, -0.08], "p_value": [0.01, 0.01],
                                "verdict": ["lower", "lower"]})
    table, text = tradeoff_table(tradeoff, comparisons)
    assert table["attack-accuracy drop (points)"].iloc[0] == drop_interval(comparisons.iloc[0]) == "+50.0 [+40.0, +60.0]"
    assert "is measurable" in text
    table, text = judge_comparisons(comparisons)
    assert len(table) == 1 and text.startswith("Under the primary judge, 1 of 1")


def test_forest_plot_rows_are_the_verdicts_of_the_primary_judge_and_attack(tmp_path):
    from re_analysis.book import write_verdict_page
    from re_analysis.report.forest import forest_plot, forest_rows, verdict_sentences

    j = pd.concat([hits("none", 0.7, rng_seed=1), hits("random-erasing", 0.65, rng_seed=2),
                   hits("bido", 0.6, rng_seed=3), hits("random-erasing+bido", 0.2, rng_seed=4)])
    nat = natural_for(j["defense"].unique())
    v = claim_verdicts(j, natural=nat, chance=chance_for(j))
    rows = forest_rows(v, attack="gmi")
    primary = v[(v["claim"] == 2) | ((v["judge"] == "top1") & (v["attack"] == "gmi"))]
    assert len(rows) == len(primary) and list(rows["claim"]) == sorted(primary["claim"])
    one = rows[rows["label"] == "1. random-erasing vs none"].iloc[0]
    ref = v[(v["claim"] == 1) & (v["judge"] == "top1")].iloc[0]
    assert (one["estimate"], one["low"], one["high"]) == (100 * ref["estimate"], 100 * ref["ci_low"], 100 * ref["ci_high"])
    assert rows[rows["claim"] == 2]["threshold"].iloc[0] == -3.0
    assert one["natural"].startswith("natural ") and not rows[rows["claim"] == 2]["natural"].iloc[0]
    colours = {tuple(round(c, 3) for c in line.get_color()) if not isinstance(line.get_color(), str) else line.get_color()
               for line in forest_plot(v, attack="gmi").axes[0].lines}
    assert len(colours) >= 2
    s = summarize_verdicts(v, attack="gmi")
    text = verdict_sentences(s)
    assert text.count("- **Claim") == len(s) and "**inconclusive**; no effect larger than" in text
    # the book's first page: the figure and the sentences, from the study's tables
    run = tmp_path / "run"
    run.mkdir()
    v.to_csv(run / "verdicts.csv", index=False)
    s.to_csv(run / "verdict_summary.csv", index=False)
    pd.DataFrame({"seed": [0, 1, 2], "n_classes_attacked": [30] * 3}).to_csv(run / "results.csv", index=False)
    written = write_verdict_page(run, tmp_path / "stage", "quick")
    page = (tmp_path / "stage" / "book" / "_generated" / "verdicts.md").read_text()
    assert len(written) == 2 and "_generated/forest.png" in page and "seeds 0, 1, 2, 30 identities" in page
    assert (run / "forest.png").stat().st_size > 1000


def test_forest_caption_says_how_many_seeds_a_row_pairs():
    """A design still computing (none on seeds 0-1, RE on seed 0) is not 't over 2 seed means'."""
    from re_analysis.report.forest import forest_caption

    done = pd.DataFrame({"defense": ["none", "random-erasing"] * 2, "seed": [0, 0, 1, 1],
                         "n_classes_attacked": [100] * 4})
    assert "t over 2 seed means" in forest_caption(done, "lomma-gmi", "decisive")
    computing = done.iloc[:3]
    caption = forest_caption(computing, "lomma-gmi", "decisive")
    assert "seed means both arms of a row share, 1 to 2 seeds" in caption and "t over 2 seed means" not in caption
