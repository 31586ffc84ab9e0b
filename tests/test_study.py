import json
import re
from pathlib import Path

import pandas as pd
import pytest

from re_analysis import ReAnalysisError
from re_analysis.study import list_presets, load_preset, restrict, summarize, tradeoff


def test_presets_load_and_cover_what_the_book_says():
    assert {"smoke", "quick", "mnist", "full", "fashion", "paper-celeba", "paper-facescrub"} <= set(list_presets())
    q = load_preset("quick")
    assert q.dataset == "glyphs" and len(q.seeds) >= 3
    assert q.dataset == "glyphs" and q.workers == 2
    for d in ("none", "random-erasing", "bido"):  # claims 1-4 none and RE (BiDO the control of 3), 7 a baseline
        assert (d, "lomma-gmi") in q.pairs
    assert q.primary_attack == "lomma-gmi" and q.per_class == 1  # the identity is the unit
    assert "iterations" not in q.attacks["lomma-gmi"] and "steps" not in q.prior  # the papers' budgets
    d = load_preset("decisive")  # the pre-registered design
    assert d.seeds == tuple(range(10)) and d.classes is None and d.per_class == 1 and d.rules == 3
    assert {a for _, a in d.pairs} == {"lomma-gmi", "gmi"} and d.attacks["gmi"] == {"per_class": 5, "select": "best"}
    assert d.primary_attack == "lomma-gmi" and d.primary_judge == "top1" and d.design_components["unit"] > 0
    mnist = load_preset("mnist")
    for d in ("re-fixed-edge", "re-area0.2", "re-area0.8", "random-erasing+trap-mid"):  # the ablations on digits
        assert {(d, "gmi"), (d, "lomma-gmi")} <= set(mnist.pairs)
    assert load_preset("smoke").dataset == "mnist5k" and load_preset("mnist").dataset == "mnist5k"
    full = load_preset("full")
    assert full.dataset == "glyphs" and len(full.pairs) == len(full.defenses) * len(full.attacks)
    assert load_preset("paper-celeba").dataset == "celeba"


BENCHMARK_PRESETS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.yaml"))


@pytest.mark.parametrize("path", BENCHMARK_PRESETS, ids=lambda p: p.name)
def test_benchmark_presets_load_with_parameters_their_methods_accept(path):
    """The presets behind benchmarks/RESULTS.md stay runnable: loading builds every attack and
    defense with its parameters, so a renamed parameter fails here, not an hour into a study."""
    assert load_preset(path).name == path.stem


def test_restrict_keeps_the_baseline_and_adds_new_pairs():
    q = load_preset("quick")
    with pytest.raises(ReAnalysisError, match="primary attack 'lomma-gmi' is restricted away"):
        restrict(q, defenses=["random-erasing"], attacks=["gmi"], seeds=[0])
    r = restrict(q, defenses=["random-erasing"], attacks=["gmi"], seeds=[0], primary_attack="gmi")
    assert r.pairs == (("none", "gmi"), ("random-erasing", "gmi")) and r.seeds == (0,)
    assert r.primary_attack == "gmi"  # named: quick's primary attack is restricted away on purpose
    r2 = restrict(q, defenses=["random-erasing+nls"], attacks=["gmi"], primary_attack="gmi")  # a label not paired
    assert ("random-erasing+nls", "gmi") in r2.pairs


@pytest.mark.parametrize("change, message", [
    ({"dataset": "imagenet"}, "preset dataset 'imagenet'"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"defenses": {"none": {}, "x": {"defense": "magic"}}}, "unknown defense 'magic'"),
    ({"attacks": {"dmi": {}}}, "preset attack 'dmi'"),
    ({"defenses": {"random-erasing": {}}}, "needs the 'none' defense"),
    ({"epochs": 3}, "unknown preset key(s) epochs"),
    ({"attacks": {"gmi": {"iters": 5}}}, "unknown parameter(s) iters for attack 'gmi'"),
    ({"defenses": {"none": {}, "re-partial-p0.5": {}}}, "runs the Partial Erasure arm re-partial-p0.5 without its control"),
    ({"primary_judge": "oracle"}, "preset primary_judge 'oracle' is not a judge"),
    ({"margins": {"tiny": 0.01}}, "unknown margin(s) tiny"),
    ({"rules": 2}, "registered under verdict rules 2; this release implements rules 3"),
    ({"design_components": {"seed": 0.01}}, "design_components needs non-negative `seed` and `unit`"),
    ({"attacks": {"gmi": {"per_class": 0}}}, "per_class must be a positive integer"),
])
def test_bad_presets(change, message):
    with pytest.raises(ReAnalysisError, match=re.escape(message)):
        load_preset("smoke", **change)


def test_presets_inherit_from_a_base(tmp_path):
    (tmp_path / "parent.yaml").write_text("base: quick\nname: parent\ntrain: {epochs: 40}\nseeds: [7]\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nname: child\nclasses: 20\n")
    p = load_preset(tmp_path / "child.yaml")
    q = load_preset("quick")
    assert p.train == {**q.train, "epochs": 40}  # mappings merge key by key
    assert p.seeds == (7,) and p.classes == 20 and p.name == "child"  # the nearest setting wins
    assert {k: {**v, "seeds": None} for k, v in p.defenses.items()} == {k: {**v, "seeds": None}
                                                                         for k, v in q.defenses.items()}
    assert p.pairs == q.pairs and p.defenses["random-erasing"]["seeds"] == (7,)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\nname: loop\n")
    with pytest.raises(ReAnalysisError, match="is its own base"):
        load_preset(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: nowhere\n")
    with pytest.raises(ReAnalysisError, match="unknown preset 'nowhere'"):
        load_preset(tmp_path / "orphan.yaml")


def test_unknown_preset_name():
    with pytest.raises(ReAnalysisError, match="unknown preset 'quik'"):
        load_preset("quik")


def test_summary_and_tradeoff_hand_computed():
    # (natural accuracy, top-1 attack accuracy) per seed: none, then each defense
    runs = {"none": [(0.98, 1.0), (0.99, 0.9)],
            "re": [(0.96, 0.6), (0.97, 0.5)],          # drops (40, 2) and (40, 2) points
            "costly": [(0.96, 0.6), (0.95, 0.7)],      # drops (40, 2) and (20, 4): ratio of means 30/3
            "free": [(0.99, 0.7), (0.985, 0.8)],       # drops (30, -1) and (10, 0.5): no cost on average
            "worse": [(0.99, 1.0), (0.99, 1.0)],       # attack up, no utility cost
            "idle": [(0.98, 1.0), (0.99, 0.9)]}        # nothing moved
    rows = [{"dataset": "d", "defense": d, "attack": "gmi", "seed": seed, "natural_accuracy": nat,
             "attack_accuracy_top1": att} for d, per_seed in runs.items() for seed, (nat, att) in enumerate(per_seed)]
    df = pd.DataFrame(rows)
    s = summarize(df).set_index("defense")
    assert s.loc["re", "attack_accuracy_top1_mean"] == pytest.approx(0.55)
    assert s.loc["re", "attack_accuracy_top1_std"] == pytest.approx(0.0707107, rel=1e-5)
    t = tradeoff(df)
    assert list(t["defense"]) == ["free", "re", "costly", "idle", "worse"]  # ranked, best first
    t = t.set_index("defense")
    assert t.loc["re", "attack_acc_drop"] == pytest.approx(40.0)  # (40 + 40) / 2 points
    assert t.loc["re", "natural_acc_drop"] == pytest.approx(2.0)
    assert t.loc["re", "tradeoff"] == pytest.approx(20.0)
    assert t.loc["costly", "tradeoff"] == pytest.approx(30.0 / 3.0)  # ratio of means, not the mean ratio 12.5
    assert t.loc["costly", "attack_acc_drop_std"] == pytest.approx(14.1421356, rel=1e-6)
    assert t.loc["free", "natural_acc_drop"] == pytest.approx(-0.25)
    assert t.loc["free", "tradeoff"] == float("inf")  # lower attack accuracy at no utility cost: first, not NaN
    assert t.loc["worse", "tradeoff"] == float("-inf") and t.loc["idle", "tradeoff"] == 0.0
    assert (t["n_seeds"] == 2).all() and not t["tradeoff"].isna().any()


def test_derived_tables_are_recomputed_only_when_their_inputs_change(tmp_path):
    from re_analysis.study import write_tables

    rows = [{"dataset": "d", "defense": d, "defense_name": d, "attack": "gmi", "seed": s,
             "natural_accuracy": nat, "attack_accuracy_top1": att}
            for d, per_seed in {"none": [(0.98, 1.0), (0.99, 0.9)], "re": [(0.96, 0.6), (0.97, 0.5)]}.items()
            for s, (nat, att) in enumerate(per_seed)]
    df = pd.DataFrame(rows)
    write_tables(df, tmp_path)
    stamp = (tmp_path / "tradeoff.csv").stat().st_mtime_ns
    write_tables(df, tmp_path)  # same inputs: the tables on disk stand
    assert (tmp_path / "tradeoff.csv").stat().st_mtime_ns == stamp
    df.loc[df["defense"] == "re", "attack_accuracy_top1"] = [0.7, 0.8]
    write_tables(df, tmp_path)  # new inputs: recomputed
    assert tradeoff(df).to_csv(index=False) == (tmp_path / "tradeoff.csv").read_text()
    (tmp_path / "summary.csv").unlink()
    write_tables(df, tmp_path)  # a missing table is rewritten even with the same inputs
    assert (tmp_path / "summary.csv").is_file()


@pytest.mark.parametrize("command", ["study", "book"])
def test_cli_help_names_every_shipped_preset(command, capsys):
    from re_analysis.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps the help text, at hyphens too
    assert all(f"{name}," in text or f"{name} or a YAML path" in text for name in list_presets())


def test_a_defense_entry_may_declare_its_own_training_options():
    from re_analysis.study import target_config, validate_preset

    p = validate_preset({"dataset": "mnist5k", "train": {"epochs": 3},
                         "defenses": {"none": {}, "trap-mid": {"defense": "trap-mid", "train": {"milestones": [1.0]}}}})
    trap, none = target_config(p, "trap-mid", 0), target_config(p, "none", 0)
    assert trap.milestones == (1.0,) and trap.epochs == 3  # the entry's option over the preset's recipe
    assert none.milestones == (0.75, 0.9)
    assert target_config(load_preset("mnist"), "trap-mid", 0).milestones == (1.0,)  # official: no lr decay


@pytest.mark.parametrize("spec, message", [
    ({"defense": "mid", "parms": {"beta": 0.1}}, "unknown key(s) parms"),
    ({"defense": "mid", "train": {"epoch": 3}}, "unknown training option(s) epoch"),
    ({"defense": "mid", "train": {"seed": 3}}, "unknown training option(s) seed"),
    ({"defense": "mid", "train": 3}, "train must be a mapping"),
])
def test_bad_defense_entries_are_refused(spec, message):
    from re_analysis.study import validate_preset

    with pytest.raises(ReAnalysisError, match=re.escape(message)):
        validate_preset({"dataset": "mnist5k", "defenses": {"none": {}, "x": spec}})


@pytest.mark.parametrize("key, value, message", [
    ("train", {"epoch": 3}, "preset train: unknown training option(s) epoch"),
    ("eval_model", {"arhc": "preresnet8"}, "preset eval_model: unknown training option(s) arhc"),
    ("robust_model", {"adverserial": {}}, "unknown training option(s) adverserial"),
    ("train", {"dataset": "glyphs"}, "preset train: unknown training option(s) dataset"),  # the preset's own key
    ("train", {"from_judge": True}, "preset train: unknown training option(s) from_judge"),  # robust_model's only
    ("eval_model", {"init_from": "runs/x"}, "unknown training option(s) init_from"),  # the study decides the start
    ("eval_model", [6], "preset eval_model must be a mapping"),
])
def test_misspelt_training_options_are_refused_by_name(key, value, message):
    from re_analysis.study import validate_preset

    with pytest.raises(ReAnalysisError, match=re.escape(message)):
        validate_preset({"dataset": "mnist5k", key: value})


def test_workers_take_the_shared_prior_first_then_the_judges_then_the_targets(tmp_path):
    from re_analysis.study import StudyPaths, study_phases

    train, attack = study_phases(load_preset("quick"), StudyPaths(tmp_path))
    kinds = [step[0] for step in train]
    assert kinds[0] == "prior" and train[0][1].kind == "wgan-gp"  # the longest serial step starts at once
    assert kinds[1:3] == ["eval", "eval"] and set(kinds[3:]) == {"target"}
    assert len(kinds[3:]) == 3 * 3 and len(attack) == 3 * 3  # none, RE, BiDO x 3 seeds, LOMMA-GMI only


def test_a_robust_judge_from_the_judge_fine_tunes_the_open_set_judge_of_its_study(tmp_path):
    from re_analysis.study import StudyPaths, eval_config, robust_judge_dir, validate_preset

    p = validate_preset({"dataset": "mnist5k", "eval_model": {"epochs": 4},
                         "robust_model": {"epochs": 2, "from_judge": True}})
    paths = StudyPaths(tmp_path / "a")
    cfg = eval_config(p, robust=True, paths=paths)
    assert cfg.init_from == str(paths.eval_model(eval_config(p))) and cfg.epochs == 2 and cfg.adversarial
    # the judge's name does not depend on where the study lies
    assert robust_judge_dir(p, paths).name == robust_judge_dir(p, StudyPaths(tmp_path / "b")).name
    scratch = validate_preset({"dataset": "mnist5k", "eval_model": {"epochs": 4}, "robust_model": {"epochs": 2}})
    assert eval_config(scratch, robust=True).init_from is None
    assert robust_judge_dir(scratch, paths).name != robust_judge_dir(p, paths).name


def test_cached_evaluations_are_redone_when_a_judge_changes(tmp_path):
    from re_analysis.study import judged_by

    cached = {"eval_model": "/old/place/targets/eval-model-aa", "robust_model": "/old/place/targets/robust-eval-model-bb"}
    here = tmp_path / "targets"
    assert judged_by(cached, here / "eval-model-aa", here / "robust-eval-model-bb")  # the study moved: kept
    assert not judged_by(cached, here / "eval-model-aa", here / "robust-eval-model-cc")  # robust judge retrained
    assert not judged_by(cached, here / "eval-model-zz", here / "robust-eval-model-bb")
    assert not judged_by(cached, here / "eval-model-aa", None)  # the preset dropped its robust judge
    assert judged_by({"eval_model": "x/eval-model-aa", "robust_model": None}, here / "eval-model-aa", None)
    assert not judged_by({}, here / "eval-model-aa", None)  # an older record without judges


def test_a_changed_attack_default_makes_a_new_attack_run_not_a_clash(tmp_path, monkeypatch):
    # Found when LOMMA's regulariser got a new default: the study stopped on "already holds an
    # attack run with another config" because the folder name hashed only the preset's params.
    from re_analysis.attacks.lomma import LOMMAGMI
    from re_analysis.study import StudyPaths, attack_config, validate_preset

    p = validate_preset({"dataset": "mnist5k", "attacks": {"lomma-gmi": {}}})
    paths = StudyPaths(tmp_path)
    before = paths.attack("none", "lomma-gmi", 0, attack_config(p, paths, "none", "lomma-gmi", 0))
    monkeypatch.setattr(LOMMAGMI, "defaults", {**LOMMAGMI.defaults, "reg_units": "raw"})
    after = paths.attack("none", "lomma-gmi", 0, attack_config(p, paths, "none", "lomma-gmi", 0))
    assert before != after
    # a preset that spells out the default names the same run as one that leaves it implicit
    spelt = validate_preset({"dataset": "mnist5k", "attacks": {"lomma-gmi": {"reg_units": "raw"}}})
    assert paths.attack("none", "lomma-gmi", 0, attack_config(spelt, paths, "none", "lomma-gmi", 0)) == after


def test_a_defense_may_run_on_fewer_seeds_than_the_claim_1_arms(tmp_path):
    from re_analysis.study import StudyPaths, runs_of, study_phases

    (tmp_path / "deep.yaml").write_text(
        "base: smoke\nname: deep\nseeds: [0, 1, 2, 3]\ndefenses:\n  none: {}\n  random-erasing: {defense: random-erasing}\n"
        "  nls: {defense: nls, seeds: [0, 1]}\n")
    p = load_preset(tmp_path / "deep.yaml")
    assert p.defenses["nls"]["seeds"] == (0, 1) and p.defenses["random-erasing"]["seeds"] == (0, 1, 2, 3)
    assert [runs_of(p, "nls", s) for s in range(4)] == [True, True, False, False]
    phase1, phase2 = study_phases(p, StudyPaths(tmp_path))
    assert sorted(s for kind, label, *rest in [x for x in phase1 if x[0] == "target"] if label == "nls"
                  for s in rest) == [0, 1]
    assert sum(1 for x in phase2 if x[1] == "nls") == 2 and sum(1 for x in phase2 if x[1] == "none") == 4
    assert restrict(p, seeds=[1, 3]).defenses["nls"]["seeds"] == (1,)
    for bad, message in (({"seeds": [5]}, "drawn from the preset's seeds"), ({"seeds": []}, "non-empty list")):
        with pytest.raises(ReAnalysisError, match=re.escape(message)):
            load_preset("smoke", seeds=[0, 1], defenses={"none": {}, "nls": {"defense": "nls", **bad}})
    with pytest.raises(ReAnalysisError, match="'none' defense runs on every seed"):
        load_preset("smoke", seeds=[0, 1], defenses={"none": {"seeds": [0]}})


def test_a_defense_brings_its_official_training_recipe_and_a_preset_may_override_it():
    from re_analysis.study import target_config

    p = load_preset("mnist")
    assert target_config(p, "trap-mid", 0).milestones == (1.0,)  # official Trap-MID: no scheduler
    assert target_config(p, "random-erasing+trap-mid", 0).milestones == (1.0,)  # a composition keeps it
    assert target_config(p, "none", 0).milestones == (0.75, 0.9)  # the shared recipe
    q = load_preset("smoke", defenses={"none": {}, "trap-mid": {"defense": "trap-mid", "train": {"milestones": [0.5]}}})
    assert target_config(q, "trap-mid", 0).milestones == (0.5,)  # the preset's entry has the last word


def test_a_preset_is_frozen_round_trips_and_says_no_robust_judge_with_none():
    import dataclasses

    from re_analysis.study import Preset, validate_preset

    p = load_preset("smoke")
    assert isinstance(p, Preset) and p.robust and p.robust_model == {"epochs": 1, "from_judge": True}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seeds = (0, 1)
    assert validate_preset(p.to_dict()) == p and validate_preset(p) == p  # its mapping gives it back
    bare = load_preset("smoke", robust_model=False)
    assert bare.robust_model is None and not bare.robust and bare.to_dict()["robust_model"] is False
    assert validate_preset(bare.to_dict()) == bare
    assert json.loads(json.dumps(p.to_dict()))["seeds"] == [0]  # study.json's record
    # frozen all the way down: its mappings and lists too (a step that changed them changed the study)
    for change in (lambda: p.attacks["gmi"].update(iterations=5), lambda: p.defenses["none"].pop("params"),
                   lambda: p.train.__setitem__("epochs", 9)):
        with pytest.raises(TypeError, match="a Preset is frozen"):
            change()
    assert isinstance(p.gap_figures[0], tuple) and type(p.to_dict()["gap_figures"][0]) is list
    import copy
    import pickle
    assert pickle.loads(pickle.dumps(p)) == p and copy.deepcopy(p) == p  # to worker processes and back
