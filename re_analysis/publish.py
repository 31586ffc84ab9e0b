"""The published study: what the book and a skeptic need, exported once from a study's units
and checked by hash wherever it is read.

Expensive evidence is computed once, unit by unit (:mod:`re_analysis.study.units`), and
published as a **bundle**, a folder kept in the repository; the book renders from it in minutes
and anyone can recompute any unit (as showyourwork caches expensive steps with their hashes).
A bundle holds, in the layout of a study folder:

- every table of the study over its finished units (per reconstruction, per test image,
  chance samples, gap and separation samples, results, summary, comparisons, trade-off,
  verdicts; the large ones gzipped) and ``study.json``/``preset.yaml``, the registered design;
- per unit: the target's weights (safetensors: anyone can re-attack a published target), its
  config, metrics and per-test-image predictions, and per attack its config, records, the
  reconstructions grid and the leakage gallery (reconstructions beside their nearest training
  images), the UMAP embedding where the design draws one (its figure for the design's first seed);
- the judges' weights and the shared prior's generator and critic (what re-judging or re-attacking
  needs: GMI's loss reads the critic);
- ``units/*.json``: each unit's code commit, design hash, machine and step times;
- ``bundle.json``: the design, the units in and out, the core-hours spent, and every file's
  size and sha256. No optimiser states or students.

:func:`verify_bundle` checks every file against ``bundle.json`` and names the units the design
still lacks; :func:`stage_bundle` verifies and unpacks a bundle into a study folder that the
notebooks read like any other (a folder holding ``bundle.json`` is never recomputed).

Example:
    >>> from re_analysis.publish import publish_study, verify_bundle
    >>> bundle = publish_study("runs/smoke", "published/smoke", preset="smoke")  # doctest: +SKIP
    >>> verify_bundle(bundle).missing  # doctest: +SKIP
    []
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import ReAnalysisError
from .runs import run_record, study_record

__all__ = ["BUNDLE_RECORD", "publish_study", "verify_bundle", "stage_bundle", "BundleReport", "is_bundle",
           "claim_units", "incomplete_claims"]

BUNDLE_RECORD = "bundle.json"
PUBLISHED_MARK = "published.json"  # in a staged copy: where it came from (the notebooks never recompute it)
TABLES = ("results", "judgements", "natural", "gap_samples", "separation", "chance", "summary", "comparisons",
          "tradeoff", "verdicts", "verdict_summary")
GZIPPED = {"chance", "judgements", "gap_samples", "separation", "natural"}  # large per-item tables
RUN_FILES = {
    "target": ("config.json", "metrics.json", "test_predictions.csv", "model.safetensors"),
    "judge": ("config.json", "metrics.json", "model.safetensors"),
    "attack": ("config.json", "attack.json", "metrics.json", "gap.json", "grid.png", "gallery.png",
               "feature_space.png", "embedding.npz"),
    "prior": ("config.json", "prior.json", "generator.safetensors", "discriminator.safetensors"),
}


@dataclass
class BundleReport:
    """What :func:`verify_bundle` found: the design's units present and missing, and the files."""

    root: Path
    preset: str
    units: list[str]
    missing: list[str]
    files: int
    record: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing

    def missing_line(self) -> str:
        """One line naming the units the design still lacks."""
        shown = ", ".join(self.missing[:8]) + (f", ... ({len(self.missing) - 8} more)" if len(self.missing) > 8 else "")
        return (f"{self.root}: {len(self.missing)} of {len(self.units) + len(self.missing)} units of design "
                f"{self.preset!r} missing: {shown}")


def is_bundle(folder: str | Path) -> bool:
    """Whether ``folder`` is a published bundle or a staged copy of one (never recomputed)."""
    return (Path(folder) / BUNDLE_RECORD).is_file() or (Path(folder) / PUBLISHED_MARK).is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def claim_units(preset, roles) -> dict[int, list[str]]:
    """The arms each claim's verdict rests on (a claim is decided only when every unit of its
    arms is in): claim number -> defense labels (each claim's own ``arms``)."""
    from .verdicts import CLAIM_TABLE

    return {c.number: [a for a in dict.fromkeys(c.arms(roles)) if a in preset.defenses] for c in CLAIM_TABLE}


def incomplete_claims(verdict_summary: pd.DataFrame, preset, roles, missing: list[str]) -> pd.DataFrame:
    """``verdict_summary`` with ``design``: "complete", or how many units of the claim's arms the
    design still lacks; such a claim's verdict is "no verdict" (a claim is decided only on its
    complete, pre-registered design), its interim verdict kept in ``interim_verdict``."""
    from .study.units import design_units

    out = verdict_summary.copy()
    if out.empty:
        out["design"] = pd.Series(dtype=str)
        return out
    need = claim_units(preset, roles)
    total = {a: sum(1 for u in design_units(preset) if u.label == a) for a in preset.defenses}
    lacking = {}
    for name in missing:
        label = name.rsplit("-s", 1)[0]
        lacking[label] = lacking.get(label, 0) + 1
    designs, verdicts, interim = [], [], []
    for r in out.itertuples():
        arms = need.get(int(r.claim), [])
        gone = sum(lacking.get(a, 0) for a in arms)
        if gone:
            designs.append(f"{gone} of {sum(total.get(a, 0) for a in arms)} units of {', '.join(arms)} missing")
            verdicts.append("no verdict")
            interim.append(r.verdict)
        else:
            designs.append("complete")
            verdicts.append(r.verdict)
            interim.append("")
    out["verdict"], out["design"], out["interim_verdict"] = verdicts, designs, interim
    return out


def _unit_tables(preset, root: Path, records: dict[str, dict]):
    """The study's tables over the finished units' records (every step cached: nothing trains)."""
    from .study import StudyPaths, TEST_PREDICTIONS, attack_evaluate, study_tables
    from .study.tables import with_keys

    paths = StudyPaths(root)
    rows, natural = [], []
    for name, rec in records.items():
        label, seed = rec["label"], int(rec["seed"])
        target = root / rec["target_dir"]
        metrics = run_record(target, "metrics.json")
        natural.append(with_keys(pd.read_csv(target / TEST_PREDICTIONS), dataset=preset.dataset, defense=label, seed=seed))
        for attack in rec["attack_dirs"]:
            rows.append((label, attack, seed, metrics, attack_evaluate(preset, paths, label, attack, seed, False)))
    return study_tables(preset, paths, rows, natural)


def _copy_run(src: Path, dst: Path, names) -> list[Path]:
    out = []
    for name in names:
        if (src / name).is_file():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dst / name)
            out.append(dst / name)
    return out


def publish_study(run_dir: str | Path, to: str | Path, preset=None) -> Path:
    """Export the finished units of ``run_dir`` (a study folder computed with ``preset``: a name,
    path or :class:`~re_analysis.study.Preset`; default: its ``study.json``) as a bundle in
    ``to``, replacing an older bundle there atomically. Returns ``to``."""
    from .study import load_preset, validate_preset
    from .study import StudyPaths, eval_config, robust_judge_dir
    from .study.tables import write_tables
    from .study.units import code_version, design_hash, design_units, finished_units, missing_units
    from .verdicts import roles_for

    root = Path(run_dir).resolve()
    if not root.is_dir():
        raise ReAnalysisError(f"no study folder {root}; compute its units first (re-analysis study --units ...)")
    if preset is None:
        if not (root / "study.json").is_file():
            raise ReAnalysisError(f"{root} holds no study.json: name the design with --preset")
        preset = validate_preset(study_record(root))
    elif not hasattr(preset, "to_dict"):
        preset = load_preset(preset)
    records = finished_units(root, preset)
    if not records:
        raise ReAnalysisError(f"{root} holds no finished unit of design {preset.name!r}; compute some with "
                              f"`re-analysis study --preset {preset.name} --units 1/1 --out {root}`")
    records = {u.name: records[u.name] for u in design_units(preset) if u.name in records}
    missing = [u.name for u in missing_units(root, preset)]
    to = Path(to).resolve()
    stage = to.parent / f".{to.name}.publishing"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    # the tables, over the finished units; the verdicts say which claims the design cannot decide yet
    tables = _unit_tables(preset, root, records)
    write_tables(tables, stage, preset)
    names = dict(zip(tables.results["defense"], tables.results["defense_name"]))
    roles = roles_for(tables.results["defense"].unique(), names, preset.claims)
    summary = incomplete_claims(pd.read_csv(stage / "verdict_summary.csv"), preset, roles, missing)
    summary.to_csv(stage / "verdict_summary.csv", index=False)
    (stage / "tables.json").unlink(missing_ok=True)
    for name in GZIPPED:
        plain = stage / f"{name}.csv"
        if plain.is_file():
            with plain.open("rb") as f, gzip.GzipFile(stage / f"{name}.csv.gz", "wb", mtime=0) as g:
                shutil.copyfileobj(f, g)
            plain.unlink()
    (stage / "study.json").write_text(json.dumps(preset.to_dict(), indent=1, default=str) + "\n")
    import yaml

    (stage / "preset.yaml").write_text(yaml.safe_dump(preset.to_dict(), sort_keys=False, default_flow_style=None))
    # the runs: each unit's target and attacks, the judges and the shared prior
    paths = StudyPaths(root)
    first_seed = min(preset.seeds)
    for name, rec in records.items():
        _copy_run(root / rec["target_dir"], stage / rec["target_dir"], RUN_FILES["target"])
        # the UMAP figure (4 MB a run on glyphs) only where the book shows it, the design's first seed;
        # every run's embedding is published, from which any other figure is redrawn
        names = [n for n in RUN_FILES["attack"] if n != "feature_space.png" or int(rec["seed"]) == first_seed]
        for rel in rec["attack_dirs"].values():
            _copy_run(root / rel, stage / rel, names)
        (stage / "units").mkdir(exist_ok=True)
        (stage / "units" / f"{name}.json").write_text(json.dumps(rec, indent=1) + "\n")
    judges = [paths.eval_model(eval_config(preset))] + ([robust_judge_dir(preset, paths)] if preset.robust else [])
    for j in judges:
        _copy_run(j, stage / j.relative_to(root), RUN_FILES["judge"])
    priors = set()  # the target-independent priors the attacks ran on (their generators: to re-attack)
    for rec in records.values():
        for rel in rec["attack_dirs"].values():
            prior = run_record(root / rel, "attack.json").get("prior")
            if isinstance(prior, str) and Path(prior).resolve().is_relative_to(root) and "-wgan-gp-" in Path(prior).name:
                priors.add(Path(prior).resolve())
    for p in sorted(priors):
        _copy_run(p, stage / p.relative_to(root), RUN_FILES["prior"])
    files = {p.relative_to(stage).as_posix(): {"sha256": _sha256(p), "size": p.stat().st_size}
             for p in sorted(stage.rglob("*")) if p.is_file()}
    seconds = sum(r.get("seconds") or 0 for r in records.values())
    record = {"format": 1, "preset": preset.name, "design_hash": design_hash(preset),
              **({"extends": preset.extends} if preset.extends else {}), "rules": preset.rules,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "published_by": code_version(),
              "units": list(records), "missing_units": missing, "unit_core_hours": round(seconds / 3600, 2),
              "commits": sorted({r["code"].get("commit", "?") for r in records.values()}),
              "machines": sorted({r["machine"].get("processor") or r["machine"].get("platform", "?")
                                  for r in records.values()}),
              "bytes": sum(f["size"] for f in files.values()), "files": files}
    (stage / BUNDLE_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    old = to.parent / f".{to.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if to.exists():
        os.replace(to, old)
    os.replace(stage, to)
    if old.exists():
        shutil.rmtree(old)
    return to


def verify_bundle(bundle: str | Path) -> BundleReport:
    """Check every file of ``bundle`` against ``bundle.json`` (size and sha256; a file it does
    not list is damage too) and return which units of the design are in and missing. Damage
    raises one line naming the file."""
    root = Path(bundle)
    path = root / BUNDLE_RECORD
    if not path.is_file():
        raise ReAnalysisError(f"{root} is not a published bundle (no {BUNDLE_RECORD}); publish one with "
                              "`re-analysis publish RUN --to DIR`")
    try:
        record = json.loads(path.read_text())
        files = record["files"]
    except (ValueError, KeyError):
        raise ReAnalysisError(f"{path} is damaged (not a bundle record); restore it from git") from None
    for rel, entry in files.items():
        f = root / rel
        if not f.is_file():
            raise ReAnalysisError(f"{root}: {rel} is missing (listed in {BUNDLE_RECORD}); restore it from git or "
                                  "publish the bundle again")
        if f.stat().st_size != entry["size"] or _sha256(f) != entry["sha256"]:
            raise ReAnalysisError(f"{root}: {rel} is damaged (its sha256 differs from {BUNDLE_RECORD}'s); restore it "
                                  "from git or publish the bundle again")
    extra = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.name != BUNDLE_RECORD and p.relative_to(root).as_posix() not in files)
    if extra:
        raise ReAnalysisError(f"{root}: {extra[0]} is not listed in {BUNDLE_RECORD} ({len(extra)} such file(s)); "
                              "remove it or publish the bundle again")
    return BundleReport(root, record.get("preset", "?"), list(record.get("units", [])),
                        list(record.get("missing_units", [])), len(files), record)


def stage_bundle(bundle: str | Path, run_dir: str | Path) -> BundleReport:
    """Verify ``bundle`` and unpack it into ``run_dir`` (the gzipped tables as plain CSV), a
    study folder the notebooks read; ``run_dir`` is replaced. Returns the bundle's report."""
    report = verify_bundle(bundle)
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    tmp = run_dir.parent / f".{run_dir.name}.staging"
    if tmp.exists():
        shutil.rmtree(tmp)
    for rel in report.record["files"]:
        src, dst = Path(bundle) / rel, tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".csv.gz"):
            with gzip.open(src, "rb") as f, (tmp / rel[:-3]).open("wb") as g:
                shutil.copyfileobj(f, g)
        else:
            shutil.copy2(src, dst)
    (tmp / PUBLISHED_MARK).write_text(json.dumps({"bundle": str(Path(bundle).resolve()),
                                                  "preset": report.preset, "units": len(report.units),
                                                  "missing_units": report.missing}, indent=1) + "\n")
    os.replace(tmp, run_dir)
    return report
