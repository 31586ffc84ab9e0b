"""What one unit of a study costs, old path against new, side by side (issue 34).

A unit is one (arm, seed): its target's attacks and their evaluation. Here, the decisive
design's unit on glyphs at a reduced but representative size: LOMMA-GMI's students (3,
distilled ``--distill-epochs`` of the preset's 5), its latent search over all 100 identities x
1 (``--lomma-iterations`` of 2,400), GMI's best of 5 restarts (500 latents,
``--gmi-iterations`` of 1,500), then each attack's evaluation (judges, 200 chance samples per
identity, ceilings, PRDC) and gap at full size. Each path is a set of levers
(:mod:`re_analysis.models.levers`) run in its own fresh process, the paths alternating round
after round so that the machine's other load falls on all of them alike; per phase, the
fastest round counts (and the median is printed beside it). The projection to a whole unit
scales the students by epochs (their teacher's logits, once per unit, apart) and the searches
by iterations (their cost per step does not change along the way); evaluation and gap are
measured whole.

Besides time, each path's numbers are checked against the old path's: the first update of
each search (max |dz|), its losses over the first 50 iterations (max relative difference),
and whether the evaluation's tables and the gap come out bitwise the same.

    python benchmarks/unit_cost.py STUDY_DIR [--preset decisive] [--seed 100] [--rounds 2]
        [--paths old,new,all] [--phases students,lomma,gmi,evaluation,gap]

STUDY_DIR: a study folder of the preset (prior, judges and the seed's undefended target are
trained there if missing; the attack runs the evaluations read are made there once at
``--eval-iterations``). Paths: ``old`` (no lever), ``new`` (the defaults), ``all``, or
``only:LEVER`` (that lever alone), ``without:LEVER`` (the defaults less that one) or
``+LEVER+LEVER`` (the defaults plus those).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("students", "lomma", "gmi", "evaluation", "gap")
FULL = {"lomma_iterations": 2400, "gmi_iterations": 1500, "distill_epochs": 5}


def lever_spec(name: str) -> str | None:
    """RE_ANALYSIS_LEVERS for a path name (None: the defaults)."""
    from re_analysis.models.levers import LEVERS

    if name == "old":
        return "none"
    if name == "new":
        return None
    if name == "all":
        return "all"
    if name.startswith("+"):  # the defaults plus these levers: +fold_batchnorm+bf16_search
        extra = set(name[1:].split("+"))
        unknown = extra - set(LEVERS)
        if unknown:
            raise SystemExit(f"unknown lever(s) {', '.join(sorted(unknown))}; the levers are {', '.join(LEVERS)}")
        return ",".join(f"{k}={int(lv.default or k in extra)}" for k, lv in LEVERS.items())
    if name.startswith("only:"):
        return ",".join(f"{k}={int(k == name[5:])}" for k in LEVERS)
    if name.startswith("without:"):
        return ",".join(f"{k}={int(lv.default and k != name[8:])}" for k, lv in LEVERS.items())
    raise SystemExit(f"unknown path {name!r}: old, new, all, only:LEVER or without:LEVER")


def prepare(args) -> dict:
    """Train what is missing in the study folder; make the attack runs the evaluations read."""
    from re_analysis.attacks import run_attack
    from re_analysis.study import (StudyPaths, attack_config, load_preset, robust_judge_dir, shared_priors,
                                   train_eval_model, train_target)
    from re_analysis.attacks.priors import train_prior

    preset = load_preset(args.preset)
    paths = StudyPaths(Path(args.study).resolve())
    for cfg in shared_priors(preset, paths):
        prior = train_prior(cfg, cache_root=paths.cache / "priors", progress=False)
    train_eval_model(preset, paths, progress=False)
    robust = robust_judge_dir(preset, paths)
    if robust is not None:
        train_eval_model(preset, paths, progress=False, robust=True)
    target = train_target(preset, paths, "none", args.seed, progress=False)
    runs = {}
    for attack in ("lomma-gmi", "gmi"):
        cfg = attack_config(preset, paths, "none", attack, args.seed)
        cfg = dataclasses.replace(cfg, iterations=args.eval_iterations)
        out = paths.attack("none", attack, args.seed, cfg)
        run_attack(cfg, out, cache_root=paths.cache, progress=False)
        runs[attack] = str(out)
    from re_analysis.study import eval_config

    return {"target": str(target.run_dir), "prior": str(prior.run_dir), "runs": runs,
            "judge": str(paths.eval_model(eval_config(preset))), "robust": str(robust) if robust else None,
            "lomma_params": dict(preset.attacks["lomma-gmi"]), "gmi_params": dict(preset.attacks["gmi"])}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def worker(args, setup: dict) -> dict:
    """One path, in this process: every phase asked for; returns seconds and check values."""
    import torch

    torch.set_num_threads(args.threads)
    from re_analysis.attacks import create_attack
    from re_analysis.attacks.priors import load_prior
    from re_analysis.data import materialize
    from re_analysis.evaluation import evaluate_attack
    from re_analysis.gap import analyze_gap
    from re_analysis.runs import target_record, target_splits
    from re_analysis.training import load_classifier

    phases = args.phases.split(",")
    out: dict = {"seconds": {}, "checks": {}}
    target = load_classifier(setup["target"])
    prior = load_prior(setup["prior"])
    identities = torch.arange(args.identities)

    def search(attack, labels, key):
        first = create_attack(attack.name, **{**attack.given, "iterations": 1})
        if hasattr(attack, "models"):
            first.models, first.p_reg, first.reg_unit = attack.models, attack.p_reg, attack.reg_unit
        z1 = first.run(target, prior, labels, args.seed, progress=False).latents
        t0 = time.perf_counter()
        res = attack.run(target, prior, labels, args.seed, progress=False)
        out["seconds"][key] = time.perf_counter() - t0
        out["checks"][key] = {"z1": z1.flatten().tolist()[:2000], "losses": res.loss_history[:50]}

    if "students" in phases or "lomma" in phases:
        public, _ = materialize(target_splits(target_record(Path(setup["target"]))).public)
        lomma = create_attack("lomma-gmi", **{**setup["lomma_params"], "distill_epochs": args.distill_epochs,
                                              "iterations": args.lomma_iterations})
        from re_analysis.models.inputs import predict_logits
        from re_analysis.models.levers import lever

        t0 = time.perf_counter()
        predict_logits(target, public)  # the teacher's logits: a cost per unit, not per epoch
        out["teacher"] = (time.perf_counter() - t0) * (1 if lever("teacher_once") else int(lomma.params["n_aug"]))
        t0 = time.perf_counter()
        lomma.prepare(target, prior, public, torch.device("cpu"), args.seed, cache_dir=None)
        out["seconds"]["students"] = time.perf_counter() - t0
        out["checks"]["students"] = hashlib.sha256(b"".join(
            p.detach().numpy().tobytes() for m in lomma.models[1:] for p in m.state_dict().values())).hexdigest()[:16]
        if "lomma" in phases:
            search(lomma, identities, "lomma")
    if "gmi" in phases:
        params = {k: v for k, v in setup["gmi_params"].items() if k != "per_class"}
        gmi = create_attack("gmi", **{**params, "iterations": args.gmi_iterations})
        search(gmi, identities.repeat_interleave(int(setup["gmi_params"].get("per_class", 5))), "gmi")
    with tempfile.TemporaryDirectory() as tmp:
        for attack, run in setup["runs"].items():
            where = Path(tmp) / attack
            where.mkdir()
            if "evaluation" in phases:
                t0 = time.perf_counter()
                m = evaluate_attack(run, setup["judge"], where, robust_model=setup["robust"])
                out["seconds"][f"evaluation {attack}"] = time.perf_counter() - t0
                out["checks"][f"evaluation {attack}"] = {
                    "judgements": digest(where / "judgements.csv"), "chance": digest(where / "chance_judgements.csv"),
                    "metrics": hashlib.sha256(json.dumps({k: v for k, v in m.items() if k != "evaluate_seconds"},
                                                         sort_keys=True, default=str).encode()).hexdigest()[:16]}
            if "gap" in phases:
                t0 = time.perf_counter()
                g = analyze_gap(setup["target"], run, where, seed=args.seed, embed=False)
                out["seconds"][f"gap {attack}"] = time.perf_counter() - t0
                out["checks"][f"gap {attack}"] = {
                    "samples": digest(where / "gap_samples.csv"),
                    "gap": hashlib.sha256(json.dumps({k: v for k, v in g.items() if k != "seconds"}, sort_keys=True,
                                                     default=str).encode()).hexdigest()[:16]}
    return out


def scale(phase: str, args) -> float:
    """Factor from the measured phase to the whole unit's (the students' teacher logits apart)."""
    if phase == "students":
        return FULL["distill_epochs"] / args.distill_epochs
    if phase == "lomma":
        return FULL["lomma_iterations"] / args.lomma_iterations
    if phase == "gmi":
        return FULL["gmi_iterations"] / args.gmi_iterations
    return 1.0


def compare(reference: dict, other: dict) -> dict:
    """The numerics of ``other`` against ``reference``, phase by phase."""
    out = {}
    for key, ref in reference["checks"].items():
        got = other["checks"].get(key)
        if got is None:
            continue
        if isinstance(ref, dict) and "z1" in ref:
            dz = max((abs(a - b) for a, b in zip(ref["z1"], got["z1"])), default=0.0)
            rel = max((abs(a - b) / max(abs(a), 1e-12) for a, b in zip(ref["losses"], got["losses"])), default=0.0)
            out[key] = f"first update {dz:.1e}, 50 losses {rel:.1e}"
        else:
            out[key] = "bitwise" if ref == got else "differs"
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study")
    ap.add_argument("--preset", default="decisive")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--identities", type=int, default=100)
    ap.add_argument("--distill-epochs", type=int, default=1)
    ap.add_argument("--lomma-iterations", type=int, default=60)
    ap.add_argument("--gmi-iterations", type=int, default=40)
    ap.add_argument("--eval-iterations", type=int, default=20,
                    help="iterations of the attack runs the evaluations judge (their cost does not depend on it)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--paths", default="old,new")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON file for every round's numbers")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("UNIT_COST " + json.dumps(worker(args, json.loads(Path(args.worker).read_text()))))
        return
    setup = prepare(args)
    names = args.paths.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(setup, fh)
    given, passthrough = list(argv if argv is not None else sys.argv[1:]), []
    while given:  # the workers get every option but --out
        a = given.pop(0)
        if a == "--out":
            given.pop(0)
        elif not a.startswith("--out="):
            passthrough.append(a)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            env = {k: v for k, v in os.environ.items() if k != "RE_ANALYSIS_LEVERS"}
            spec = lever_spec(name)
            if spec is not None:
                env["RE_ANALYSIS_LEVERS"] = spec
            env["OMP_NUM_THREADS"] = str(args.threads)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, *passthrough, "--worker", fh.name], env=env,
                                  capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("UNIT_COST ")]
            if proc.returncode != 0 or not line:
                raise SystemExit(f"path {name} failed:\n{proc.stderr[-3000:]}")
            runs[name].append(json.loads(line[0][len("UNIT_COST "):]))
            print(f"round {r + 1} {name}: {time.perf_counter() - t0:.0f} s "
                  + ", ".join(f"{k} {v:.1f}" for k, v in runs[name][-1]["seconds"].items()), flush=True)
    os.unlink(fh.name)
    base = names[0]
    phases = list(runs[base][0]["seconds"])
    def whole(run: dict, phase: str) -> float:  # the phase's projection to a whole unit
        fixed = run.get("teacher", 0.0) if phase == "students" else 0.0
        return (run["seconds"][phase] - fixed) * scale(phase.split()[0], args) + fixed

    best = {n: {p: min(whole(r, p) for r in runs[n]) for p in phases} for n in names}
    median = {n: {p: statistics.median(whole(r, p) for r in runs[n]) for p in phases} for n in names}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} torch thread(s), {time.strftime('%Y-%m-%d %H:%M')}; fastest of {args.rounds} rounds "
          f"(median in brackets); whole unit = measured x scale")
    head = f"{'phase':26s} {'scale':>6s} " + " ".join(f"{n:>20s}" for n in names) + "   ratio " + base + "/other"
    print(head)
    totals = {n: 0.0 for n in names}
    for p in phases:
        k = scale(p.split()[0], args)
        cells = []
        for n in names:
            totals[n] += best[n][p]
            cells.append(f"{best[n][p]:9.1f} ({median[n][p]:7.1f})")
        ratios = " ".join(f"{best[base][p] / best[n][p]:.2f}" for n in names[1:])
        print(f"{p:26s} {k:6.1f} " + " ".join(f"{c:>20s}" for c in cells) + f"   {ratios}")
    print(f"{'whole unit (s)':26s} {'':6s} " + " ".join(f"{totals[n]:>20.1f}" for n in names)
          + "   " + " ".join(f"{totals[base] / totals[n]:.2f}" for n in names[1:]))
    for n in names[1:]:
        checks = compare(runs[base][0], runs[n][0])
        print(f"numerics of {n} against {base}: " + "; ".join(f"{k}: {v}" for k, v in checks.items()))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
