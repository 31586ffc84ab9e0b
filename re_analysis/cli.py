"""The ``re-analysis`` command. Thin: every command calls the public Python API.

Bad input (unknown name, bad value, missing file) and damaged artifacts exit with code 2 and
one line on stderr, no traceback. ``verify`` prints what is damaged and exits 2 when anything is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .errors import ReAnalysisError
from .presets import preset_names


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2 (argparse's own convention)
        self.exit(2, f"re-analysis: error: {message}\n")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="re-analysis", description="Random Erasing vs model inversion: train, attack, measure.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    t = sub.add_parser("train", help="train a target or evaluation classifier under a defense")
    t.add_argument("--dataset", default="mnist5k")
    t.add_argument("--root", default=None, help="folder holding the dataset (not needed for mnist5k)")
    t.add_argument("--image-size", type=int, default=None)
    t.add_argument("--arch", default=None, help="model name (default by role and image size)")
    t.add_argument("--role", default="target", choices=["target", "eval"])
    t.add_argument("--defense", default="none")
    t.add_argument("--defense-param", action="append", default=[], metavar="KEY=VALUE",
                   help="defense parameter, repeatable (e.g. scale=0.1,0.8)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--optimizer", default=None, choices=["adam", "sgd"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--init-from", default=None, metavar="RUN_DIR",
                   help="start from this finished run's weights (fine-tuning; same architecture and classes)")
    t.add_argument("--device", default="auto")
    t.add_argument("--out", required=True, help="run directory (metrics.json, model.safetensors)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    a = sub.add_parser("attack", help="run a model inversion attack against a trained target")
    a.add_argument("--attack", default="gmi")
    a.add_argument("--target", required=True, help="run directory of the trained target")
    a.add_argument("--prior", default=None, help="run directory of a trained prior (default: train or reuse one)")
    a.add_argument("--classes", default=None, help="classes to attack, e.g. 0,1,2 or 0-4 (default: all)")
    a.add_argument("--per-class", type=int, default=5, help="reconstructions per class (restarts)")
    a.add_argument("--iterations", type=int, default=None, help="optimisation iterations (default: the attack's own)")
    a.add_argument("--prior-steps", type=int, default=None,
                   help="generator steps when a prior must be trained (default: the prior's paper budget)")
    a.add_argument("--attack-param", action="append", default=[], metavar="KEY=VALUE")
    a.add_argument("--prior-param", action="append", default=[], metavar="KEY=VALUE",
                   help="prior option when a prior must be trained, e.g. minibatch_features=0")
    a.add_argument("--classes-per-chunk", type=int, default=0, help="attack classes in chunks (0: all at once)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto")
    a.add_argument("--cache", default=None, help="cache folder for priors (default: $RE_ANALYSIS_CACHE or runs)")
    a.add_argument("--out", required=True)
    a.add_argument("--quiet", action="store_true")

    e = sub.add_parser("evaluate", help="privacy metrics of an attack run (attack accuracy, KNN distance, FID, PRDC)")
    e.add_argument("--attack-run", required=True)
    e.add_argument("--eval-model", required=True, help="run directory of the evaluation model (--role eval)")
    e.add_argument("--out", required=True)
    e.add_argument("--device", default="cpu")

    z = sub.add_parser("analyze", help="feature-space gap: private vs erased vs reconstructed features")
    z.add_argument("--target", required=True)
    z.add_argument("--attack-run", required=True)
    z.add_argument("--out", required=True)
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--device", default="cpu")

    s = sub.add_parser("study", help="run the grid of a preset: train, attack, evaluate, analyse -> results.csv")
    s.add_argument("--preset", default="quick", help=f"{', '.join(preset_names())} or a YAML path")
    s.add_argument("--out", default=None, help="run directory (default: runs/PRESET)")
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=None, help="processes that run independent steps at once on this "
                                                                "machine, a dask LocalCluster (default: the preset's, 1 "
                                                                "thread each)")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the steps on a running dask cluster (e.g. tcp://host:8786) whose workers see --out")
    s.add_argument("--units", default=None, metavar="K/N|NAMES",
                   help="compute only these units (arm x seed) of the design, one after another, and no tables: "
                        "K/N takes every N-th unit from the K-th (N machines or job-array tasks), or name them "
                        "(none-s0,random-erasing-s3); `re-analysis units --preset P --out DIR` lists them")
    s.add_argument("--quiet", action="store_true")

    n = sub.add_parser("units", help="the units (arm x seed) of a preset's design, and which are finished in a folder")
    n.add_argument("--preset", default="quick", help=f"{', '.join(preset_names())} or a YAML path")
    n.add_argument("--out", default=None, help="run directory (default: runs/PRESET)")

    b = sub.add_parser("book", help="the main job: the HTML book, rendered from a published study (--bundle) or "
                                    "computed from scratch (--preset), every notebook through papermill")
    b.add_argument("--bundle", default=None, help="render this published study (e.g. published/decisive) instead of "
                                                  "computing one")
    b.add_argument("--no-reproduce", action="store_true",
                   help="skip recomputing one published unit's target and a few of its identities live")
    b.add_argument("--preset", default=None, help=f"compute this study from scratch: {', '.join(preset_names())} or a "
                                                  "YAML path (default without --bundle: quick)")
    b.add_argument("--run-dir", default=None, help="study run directory (default: runs/PRESET)")
    b.add_argument("--source", default=None, help="repository root holding _config.yml (default: current folder)")
    b.add_argument("--build-dir", default="_build")
    b.add_argument("--device", default="auto")
    b.add_argument("--workers", type=int, default=None, help="processes of the study (default: the preset's)")
    b.add_argument("--quiet", action="store_true")

    u = sub.add_parser("audit", help="does YOUR classifier leak its private classes to model inversion? -> report.html",
                       description="Audit a classifier of yours: attack it with model inversion from public images of "
                                   "other identities, judge the reconstructions against chance and ceiling, and write "
                                   "OUT/report.html with the verdict first. Every input is checked before anything is "
                                   "written (one line and exit 2 for a bad one).")
    # "--pixels -1-1": argparse reads a token that starts with "-" as an option unless it is a negative number
    u._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-1-1$")
    u.add_argument("--model", default=None, metavar="FILE",
                   help="your model: a TorchScript file (torch.jit.save), a torch.export program (.pt2), or weights "
                        "(safetensors / torch.save'd state dict) with --arch or --model-entry; never unpickled")
    u.add_argument("--arch", default=None, help="the suite architecture the weights belong to (re-analysis models)")
    u.add_argument("--model-entry", default=None, metavar="PKG.MODULE:FUNCTION",
                   help="your function returning the nn.Module (called with num_classes=); weights from --model")
    u.add_argument("--private", default=None, metavar="DIR",
                   help="class-per-folder tree of the model's training classes (DIR/<class>/<image>)")
    u.add_argument("--public", default=None, metavar="DIR",
                   help="class-per-folder tree of other identities the attacker holds (no class shared with --private)")
    u.add_argument("--example", action="store_true", help="the book's example instead: train a classifier on the "
                                                           "embedded digits written as folders, export it as TorchScript "
                                                           "and audit that file (into --out)")
    u.add_argument("--private-test", default=None, metavar="DIR",
                   help="held-out private images your model did not train on (same class folders); without it a "
                        "seeded 10%% of --private stands in and the report says its accuracy is optimistic")
    u.add_argument("--classes", default=None, metavar="FILE",
                   help="file naming the private folders, one per line, in the order of the model's outputs "
                        "(default: sorted folder names)")
    u.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="the square image size your model reads (default: the private images' own size; images of "
                        "another size are resized to N)")
    u.add_argument("--channels", type=int, default=3, choices=[1, 3],
                   help="the channels your model reads: 3 (RGB, default) or 1 (grayscale)")
    u.add_argument("--pixels", default=None, choices=["-1-1", "0-1"],
                   help="your model's input range: -1-1 (the default, the suite's own) or 0-1; or use --normalize")
    u.add_argument("--normalize", default=None, metavar="MEAN,STD",
                   help="the mean and std your model normalises [0, 1] pixels with (per channel: m1/m2/m3,s1/s2/s3)")
    u.add_argument("--keep-convention", action="store_true",
                   help="audit with the declared convention and class order even where another scores clearly "
                        "better on held-out images (checked before anything runs)")
    u.add_argument("--allow-mixed-sizes", action="store_true",
                   help="accept images of different sizes within a tree (each is resized to --image-size)")
    u.add_argument("--preset", default="smoke", choices=["smoke", "quick", "paper"],
                   help="budgets: smoke (minutes on 2 CPU cores; finds leaks, cannot rule them out), quick, paper "
                        "(the papers' budgets, which can rule a leak out; a GPU)")
    u.add_argument("--attacks", default=None, metavar="A,B",
                   help="comma-separated attacks (default: the preset's primary attack; re-analysis attacks)")
    u.add_argument("--compare-defense", default=None, metavar="DEFENSE",
                   help="also retrain your architecture (--arch) with this defense on your data and attack it alike "
                        "(e.g. random-erasing)")
    u.add_argument("--out", default="audit", metavar="DIR",
                   help="output folder: report.html, audit_verdict.csv, the tables and every run (default: audit); "
                        "a re-run resumes it")
    u.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    u.add_argument("--seed", type=int, default=0, help="seed of the held-out split, the judges, the prior and the "
                                                       "attack (default: 0)")
    u.add_argument("--quiet", action="store_true", help="no progress bars")

    v = sub.add_parser("verify", help="check every artifact of a study or run directory, or of a published bundle, "
                                      "against its manifest (exit 0 clean, 1 a bundle whose design lacks units, "
                                      "2 damaged)")
    v.add_argument("run_dir", metavar="DIR", help="study or run directory (e.g. runs/quick) or a published bundle "
                                                  "(e.g. published/decisive)")

    q = sub.add_parser("publish", help="export a study's finished units as a bundle the book renders from "
                                       "(tables, weights, images, manifest with sha256)")
    q.add_argument("run_dir", metavar="RUN", help="the study folder holding the units (e.g. runs/decisive)")
    q.add_argument("--to", required=True, help="the bundle's folder (replaced atomically), e.g. published/decisive")
    q.add_argument("--preset", default=None, help="the design the units belong to (default: RUN/study.json)")

    for name, what in (("datasets", "dataset"), ("presets", "preset"), ("models", "model"), ("defenses", "defense"), ("attacks", "attack")):
        sub.add_parser(name, help=f"list the registered {what}s")
    return p


def cmd_train(args) -> int:
    from .config import TrainConfig, parse_params
    from .training import train

    opts = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                              "optimizer": args.optimizer}.items() if v is not None}
    cfg = TrainConfig(dataset=args.dataset, root=args.root, image_size=args.image_size, arch=args.arch,
                      role=args.role, defense=args.defense, defense_params=parse_params(args.defense_param),
                      seed=args.seed, device=args.device, init_from=args.init_from, **opts)
    result = train(cfg, args.out, progress=not args.quiet)
    m = result.metrics
    if is_main():
        print(json.dumps({"run_dir": str(result.run_dir), "natural_accuracy": m["natural_accuracy"],
                          "arch": m["arch"], "defense": m["defense"], "seed": m["seed"]}))
    return 0


def is_main() -> bool:
    from .distributed import dist_info

    return dist_info().is_main


def parse_classes(text: str | None):
    if text is None:
        return None
    out = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                out += list(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ReAnalysisError(f"--classes {text!r} is not a list like 0,1,2 or 0-4") from None
    return tuple(out)


def cmd_attack(args) -> int:
    from .attacks import AttackConfig, run_attack
    from .config import parse_params

    cfg = AttackConfig(attack=args.attack, target=args.target, prior=args.prior, classes=parse_classes(args.classes),
                       per_class=args.per_class, iterations=args.iterations, seed=args.seed,
                       params=parse_params(args.attack_param), prior_steps=args.prior_steps,
                       prior_params=parse_params(args.prior_param),
                       classes_per_chunk=args.classes_per_chunk, device=args.device)
    res = run_attack(cfg, args.out, cache_root=args.cache, progress=not args.quiet)
    if is_main():
        print(json.dumps({"out": args.out, "attack": args.attack, "classes": res.info["classes"],
                          "target_accuracy_on_reconstructions": res.info["target_accuracy_on_reconstructions"],
                          "iterations_fraction": res.info.get("iterations_fraction"),
                          "prior_steps_fraction": res.info.get("prior_steps_fraction")}))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_attack

    m = evaluate_attack(args.attack_run, args.eval_model, args.out, device=args.device)
    print(json.dumps({k: m[k] for k in ("attack_accuracy_top1", "attack_accuracy_top5", "knn_distance", "fid")}))
    return 0


def cmd_analyze(args) -> int:
    from .gap import analyze_gap

    g = analyze_gap(args.target, args.attack_run, args.out, seed=args.seed, device=args.device)
    print(json.dumps({k: g[k] for k in ("mean_dist_private", "mean_dist_erased", "fraction_nearer_erased",
                                        "coverage_private", "hull_overlap_recon_private")}))
    return 0


def cmd_study(args) -> int:
    from .study import load_preset, run_study, summarize

    preset = load_preset(args.preset, device=args.device, workers=args.workers)
    out = args.out or f"runs/{preset.name}"
    if args.units is not None:
        from .study.units import missing_units, run_units, select_units

        records = run_units(preset, out, select_units(preset, args.units), progress=not args.quiet)
        for r in records:
            print(f"unit {r['unit']}: {r['seconds']:.0f} s of steps, code {r['code'].get('commit', '?')[:10]}")
        left = missing_units(out, preset)
        print(f"{len(records)} unit(s) finished here; {len(left)} of the design's units still missing in {out}")
        return 0
    results = run_study(preset, out, progress=not args.quiet, scheduler=args.scheduler)
    print(summarize(results).to_string(index=False, max_cols=8))
    print(f"tables: {out}/results.csv, {out}/summary.csv, {out}/tradeoff.csv")
    return 0


def cmd_units(args) -> int:
    from .study import load_preset
    from .study.units import design_units, finished_units

    preset = load_preset(args.preset)
    out = args.out or f"runs/{preset.name}"
    done = finished_units(out, preset) if Path(out).is_dir() else {}
    units = design_units(preset)
    for k, u in enumerate(units, 1):
        r = done.get(u.name)
        print(f"{k:4d}  {u.name:28s} " + (f"finished {r['finished']} ({r['seconds']:.0f} s)" if r else "missing"))
    print(f"{len(done)} of {len(units)} units finished in {out}")
    return 0


def cmd_book(args) -> int:
    from .book import build_book

    if args.bundle is not None and args.preset is not None:
        raise ReAnalysisError("give --bundle (render a published study) or --preset (compute one), not both")
    index = build_book(args.preset or ("quick" if args.bundle is None else None), args.run_dir, args.source,
                       args.build_dir, args.device, progress=not args.quiet, workers=args.workers, bundle=args.bundle,
                       reproduce=not args.no_reproduce)
    print(f"book: {index}")
    return 0


def cmd_audit(args) -> int:
    from .audit import AuditConfig, audit_summary_lines, example_audit, run_audit

    if args.example:
        paths = example_audit(args.out, preset=args.preset, progress=not args.quiet)
        print("\n".join([f"model: {paths['model']}", *audit_summary_lines(paths["report"].parent),
                         f"report: {paths['report']}"]))
        return 0
    if not (args.private and args.public):
        raise ReAnalysisError("re-analysis audit needs --private DIR and --public DIR (class-per-folder trees of your "
                              "model's training classes and of other identities), or --example for the book's example")

    cfg = AuditConfig(private=args.private, public=args.public, out=args.out, model=args.model, arch=args.arch,
                      entry=args.model_entry, image_size=args.image_size, channels=args.channels, pixels=args.pixels,
                      normalize=args.normalize, classes=args.classes, private_test=args.private_test,
                      preset=args.preset, attacks=tuple(a for a in (args.attacks or "").split(",") if a),
                      compare_defense=args.compare_defense, device=args.device, seed=args.seed,
                      keep_convention=args.keep_convention, mixed_sizes=args.allow_mixed_sizes)
    report = run_audit(cfg, progress=not args.quiet)
    print("\n".join([*audit_summary_lines(report.parent), f"report: {report}"]))
    return 0


def cmd_publish(args) -> int:
    from .publish import verify_bundle, publish_study

    bundle = publish_study(args.run_dir, args.to, args.preset)
    report = verify_bundle(bundle)
    print(f"published {len(report.units)} unit(s), {report.files} files, "
          f"{report.record['bytes'] / 1e6:.1f} MB in {bundle}")
    if report.missing:
        print(f"note: {report.missing_line()}")
    return 0


def cmd_verify(args) -> int:
    from .artifacts import repair_hint, verify_runs
    from .publish import BUNDLE_RECORD, verify_bundle

    if (Path(args.run_dir) / BUNDLE_RECORD).is_file():
        bundle = verify_bundle(args.run_dir)  # damage: one line, exit 2
        if bundle.missing:
            print(f"incomplete: {bundle.missing_line()}")
            return 1
        print(f"clean: {bundle.files} files of {len(bundle.units)} units match {BUNDLE_RECORD}; the design is complete")
        return 0
    report = verify_runs(args.run_dir)
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"{'damaged' if problem.recorded else 'unrecorded'}: {problem}")
    if report.clean:
        print(f"clean: {report.files} files in {report.runs} runs match their manifests")
        return 0
    print(f"{len(report.problems)} problem(s) in {report.runs} runs; to repair: "
          f"{repair_hint(report.problems[0].run_dir)}")
    return 2


def cmd_list(kind: str) -> int:
    if kind == "presets":
        for name in preset_names():
            print(name)
        return 0
    if kind == "attacks":
        from .attacks import attack_info as info
    elif kind == "datasets":
        from .data import dataset_info as info
    elif kind == "models":
        from .models import model_info as info
    else:
        from .defenses import defense_info as info
    for name, desc in info().items():
        print(f"{name:18s} {desc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command in ("attack", "evaluate", "analyze", "study", "units", "book", "verify", "audit", "publish"):
            return {"attack": cmd_attack, "evaluate": cmd_evaluate, "analyze": cmd_analyze, "study": cmd_study,
                    "units": cmd_units, "book": cmd_book, "verify": cmd_verify, "audit": cmd_audit,
                    "publish": cmd_publish}[args.command](args)
        return cmd_list(args.command)
    except ReAnalysisError as exc:
        print(f"re-analysis: error: {exc}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
