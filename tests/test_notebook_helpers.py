"""The notebooks' display helpers (re_analysis.notebook), on tables with hand-computed answers,
and the shape every chapter notebook keeps. Fast: no training, no kernel."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from re_analysis.notebook import (prior_sentence, budget_label, budget_sentence, interval_means, difference_sentence, format_interval,
                                  format_number, interval_columns, judges_present, load_table, missing_table,
                                  reduced_runs, show_image, show_images, study_sentence, table_html, verdict_reason, with_interval, with_spread)
from re_analysis.errors import ReAnalysisError

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")


def test_format_interval_reads_like_the_book():
    assert format_interval(0.6234, 0.551, 0.7049) == "0.62 [0.55, 0.70]"
    assert format_interval(-0.104, -0.2, -0.051, signed=True) == "-0.10 [-0.20, -0.05]"
    assert format_interval(12.34, 10.0, 15.0, digits=1) == "12.3 [10.0, 15.0]"
    assert format_interval(0.5, NAN, NAN) == "0.50 (no interval)"
    assert format_interval(NAN, 0.1, 0.2) == "n/a"
    assert format_interval(None) == "n/a"
    # a bound that rounds to zero without being zero keeps its sign and first digit: "excludes zero" stays visible
    assert format_interval(0.1, 0.003, 0.2, signed=True) == "+0.10 [+0.003, +0.20]"
    assert format_interval(-0.1, -0.2, -0.0004, signed=True) == "-0.10 [-0.20, -0.0004]"
    assert format_interval(0.0, -0.0, 0.0, signed=True) == "+0.00 [+0.00, +0.00]"  # no "-0.00"


def test_format_number_spells_infinities_and_missing_values():
    assert format_number(float("inf"), 1) == "+inf"
    assert format_number(float("-inf")) == "-inf"
    assert format_number(NAN) == "n/a" and format_number("x") == "n/a"
    assert format_number(-0.0) == "0.00"
    assert format_number(0.05, signed=True) == "+0.05"


def summary_table():
    # summary.csv: a judge's mean and interval under its accuracy name
    return pd.DataFrame({"defense": ["none", "random-erasing"],
                         "attack_accuracy_top1_mean": [0.62, 0.41], "attack_accuracy_top1_ci_low": [0.55, 0.33],
                         "attack_accuracy_top1_ci_high": [0.70, 0.49],
                         "attack_accuracy_pixel_mean": [0.30, NAN],
                         "natural_accuracy_mean": [0.981, 0.975], "natural_accuracy_ci_low": [0.97, 0.96],
                         "natural_accuracy_ci_high": [0.99, 0.985],
                         "fid_mean": [120.0, 98.76], "fid_std": [10.0, NAN]})


def test_with_interval_finds_a_judge_by_its_name_or_any_column():
    s = summary_table()
    assert with_interval(s, "top1").tolist() == ["0.62 [0.55, 0.70]", "0.41 [0.33, 0.49]"]
    assert with_interval(s, "hit_top1").tolist() == ["0.62 [0.55, 0.70]", "0.41 [0.33, 0.49]"]
    assert with_interval(s, "attack_accuracy_top1").tolist() == ["0.62 [0.55, 0.70]", "0.41 [0.33, 0.49]"]
    assert with_interval(s, "natural_accuracy", digits=3).tolist() == ["0.981 [0.970, 0.990]", "0.975 [0.960, 0.985]"]
    assert with_interval(s, "hit_pixel").tolist() == ["0.30 (no interval)", "n/a"]
    assert interval_columns(s, "hit_pixel") == ("attack_accuracy_pixel_mean", None, None)
    with pytest.raises(ReAnalysisError, match="no column 'hit_robust'"):
        with_interval(s, "hit_robust")


def test_with_spread_and_judges_present():
    s = summary_table()
    assert with_spread(s, "fid", 1).tolist() == ["120.0 ± 10.0", "98.8"]
    assert with_spread(s, "knn_distance").tolist() == ["n/a", "n/a"]
    assert judges_present(s) == ["top1", "pixel"]  # no robust or closed-set column at all


def test_interval_means_hand_computed():
    t = pd.DataFrame({"attack": "gmi", "defense": ["none"] * 6 + ["re"] * 6, "seed": [0, 0, 0, 1, 1, 1] * 2,
                      "hit": [1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, NAN]})
    b = interval_means(t, ["hit", "absent"], ["attack", "defense"])
    none, re_ = b.iloc[0], b.iloc[1]
    assert none["hit_mean"] == 1.0 and np.isnan(none["hit_ci_low"]) and np.isnan(none["hit_ci_high"])  # no spread: no interval
    assert re_["hit_mean"] == pytest.approx((1 / 3 + 1 / 2) / 2)  # the mean of the seed means; the NaN is left out
    half = stats.t.ppf(0.975, 1) * np.std([1 / 3, 1 / 2], ddof=1) / np.sqrt(2)  # t over the 2 seed means
    # a proportion's interval stays within [0, 1] (2 seed means: the t-interval reaches past both ends)
    assert (re_["hit_ci_low"], re_["hit_ci_high"]) == pytest.approx((max(0, 5 / 12 - half), min(1, 5 / 12 + half)))
    assert 5 / 12 - half < 0 and 5 / 12 + half > 1
    assert np.isnan(re_["absent_mean"]) and re_["n_items"] == 6 and re_["n_seeds"] == 2
    assert with_interval(b, "hit").iloc[0] == "1.00 (no interval)"


def test_difference_sentence_says_no_measurable_difference_when_the_interval_covers_zero():
    assert difference_sentence(-0.12, -0.2, -0.05, "RE minus none") == "RE minus none is -0.12 [-0.20, -0.05]: lower"
    assert difference_sentence(0.1, 0.05, 0.15).endswith(": higher")
    assert difference_sentence(0.02, -0.04, 0.08).endswith("no measurable difference (the interval covers zero)")
    assert difference_sentence(0.02, NAN, NAN).endswith("no interval, so no conclusion")


def test_budget_labels_and_sentence():
    results = pd.DataFrame({
        "attack": ["gmi", "gmi", "lomma-gmi", "lomma-gmi", "lomma-gmi"],
        "defense": ["none", "random-erasing", "none", "none", "random-erasing"], "seed": [0, 0, 0, 1, 0],
        "iterations_fraction": [1.0, 1.0, 0.2, 0.5, 1.0], "prior_steps_fraction": [1.0, 1.0, 1.0, 1.0, 0.25],
        "reduced_budget": [False, False, True, True, True]})
    assert [budget_label(r) for r in results.to_dict("records")] == [
        "paper", "paper", "reduced (iterations 0.20)", "reduced (iterations 0.50)", "reduced (prior 0.25)"]
    assert budget_label({"reduced_budget": "True"}) == "reduced"
    assert budget_label({"reduced_budget": NAN}) == "not recorded"
    red = reduced_runs(results)
    assert red[["attack", "defense", "seeds"]].values.tolist() == [["lomma-gmi", "none", 2],
                                                                   ["lomma-gmi", "random-erasing", 1]]
    assert red["iterations_fraction"].tolist() == [0.2, 1.0]
    text = budget_sentence(results)
    assert text.startswith("2 of 4 attack/defense pairs ran below their paper budget: lomma-gmi (iterations at 0.20 "
                           "of the paper's; prior training steps at 0.25 of the paper's; 2 defense(s))")
    assert budget_sentence(results[results.attack == "gmi"]).startswith("All 2 attack/defense pairs ran at their paper")


def test_load_table_and_the_sentence_for_a_missing_one(tmp_path):
    assert load_table(tmp_path, "separation") is None
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    (tmp_path / "one.csv").write_text("a,b\n1,2\n")
    assert load_table(tmp_path, "empty") is None and load_table(tmp_path, "header.csv") is None
    assert load_table(tmp_path, "one").to_dict("records") == [{"a": 1, "b": 2}]
    assert missing_table("separation") == "This study wrote no separation.csv, so this part has no numbers."
    assert not show_image(tmp_path / "gallery.png", "caption")
    assert show_images([(tmp_path / "a.png", "none"), (tmp_path / "b.png", "random-erasing")], "caption") == 0


def test_table_html_escapes_keeps_intervals_whole_and_passes_html_columns():
    t = pd.DataFrame({"defense": ["<none>"], "acc": ["0.62 [0.55, 0.70]"], "long": ["x" * 60],
                      "evidence": ["<b>RE vs none</b><br>gmi"], "n": [NAN]})
    out = table_html(t, html_columns=["evidence"])
    assert "&lt;none&gt;" in out and "<none>" not in out
    assert '<span style="white-space:nowrap">0.62 [0.55, 0.70]</span>' in out
    assert f'<span style="white-space:nowrap">{"x" * 60}</span>' not in out  # long text may wrap
    assert "<b>RE vs none</b><br>gmi" in out and ">n/a<" in out
    assert "<th>" not in out and "dataframe" in out


def test_study_sentence():
    r = pd.DataFrame({"dataset": "glyphs", "attack": "gmi", "defense": ["none", "none", "re", "re"],
                      "seed": [0, 1, 0, 1], "n_classes_attacked": 20, "n_reconstructions": 100})
    text = study_sentence(r, "quick")
    assert text.startswith("Dataset **glyphs**, 2 seeds (0, 1), study preset `quick`; 20 classes attacked per seed, "
                           "200 reconstructions per attack and defense over all seeds.")
    one = study_sentence(r[r.seed == 0])
    assert "1 seed (0)" in one and "with one seed it is a t-interval over identities and covers only their spread" in one


def test_verdict_reasons_come_from_what_verdicts_csv_records():
    row = {"claim": 1, "verdict": "inconclusive", "estimate": -0.3, "ci_low": -0.4, "ci_high": -0.2,
           "note": "the undefended attack is at its ceiling"}
    assert verdict_reason(row) == "the undefended attack is at its ceiling"
    assert verdict_reason({**row, "note": "the undefended attack does not beat its free chance-acceptance rate"}
                          ).endswith("chance-acceptance rate")
    assert verdict_reason({**row, "verdict": "supported"}) == ""
    assert verdict_reason({**row, "ci_low": NAN}) == "there is no interval to judge (nothing varies, or too few paired items)"
    # reasons are data: a claim's rule writes its reason in the row's note, read as it is
    note3 = "all reconstructions: 55% [45, 65] lie nearer an erased than a private feature (the claim needs more than half)"
    claim3 = {"claim": 3, "verdict": "inconclusive", "estimate": 0.55, "ci_low": 0.45, "ci_high": 0.65,
              "threshold": 0.5, "note": note3}
    assert verdict_reason(claim3) == note3
    assert verdict_reason({**claim3, "note": ""}) == "the interval +0.55 [+0.45, +0.65] covers 0.5"
    claim7 = {"claim": 7, "verdict": "inconclusive", "estimate": -0.1, "ci_low": -0.2, "ci_high": 0.01,
              "note": "neither dominates: the intervals cover zero or one trades utility for privacy"}
    assert verdict_reason(claim7).startswith("neither dominates")


NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))  # the book's chapters (audit_report is the audit's)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_keeps_its_shape(path):
    """parameters cell, strict parameters, the cached study, hidden code, a downloadable table,
    figures through show_figure / show_image, and no outputs in the committed source."""
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and code.index(params[0]) == 0
    names = {line.split("=")[0].strip() for line in "".join(params[0]["source"]).splitlines()
             if "=" in line and not line.startswith("#")}
    assert names == {"run_dir", "preset", "dataset", "defenses", "attacks", "seeds", "device"}
    body = ["".join(c["source"]) for c in code[1:]]
    assert "check_parameters(globals())" in body[0] and "ensure_study(" in body[0]
    assert all("hide-input" in c["metadata"].get("tags", []) for c in code[1:])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "{download}`" in text and "<data/" in text
    assert "plt.show()" not in "".join(body)


def test_prior_sentence_names_the_priors_that_failed():
    r = pd.DataFrame({"attack": ["gmi", "gmi", "plg-mi", "plg-mi"], "defense": ["none", "re", "none", "re"],
                      "prior_passed": [True, "True", False, True], "prior_quality": [1.2, 1.4, 5.5, 3.0]})
    assert prior_sentence(r) == ("The prior of plg-mi failed its held-out check (FID ratio up to 5.5 against held-out "
                                 "public images; 1 = as close as real ones) in 1 of 2 run(s): its reconstructions say "
                                 "little about leakage. The other priors passed.")
    assert prior_sentence(r.assign(prior_passed=True)).startswith("Every attack's image prior passed")
    assert prior_sentence(r.assign(prior_passed=NAN)) == "" and prior_sentence(r.drop(columns="prior_passed")) == ""


def test_a_finished_study_is_read_not_rerun_only_for_its_own_preset(tmp_path):
    import json

    from re_analysis.notebook import finished_study
    from re_analysis.study import load_preset

    p = load_preset("smoke")
    assert finished_study(str(tmp_path), p) is None  # nothing there yet
    (tmp_path / "results.csv").write_text("dataset,defense\nmnist5k,none\n")
    record = p.to_dict()
    (tmp_path / "study.json").write_text(json.dumps({**record, "seconds_this_call": 12.5}))
    assert list(finished_study(str(tmp_path), p)["defense"]) == ["none"]
    assert finished_study(str(tmp_path), load_preset("smoke", seeds=[0, 1])) is None  # another grid: run it
    # `re-analysis book --workers 2` records workers=2; each notebook reloads the preset's own value (1):
    # the same study, read, not run again (issue 37's suspected bug, settled here)
    (tmp_path / "study.json").write_text(json.dumps({**record, "workers": 2, "device": "cpu"}))
    assert list(finished_study(str(tmp_path), p)["defense"]) == ["none"]


def test_load_table_gives_a_consolidated_frame(tmp_path):
    """pandas 3 reads a CSV as one block per column; a wide table must not warn "fragmented" into
    the book at its first new column."""
    import warnings

    pd.DataFrame({f"c{i}": [1.0, 2.0] for i in range(150)}).to_csv(tmp_path / "wide.csv", index=False)
    t = load_table(tmp_path, "wide")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        t["new"] = 1
        t.reset_index()
    assert t.shape == (2, 151)
