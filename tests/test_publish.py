"""Units of a design, the published bundle's bookkeeping and the reproduction box, on known
answers (the round trip on a real study is in test_book.py: the smoke book renders from the
bundle its build published)."""

import json

import pandas as pd
import pytest

from re_analysis import ReAnalysisError
from re_analysis.publish import BUNDLE_RECORD, claim_units, incomplete_claims, verify_bundle
from re_analysis.reproduce import compare_verdicts, reproduction_markdown
from re_analysis.study import load_preset
from re_analysis.study.units import design_hash, design_units, select_units
from re_analysis.verdicts import Roles


def test_units_cover_the_design_seed_by_seed_and_split_evenly():
    p = load_preset("decisive")
    units = design_units(p)
    assert len(units) == 30 and [u.name for u in units[:4]] == ["none-s0", "random-erasing-s0", "bido-s0", "none-s1"]
    shares = [select_units(p, f"{k}/4") for k in range(1, 5)]
    assert sorted(u.name for s in shares for u in s) == sorted(u.name for u in units)  # every unit once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert [u.name for u in select_units(p, "bido-s3,none-s0")] == ["bido-s3", "none-s0"]
    for bad, message in (("0/3", "1 <= K <= N"), ("5/4", "1 <= K <= N"), ("nobody-s0", "not a unit"),
                         (",", "not a unit")):
        with pytest.raises(ReAnalysisError, match=message):
            select_units(p, bad)


def test_the_design_hash_ignores_how_and_where_a_study_runs():
    p = load_preset("decisive")
    assert design_hash(p) == design_hash(load_preset("decisive", workers=1, device="cpu"))
    assert design_hash(p) != design_hash(load_preset("decisive", seeds=[0, 1, 2]))


def test_a_claim_is_decided_only_on_its_complete_arms():
    p = load_preset("decisive")
    roles = Roles(baselines=["bido"])
    assert claim_units(p, roles)[1] == ["random-erasing", "none"] and claim_units(p, roles)[7] == ["random-erasing", "bido"]
    summary = pd.DataFrame({"claim": [1, 2, 7], "verdict": ["supported", "not supported", "inconclusive"]})
    out = incomplete_claims(summary, p, roles, ["bido-s4", "bido-s9"])
    assert out["verdict"].tolist() == ["supported", "not supported", "no verdict"]
    assert out["design"].tolist()[:2] == ["complete", "complete"] and out["design"].iloc[2].startswith("2 of 20 units")
    assert out["interim_verdict"].iloc[2] == "inconclusive"


def test_verify_names_a_missing_or_unlisted_file(tmp_path):
    (tmp_path / "a.csv").write_text("x\n1\n")
    import hashlib

    entry = {"sha256": hashlib.sha256(b"x\n1\n").hexdigest(), "size": 4}
    (tmp_path / BUNDLE_RECORD).write_text(json.dumps({"preset": "smoke", "units": ["none-s0"], "missing_units": [],
                                                      "files": {"a.csv": entry}}))
    assert verify_bundle(tmp_path).complete
    (tmp_path / "b.csv").write_text("y\n")
    with pytest.raises(ReAnalysisError, match="b.csv is not listed"):
        verify_bundle(tmp_path)
    (tmp_path / "b.csv").unlink()
    (tmp_path / "a.csv").unlink()
    with pytest.raises(ReAnalysisError, match="a.csv is missing"):
        verify_bundle(tmp_path)
    with pytest.raises(ReAnalysisError, match="not a published bundle"):
        verify_bundle(tmp_path / "nowhere")


def test_the_reproduction_box_shows_a_known_difference():
    assert compare_verdicts([1, 0, 1, 1], [1, 0, 0, 1]) == {"identical_share": 0.75, "published": 0.75,
                                                            "recomputed": 0.5, "difference": -0.25, "n": 4}
    with pytest.raises(ReAnalysisError, match="same items"):
        compare_verdicts([1, 0], [1])
    machine = {"torch": "2.14.1", "cpu_capability": "AVX512", "machine": "x86_64"}
    rec = {"unit": "random-erasing-s0", "attack": "gmi", "weights_bitwise_equal": False,
           "natural": compare_verdicts([1, 1, 1, 0], [1, 1, 0, 0]), "attack_verdicts": compare_verdicts([1, 0], [1, 1]),
           "seconds": {"target": 80.0, "attack": 60.0}, "machine": machine, "published_machine": machine}
    text = reproduction_markdown(rec)
    assert "the target DIFFERS" in text and "| target weights (sha256) | published | DIFFERENT |" in text
    assert "0.7500" in text and "0.5000" in text and "75.0% of 4 test images judged alike" in text
    assert "50% of identities judged alike" in text and "a machine like the one" in text
    other = reproduction_markdown({**rec, "weights_bitwise_equal": True, "natural": compare_verdicts([1], [1]),
                                   "machine": {**machine, "cpu_capability": "AVX2"}})
    assert "the target agrees" in other and "another kind of machine" in other


def test_a_second_stage_extends_a_registered_design_by_arms_only(tmp_path):
    """A stage-2 preset (``extends: decisive``) adds arms: its units of stage-1 arms keep stage
    1's hash (stage 1's bundle accepts them), its own arms carry its hash, and one folder holds
    both; an extension that changes anything else is refused, naming the change."""
    from re_analysis.study.units import accepted_designs, finished_units, missing_units, unit_design_hash

    stage2 = tmp_path / "stage2.yaml"
    stage2.write_text("base: decisive\nextends: decisive\nname: decisive-stage2-test\n"
                      "defenses:\n  re-partial-p0.5: {defense: re-partial-p0.5}\n"
                      "  re-partial-boxes: {defense: re-partial-boxes}\n")
    base, ext = load_preset("decisive"), load_preset(stage2)
    assert len(design_units(ext)) == 50 and design_hash(ext) != design_hash(base)
    assert unit_design_hash(ext, "none") == unit_design_hash(base, "none") == design_hash(base)
    assert unit_design_hash(ext, "re-partial-boxes") == design_hash(ext)
    assert accepted_designs(ext) == {design_hash(ext): None, design_hash(base): {"none", "random-erasing", "bido"}}

    units = tmp_path / "run" / "units"
    units.mkdir(parents=True)
    for name, label, h in (("none-s0", "none", design_hash(base)),
                           ("re-partial-boxes-s0", "re-partial-boxes", design_hash(ext))):
        (units / f"{name}.json").write_text(json.dumps({"unit": name, "label": label, "design_hash": h}))
    assert sorted(finished_units(tmp_path / "run", ext)) == ["none-s0", "re-partial-boxes-s0"]
    assert len(missing_units(tmp_path / "run", ext)) == 48
    with pytest.raises(ReAnalysisError, match="publish with the design that extends this one"):
        finished_units(tmp_path / "run", base)  # stage 1 alone does not own stage 2's units
    (units / "re-partial-boxes-s1.json").write_text(json.dumps(
        {"unit": "re-partial-boxes-s1", "label": "re-partial-boxes", "design_hash": design_hash(base)}))
    with pytest.raises(ReAnalysisError, match="re-partial-boxes-s1.json records a unit of another design"):
        finished_units(tmp_path / "run", ext)

    roles = tmp_path / "roles.yaml"  # the added arms get the roles stage 1 left unset
    roles.write_text(stage2.read_text() + "claims: {baselines: [bido], partial: [re-partial-p0.5], "
                     "partial_control: [re-partial-boxes]}\n")
    assert load_preset(roles).claims["partial"] == ("re-partial-p0.5",)
    for claims, message in (("{baselines: [bido, re-partial-p0.5]}", "changes claims.baselines;"),
                            ("{baselines: [bido], location: [random-erasing]}", "claims.location \\(it names arms")):
        roles.write_text(stage2.read_text() + f"claims: {claims}\n")
        with pytest.raises(ReAnalysisError, match=message):
            load_preset(roles)

    changed = tmp_path / "changed.yaml"
    changed.write_text(stage2.read_text() + "train: {epochs: 40}\n")
    with pytest.raises(ReAnalysisError, match="extends 'decisive' but changes train;"):
        load_preset(changed)
    with pytest.raises(ReAnalysisError, match="changes the attacks of bido"):
        load_preset(stage2, grid=[{"defenses": ["none", "random-erasing", "re-partial-p0.5", "re-partial-boxes"],
                                   "attacks": "all"}, {"defenses": ["bido"], "attacks": ["gmi"]}])
