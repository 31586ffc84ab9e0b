"""One piece of a published study recomputed live, beside the published numbers.

Every book build retrains one published unit's target from its config and re-attacks a few
of its identities at the published budget, then shows both side by side: the target's
weights (bitwise equal or not: sha256), its natural accuracy and per-test-image verdicts,
and the attack's per-identity verdicts under the published open-set judge. What agreement
to expect: on the machine the bundle was computed on (same torch, CPU kernels and one
thread) the retrained target is bitwise the published one; the re-attack optimises only
the chosen identities, and seeded latent searches on a CPU are chaotic in float rounding
(a batch of another size sums in another order: REFERENCE.md, "Third fidelity review"), so
the share of identical verdicts, not bitwise images, is the measure there. On another CPU
the target itself may differ in its last digits, and with it everything after. A mismatch
is shown, never hidden.

Example:
    >>> from re_analysis.reproduce import compare_verdicts
    >>> compare_verdicts([1, 0, 1, 1], [1, 0, 0, 1])["identical_share"]
    0.75
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ReAnalysisError
from .runs import run_record

__all__ = ["reproduce_piece", "compare_verdicts", "reproduction_markdown", "pick_piece"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def compare_verdicts(published, recomputed) -> dict:
    """How two lists of 0/1 verdicts on the same items agree: ``identical_share``, both means
    and their difference.

    Example:
        >>> out = compare_verdicts([1, 1, 0, 0], [1, 0, 0, 1])
        >>> out["identical_share"], out["published"], out["recomputed"]
        (0.5, 0.5, 0.5)
    """
    a, b = np.asarray(published, float), np.asarray(recomputed, float)
    if a.shape != b.shape or a.size == 0:
        raise ReAnalysisError(f"compare verdicts on the same items: {a.size} published, {b.size} recomputed")
    return {"identical_share": float(np.mean(a == b)), "published": float(a.mean()), "recomputed": float(b.mean()),
            "difference": float(b.mean() - a.mean()), "n": int(a.size)}


def pick_piece(view: str | Path, preset) -> tuple[str, int, str]:
    """The piece to recompute: Random Erasing's target if the design has it (else the first
    published arm), on its smallest published seed, re-attacked by GMI if the design runs it
    (its cheapest attack at the published budget) else by the primary attack."""
    units = sorted((run_record(p.parent, p.name) for p in (Path(view) / "units").glob("*.json")),
                   key=lambda r: (r["seed"], r["label"]))
    if not units:
        raise ReAnalysisError(f"{view} holds no published unit to recompute")
    labels = [r["label"] for r in units]
    label = "random-erasing" if "random-erasing" in labels else labels[0]
    seed = min(r["seed"] for r in units if r["label"] == label)
    attacks = [a for d, a in preset.pairs if d == label]
    attack = "gmi" if "gmi" in attacks else preset.primary_attack
    return label, seed, attack


def reproduce_piece(view: str | Path, preset, out_dir: str | Path, label: str | None = None, seed: int | None = None,
                    attack: str | None = None, identities: int = 10, progress: bool = False) -> dict:
    """Retrain the target of ``label`` on ``seed`` from ``preset`` into ``out_dir`` and re-attack
    ``identities`` of the identities the published ``attack`` run attacked, at its budget, with
    the published prior; judge both with the published open-set judge. ``view`` is a staged
    bundle (:func:`re_analysis.publish.stage_bundle`). Returns the comparison (also written
    to ``out_dir/reproduction.json``)."""
    from .artifacts import atomic_write_json
    from .attacks import AttackConfig, run_attack
    from .metrics import classifier_hits
    from .models.inputs import predict_logits
    from .study import StudyPaths, TEST_PREDICTIONS, attack_config, eval_config, target_config
    from .training import load_classifier, train

    view, out = Path(view), Path(out_dir)
    picked = pick_piece(view, preset)
    label, seed, attack = label or picked[0], picked[1] if seed is None else seed, attack or picked[2]
    record = run_record(view / "units", f"{label}-s{seed}.json")
    published_target = view / record["target_dir"]
    published_attack = view / record["attack_dirs"][attack]
    t0 = time.perf_counter()
    # the target, from the preset's config alone
    cfg = target_config(preset, label, seed)
    mine = out / "targets" / published_target.name
    res = train(cfg, mine, progress=progress)
    target_seconds = time.perf_counter() - t0
    pub_pred = pd.read_csv(published_target / TEST_PREDICTIONS)
    from .data import load_dataset, materialize

    c = cfg.resolved()
    splits = load_dataset(c.dataset, root=c.root, seed=c.seed, image_size=c.image_size, **c.dataset_params)
    x, y = materialize(splits.private_test)
    new_pred = predict_logits(res.model, x).argmax(1).numpy()
    natural = compare_verdicts(pub_pred["correct"], (new_pred == y.numpy()).astype(int))
    weights_equal = _sha256(mine / "model.safetensors") == _sha256(published_target / "model.safetensors")
    # the attack, on the first identities it attacked, at the published budget and prior
    info = run_record(published_attack, "attack.json")
    classes = list(info["classes"])[:identities]
    base = attack_config(preset, StudyPaths(view), label, attack, seed, target=mine)
    prior = view / Path(info["prior"]).relative_to(Path(info["prior"]).parents[2]) if info.get("prior") else None
    acfg = AttackConfig(**{**base.__dict__, "classes": tuple(classes), "prior": str(prior) if prior else None})
    t1 = time.perf_counter()
    attacked = run_attack(acfg, out / "attacks" / f"{published_attack.name}-first{len(classes)}",
                          cache_root=out / "cache", progress=progress)
    attack_seconds = time.perf_counter() - t1
    judge = load_classifier(StudyPaths(view).eval_model(eval_config(preset)))
    z = predict_logits(judge, attacked.images.float())
    new_hits = pd.DataFrame({"label": attacked.labels.numpy(), "hit": classifier_hits(z, attacked.labels.long())})
    pub = pd.read_csv(view / "judgements.csv")
    pub = pub[(pub["defense"] == label) & (pub["seed"] == seed) & (pub["attack"] == attack) & pub["label"].isin(classes)]
    pub_id = pub.groupby("label")["hit_top1"].mean()
    new_id = new_hits.groupby("label")["hit"].mean().reindex(pub_id.index)
    attack_cmp = compare_verdicts(pub_id.to_numpy(), new_id.to_numpy())
    out_record = {"unit": f"{label}-s{seed}", "attack": attack, "identities": [int(k) for k in pub_id.index],
                  "weights_bitwise_equal": bool(weights_equal), "natural": natural, "attack_verdicts": attack_cmp,
                  "published_machine": record.get("machine", {}), "seconds": {"target": round(target_seconds, 1),
                                                                              "attack": round(attack_seconds, 1)},
                  "published_code": record.get("code", {})}
    from .study.units import code_version, machine_info

    out_record.update(machine=machine_info(), code=code_version())
    atomic_write_json(out / "reproduction.json", out_record)
    return out_record


def reproduction_markdown(rec: dict) -> str:
    """The reproduction box: what was recomputed, the published and the recomputed numbers side
    by side, and the agreement to expect here and on another CPU."""
    same_machine = all(rec.get("published_machine", {}).get(k) == rec.get("machine", {}).get(k)
                       for k in ("torch", "cpu_capability", "machine"))
    nat, att = rec["natural"], rec["attack_verdicts"]
    rows = [["target weights (sha256)", "published", "bitwise equal" if rec["weights_bitwise_equal"] else "DIFFERENT"],
            ["natural accuracy", f"{nat['published']:.4f}", f"{nat['recomputed']:.4f} "
             f"({100 * nat['identical_share']:.1f}% of {nat['n']} test images judged alike)"],
            [f"{rec['attack']} open-set accuracy, {att['n']} identities", f"{att['published']:.2f}",
             f"{att['recomputed']:.2f} ({100 * att['identical_share']:.0f}% of identities judged alike)"]]
    table = "| | published | recomputed by this build |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows)
    expect = ("This build ran on a machine like the one that computed the unit (same torch, CPU kernels and "
              "architecture), where the retrained target is expected to be bitwise the published one"
              if same_machine else
              "This build ran on another kind of machine than the one that computed the unit (torch "
              f"{rec.get('machine', {}).get('torch')} / {rec.get('machine', {}).get('cpu_capability')} here, "
              f"{rec.get('published_machine', {}).get('torch')} / {rec.get('published_machine', {}).get('cpu_capability')} "
              "there): float kernels may round differently, so the target may differ in its last digits")
    verdict = ("agrees" if rec["weights_bitwise_equal"] and nat["identical_share"] == 1.0 else "DIFFERS")
    return (f"**Reproduced live by this build** ({rec['unit']}, {rec['seconds']['target']:.0f} s to retrain the target "
            f"and {rec['seconds']['attack']:.0f} s to re-attack {att['n']} of its identities with {rec['attack']} at the "
            f"published budget): the target {verdict}.\n\n{table}\n\n{expect}. The re-attack optimises only these "
            "identities: a latent search on a CPU is chaotic in float rounding (a batch of another size sums in another "
            "order), so some identities may be judged differently even with an identical target; expect most, not all, "
            "to agree, and the accuracy to stay within the published interval.\n")
