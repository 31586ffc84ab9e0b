"""The audit report: does the audited model leak its private classes, under which judge, how
far above chance and against what ceiling, which classes, and what Random Erasing changes.

Reads an audit folder (``re-analysis audit --out DIR``): ``audit.json``, ``results.csv``,
``summary.csv``, ``judgements.csv``, ``chance.csv``, ``verdicts.csv``.

**The bottom line** (:func:`audit_verdict`) applies the book's rules to the audited model
(one model, one seed; the identity is the unit):

- **leaks**: the attack beats its chance rate, the leak gate of the verdicts
  (:func:`re_analysis.verdicts.leak`: accuracy minus the chance rate of unoptimised prior
  samples, judged alike, with its 95% interval above zero). A leak found at a reduced budget
  stands: a stronger attack only finds more;
- **no leak detected** (ruling out more than X points above chance): the interval's upper
  end X is at most ``RULE_OUT``, the attack and its prior ran at their papers' budgets, and
  the judge can tell: its ceiling (acceptance of held-out private images) is at least
  ``JUDGE_ROOM`` above the chance rate;
- **cannot tell at this budget** otherwise, with the reasons (a reduced budget, an interval
  too wide for the identities attacked, a judge that cannot tell, no chance rate).

Each verdict states the budget's power: the minimum detectable effect of this design
(:func:`re_analysis.metrics.stats.minimum_detectable_effect`), the half-width more restarts
would reach from the measured variance components, and how long the papers' budgets take on
the machine that ran the audit.

Example:
    >>> import pandas as pd
    >>> j = pd.DataFrame({"defense": ["none"] * 4, "attack": ["gmi"] * 4, "label": [0, 0, 1, 2],
    ...                   "hit_top1": [1, 0, 0, 1]})
    >>> leaked_classes(j)[["attack", "classes leaked", "of"]].values.tolist()
    [['gmi', 2, 3]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics.judges import JUDGE_TABLE, PRIMARY_JUDGE, judge_spec
from ..notebook import format_interval
from ..runs import run_record

__all__ = ["audit_header", "leak_table", "leaked_classes", "defense_change", "audit_verdict", "audit_verdicts",
           "verdict_markdown", "convention_table", "gap_text", "display_names", "model_label", "audit_figures",
           "class_names", "step_seconds",
           "deciding_seconds", "LEAKS", "NO_LEAK", "CANNOT_TELL", "RULE_OUT", "JUDGE_ROOM"]

LEAKS, NO_LEAK, CANNOT_TELL = "leaks", "no leak detected", "cannot tell at this budget"
RULE_OUT = 0.10   # "no leak" must rule out a leak of more than 10 points of attack accuracy above chance
JUDGE_ROOM = 0.5  # ... under a judge that accepts held-out private images at least 50 points above chance
LABEL = "none"    # the audited model's label in the study's tables
DECIDING_PRESET = "full"  # the study preset behind `--preset paper`: the papers' budgets


def _record(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "audit.json"
    return run_record(path.parent, path.name, default={})


def model_label(run_dir: str | Path) -> str:
    """How the report names the audited model: ``your model: fashionnet_ts.pt (TorchScript)``."""
    record = _record(run_dir)
    model = record.get("model", {})
    name = model.get("name") or record.get("config", {}).get("model") or record.get("config", {}).get("entry")
    return f"your model: {name}" if name else "your model"


def display_names(table: pd.DataFrame | None, run_dir: str | Path) -> pd.DataFrame | None:
    """``table`` with the audited model's label (``none`` in the study's tables) replaced by
    its name as given, and a compared defense marked as the suite's retrained copy."""
    if table is None or "defense" not in table:
        return table
    own = model_label(run_dir)
    return table.assign(defense=[own if d == LABEL else f"{d} (retrained copy)" for d in table["defense"]])


def class_names(run_dir: str | Path) -> list[str] | None:
    return _record(run_dir).get("class_names")


def audit_figures(run_dir: str | Path, kind: str, present: bool = True) -> list[tuple[Path, str]]:
    """``(path, title)`` of the audit's ``gallery`` or ``feature_space`` figure of each attack
    run in ``results.csv`` (``OUT/figures/<attack run>-<kind>.png``; only those on disk unless
    ``present=False``), titled with the attack and the model as given."""
    run_dir = Path(run_dir)
    results = pd.read_csv(run_dir / "results.csv")
    own = model_label(run_dir).removeprefix("your model: ")
    out = []
    for r in results.to_dict("records"):
        who = own if r["defense"] == LABEL else f"{r['defense']} (the suite's retrained copy)"
        path = run_dir / "figures" / f"{Path(r['attack_dir']).name}-{kind}.png"
        if path.is_file() or not present:
            out.append((path, f"{r['attack']} against {who}"))
    return out


def audit_header(run_dir: str | Path) -> str:
    """Markdown: what was audited, on which data, with which budgets, and what to keep in
    mind (a held-out split that is not held out, a kept convention, resized images)."""
    run_dir = Path(run_dir)
    record = _record(run_dir)
    cfg, model = record["config"], record["model"]
    results = pd.read_csv(run_dir / "results.csv")
    none = results[results["defense"] == LABEL]
    nat = float(none["natural_accuracy"].iloc[0]) if len(none) else float("nan")
    names = record.get("class_names") or []
    held = ("`--private-test`" if cfg.get("private_test") else
            "a seeded 10% of `--private` (**not held out from your model**: see the note below)")
    name = model_label(run_dir).removeprefix("your model: ")
    text = (f"**Your model**: {name}; inputs {cfg['channels']} x {cfg['image_size']} px, convention "
            f"`{_flag(model['convention'])}`; features: {model['features']}. **Data**: {len(names)} private classes "
            f"from `{cfg['private']}` ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}), public identities "
            f"from `{cfg['public']}`. **Budgets**: the `{record['preset']}` preset, seed {cfg['seed']}. Its accuracy on "
            f"the held-out private images ({held}): **{nat:.3f}**.")
    notes = record.get("notes") or []
    if notes:
        text += "\n\n" + "\n".join(f"- **Note**: {n}" for n in notes)
    return text


def _flag(convention: dict) -> str:
    from ..models.external import InputConvention

    return InputConvention(**{k: tuple(v) if isinstance(v, list) else v for k, v in convention.items()}).flag


def convention_table(run_dir: str | Path) -> pd.DataFrame | None:
    """The input-convention check: the model's accuracy on held-out private images under the
    declared convention and the common alternatives (and with the class order that fits its
    outputs best)."""
    rows = _record(run_dir).get("conventions")
    if not rows:
        return None
    return pd.DataFrame({"convention": [r["convention"] for r in rows], "flag": [r["flag"] for r in rows],
                         "accuracy": [f"{r['accuracy']:.3f}" for r in rows],
                         "with the best class order": [f"{r.get('accuracy_best_order', np.nan):.3f}" for r in rows]})


def leak_table(summary: pd.DataFrame, label: str = LABEL) -> pd.DataFrame:
    """Per attack and judge: attack accuracy [95% CI over identities], the chance rate of
    unoptimised prior samples, the judge's ceiling (its acceptance of held-out private
    images) and accuracy / chance."""
    s = summary[summary["defense"] == label]
    rows = []
    for r in s.to_dict("records"):
        for judge in JUDGE_TABLE:
            acc = judge.accuracy
            if not np.isfinite(r.get(f"{acc}_mean", np.nan)):
                continue
            a, c = r[f"{acc}_mean"], r.get(f"{judge.chance}_mean", np.nan)
            rows.append({"attack": r["attack"], "judge": judge.display,
                         "attack accuracy [95% CI]": format_interval(a, r.get(f"{acc}_ci_low"), r.get(f"{acc}_ci_high")),
                         "chance": f"{c:.3f}" if np.isfinite(c) else "n/a",
                         "ceiling": f"{r.get(f'{judge.ceiling}_mean', np.nan):.3f}",
                         "accuracy / chance": f"{a / c:.1f}x" if np.isfinite(c) and c > 0 else "n/a"})
    return pd.DataFrame(rows)


def leaked_classes(judgements: pd.DataFrame, label: str = LABEL, judge: str = PRIMARY_JUDGE,
                   names: list[str] | None = None) -> pd.DataFrame:
    """Per attack: how many private classes have at least one reconstruction the judge
    accepts, of those attacked, and which (by folder name when ``names`` are given)."""
    j = judgements[judgements["defense"] == label]
    rows = []
    for attack, g in j.groupby("attack", sort=False):
        per = g.groupby("label")[judge_spec(judge).column].max()
        leaked = [names[int(c)] if names else str(c) for c in per[per > 0].index]
        rows.append({"attack": attack, "classes leaked": int(per.sum()), "of": int(len(per)),
                     "share": round(float(per.mean()), 3), "leaked classes": ", ".join(leaked)})
    return pd.DataFrame(rows)


def defense_change(judgements: pd.DataFrame) -> pd.DataFrame | None:
    """With ``--compare-defense``: the retrained copy minus the audited model, per attack and
    judge, paired on the same identities (None without a compared defense). One seed: the
    interval covers the identities' spread, not the seeds'."""
    from ..metrics.stats import paired_table

    if judgements["defense"].nunique() < 2:
        return None
    rows = []
    for judge in JUDGE_TABLE:
        if judge.column not in judgements:
            continue
        t = paired_table(judgements, judge.column, reference=LABEL, by=["attack"], unit="label")
        for r in t.to_dict("records"):
            rows.append({"attack": r["attack"], "defense": r["defense"], "judge": judge.display,
                         "defense − your model [95% CI]": format_interval(r["difference"], r["ci_low"], r["ci_high"],
                                                                          signed=True),
                         "p": f"{r['p_value']:.3f}", "reading": r["verdict"]})
    return pd.DataFrame(rows)


# --- the bottom line -----------------------------------------------------------------------------

def _power(attack: pd.DataFrame, column: str, chance: pd.DataFrame | None = None) -> dict:
    """What the design can detect, for the quantity the verdict tests (each reconstruction's
    verdict minus its class's chance rate when ``chance`` has it): identities, restarts, the
    standard error of the identity mean, the minimum detectable effect (80% power), and from
    the variance components (identity, restart) the restarts per identity that would rule out
    ``RULE_OUT`` with 80% power when nothing leaks (``restarts_needed``; NaN when no number
    would: then ``mde_floor``, the smallest detectable effect with endless restarts, is above it)."""
    from ..metrics.stats import minimum_detectable_effect, variance_components

    if chance is not None and not chance.empty and column in chance:
        rate = chance.groupby("label")[column].mean()
        attack = attack.assign(**{column: attack[column].astype(float) - attack["label"].map(rate).fillna(rate.mean())})
    per = attack.groupby("label")[column].mean()
    n = int(len(per))
    out = {"n_identities": n, "restarts": float(len(attack) / n) if n else float("nan"), "se": float("nan"),
           "df": n - 1, "mde": float("nan"), "var_identity": float("nan"), "var_restart": float("nan"),
           "mde_floor": float("nan"), "restarts_needed": float("nan")}
    if n < 2:
        return out
    se = float(per.std(ddof=1) / np.sqrt(n))
    comps = variance_components(attack[column].to_numpy(float), attack["seed"].to_numpy(), attack["label"].to_numpy())
    factor = minimum_detectable_effect(1.0, n - 1)  # (t_0.975 + t_0.80) with n - 1 degrees of freedom
    room = n * (RULE_OUT / factor) ** 2 - comps["unit"]  # what the restart term may add to n * se^2
    need = (float(max(1.0, np.ceil(comps["within"] / room))) if comps["within"] > 0 else 1.0) if room > 0 else np.nan
    out.update(se=se, mde=minimum_detectable_effect(se, n - 1), var_identity=comps["unit"],
               var_restart=comps["within"], mde_floor=float(factor * np.sqrt(comps["unit"] / n)), restarts_needed=need)
    return out


def audit_verdict(judgements: pd.DataFrame, chance: pd.DataFrame | None, results: pd.DataFrame, attack: str,
                  judge: str = PRIMARY_JUDGE, label: str = LABEL) -> dict:
    """The audit's bottom line for one attack under one judge (module doc): ``verdict``
    (``leaks`` / ``no leak detected`` / ``cannot tell at this budget``), ``reasons``, the
    leak estimate (accuracy minus chance) with its interval, the ceiling, the budget and the
    design's power.

    Example:
        >>> import pandas as pd
        >>> j = pd.DataFrame({"defense": "none", "attack": "gmi", "seed": 0, "label": [0, 0, 1, 1, 2, 2, 3, 3],
        ...                   "hit_top1": [1, 1, 1, 1, 1, 0, 1, 1]})
        >>> c = pd.DataFrame({"defense": "none", "attack": "gmi", "seed": 0, "label": [0, 1, 2, 3] * 50,
        ...                   "hit_top1": [1] * 20 + [0] * 180})  # a chance rate of 0.1 in every class
        >>> r = pd.DataFrame({"defense": ["none"], "attack": ["gmi"], "ceiling_top1": [0.9], "reduced_budget": [True],
        ...                   "iterations_fraction": [0.1], "prior_steps_fraction": [0.2]})
        >>> audit_verdict(j, c, r, "gmi")["verdict"]
        'leaks'
    """
    from ..verdicts import leak

    spec = judge_spec(judge)
    column = spec.column
    a = judgements[(judgements["defense"] == label) & (judgements["attack"] == attack)].dropna(subset=[column])
    c = (chance[(chance["defense"] == label) & (chance["attack"] == attack)]
         if chance is not None and not chance.empty and column in chance else pd.DataFrame())
    row = results[(results["defense"] == label) & (results["attack"] == attack)]
    row = row.iloc[0].to_dict() if len(row) else {}
    lk = leak(a, c, column, label) if not c.empty else None
    ceiling = float(row.get(spec.ceiling, np.nan))
    reduced = bool(row.get("reduced_budget", True))
    power = _power(a, column, c) if len(a) else {}
    if lk is not None and np.isfinite(lk.get("se", np.nan)) and lk.get("df", 0) >= 1:
        from ..metrics.stats import minimum_detectable_effect  # the power of the interval the verdict rests on

        power["mde"] = minimum_detectable_effect(lk["se"], int(lk["df"]))
    out = {"attack": attack, "judge": judge, "judge_name": spec.display, "ceiling": ceiling, "reduced_budget": reduced,
           "iterations_fraction": row.get("iterations_fraction", np.nan),
           "prior_steps_fraction": row.get("prior_steps_fraction", np.nan), **power,
           **{k: (lk or {}).get(k, np.nan) for k in ("estimate", "ci_low", "ci_high", "accuracy", "chance")}}
    reasons = []
    if lk is None:
        out.update(verdict=CANNOT_TELL, reasons=["no chance rate was measured for this attack and judge (no "
                                                 "unoptimised prior sample was accepted), so the leak gate cannot be "
                                                 "applied"])
        return out
    lo, hi = lk["ci_low"], lk["ci_high"]
    room = ceiling - lk["chance"]
    if np.isfinite(lo) and lo > 0:
        out.update(verdict=LEAKS, reasons=[])
        return out
    if not (np.isfinite(lo) and np.isfinite(hi)):
        reasons.append(f"the rules give no interval ({lk.get('method') or 'nothing varies'} over "
                       f"{power.get('n_identities', 0)} attacked class(es))")
    elif hi > RULE_OUT:
        reasons.append(f"the interval reaches {100 * hi:.1f} points above chance: it cannot rule out a leak of "
                       f"{100 * RULE_OUT:.0f} points")
    if reduced:
        reasons.append("the attack or its prior ran below its paper's budget: a miss at a reduced budget rules "
                       "nothing out")
    if not (np.isfinite(room) and room >= JUDGE_ROOM):
        reasons.append(f"the judge accepts held-out private images only {100 * room:.0f} points more often than "
                       f"chance samples (ceiling {ceiling:.2f}): it cannot tell a good reconstruction from a bad one")
    out.update(verdict=NO_LEAK if not reasons else CANNOT_TELL, reasons=reasons)
    return out


def audit_verdicts(run_dir: str | Path) -> pd.DataFrame:
    """:func:`audit_verdict` for every attack and judge of an audit, the primary (the
    preset's primary attack under the open-set judge, named before the data) first and
    marked: it alone decides; the others are shown."""
    run_dir = Path(run_dir)
    results = pd.read_csv(run_dir / "results.csv")
    judgements = pd.read_csv(run_dir / "judgements.csv")
    chance = pd.read_csv(run_dir / "chance.csv") if (run_dir / "chance.csv").is_file() else None
    primary = _record(run_dir).get("primary_attack") or results["attack"].iloc[0]
    attacks = [primary] + [a for a in dict.fromkeys(results["attack"]) if a != primary]
    rows = []
    for attack in attacks:
        for spec in JUDGE_TABLE:
            if spec.column not in judgements or not judgements[spec.column].notna().any():
                continue
            v = audit_verdict(judgements, chance, results, attack, spec.name)
            v["reasons"] = "; ".join(v["reasons"])
            v["primary"] = attack == primary and spec.name == PRIMARY_JUDGE
            rows.append(v)
    return pd.DataFrame(rows).sort_values("primary", ascending=False, kind="stable").reset_index(drop=True)


def step_seconds(root: str | Path, measured: dict[str, float], previous: dict | None = None) -> dict[str, float]:
    """The seconds each step of the audit took when it last did its work: a step resumed
    from its cache takes none, so the larger of this call's and the recorded time stands."""
    previous = previous or {}
    keys = list(dict.fromkeys([*previous, *measured]))
    return {k: round(max(float(measured.get(k, 0.0)), float(previous.get(k, 0.0))), 1) for k in keys}


def deciding_seconds(run_dir: str | Path) -> dict | None:
    """How long the papers' budgets (``--preset paper``) would take on the machine that ran
    this audit, scaled from the times its runs recorded: the judges by their epochs, the prior
    by its fraction of the paper's steps, the attack by its fraction of the paper's iterations
    and restarts; judging and the gap as measured. ``{"seconds", "parts"}`` or None."""
    from ..study import load_preset

    run_dir = Path(run_dir)
    record = _record(run_dir)
    results = pd.read_csv(run_dir / "results.csv")
    rows = results[(results["defense"] == LABEL)]
    if rows.empty:
        return None
    try:
        here = load_preset({"audit-smoke": "smoke", "audit-quick": "quick", "audit-paper": "full"}.get(
            record.get("preset", ""), "smoke"))
        paper = load_preset(DECIDING_PRESET)
    except Exception:  # noqa: BLE001 - a preset the suite no longer has: no projection
        return None
    parts: dict[str, float] = {}
    metrics = run_record(run_dir / rows["attack_dir"].iloc[0], "metrics.json")
    for key, opts, full in (("eval_model", here.eval_model, paper.eval_model),
                            ("robust_model", here.robust_model or {}, paper.robust_model or {})):
        path = metrics.get(key)
        if path and (Path(path) / "metrics.json").is_file():
            took = float(run_record(path, "metrics.json").get("train_seconds_this_call", 0.0))
            ratio = float(full.get("epochs", 1)) / float(opts.get("epochs", 1) or 1)
            parts["judges"] = parts.get("judges", 0.0) + took * ratio
    for r in rows.to_dict("records"):
        out = run_dir / r["attack_dir"]
        info = run_record(out, "attack.json", default={})
        frac = float(r.get("iterations_fraction") or 1.0)
        restarts = float(paper.per_class) / float(here.per_class or 1)
        parts[f"attack {r['attack']}"] = float(info.get("seconds", 0.0)) / frac * restarts
        prior = info.get("prior")
        if prior and (Path(prior) / "prior.json").is_file():
            p = run_record(prior, "prior.json")
            parts["prior"] = max(parts.get("prior", 0.0), float(p.get("train_seconds_this_call", 0.0))
                                 / float(p.get("steps_fraction") or 1.0))
        m, g = run_record(out, "metrics.json", default={}), run_record(out, "gap.json", default={})
        parts[f"judging {r['attack']}"] = float(m.get("evaluate_seconds", 0.0)) + float(g.get("seconds", 0.0))
    return {"seconds": float(sum(parts.values())), "parts": {k: round(v, 1) for k, v in parts.items()}}


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "an unknown time"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _pts(x: float, signed: bool = False) -> str:
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def verdict_markdown(run_dir: str | Path) -> str:
    """Markdown: the audit's bottom line (the primary row of ``audit_verdict.csv``), what it
    rests on, what this budget can and cannot decide, and how long a deciding budget takes."""
    run_dir = Path(run_dir)
    path = run_dir / "audit_verdict.csv"
    table = pd.read_csv(path) if path.is_file() else audit_verdicts(run_dir)
    v = table[table["primary"]].iloc[0].to_dict() if table["primary"].any() else table.iloc[0].to_dict()
    record = _record(run_dir)
    preset = record.get("preset", "audit").removeprefix("audit-")
    who = model_label(run_dir).removeprefix("your model: ")
    acc, ch, ceil = v["accuracy"], v["chance"], v["ceiling"]
    interval = (f"{_pts(v['estimate'], True)} points [{_pts(v['ci_low'], True)}, {_pts(v['ci_high'], True)}]"
                if np.isfinite(v["ci_low"]) else f"{_pts(v['estimate'], True)} points (no interval)")
    facts = (f"{v['attack']} reconstructions pass the {v['judge_name']} {100 * acc:.0f}% of the time against "
             f"{100 * ch:.0f}% for unoptimised prior samples (the chance rate, averaged over the classes): accuracy − "
             f"chance {interval}, 95% "
             f"interval over the {v['n_identities']} attacked private classes; real held-out private images pass "
             f"{100 * ceil:.0f}% (the judge's ceiling).") if np.isfinite(acc) else ""
    if v["verdict"] == LEAKS:
        head = f"## Verdict: {who} **leaks** its private classes"
        extra = (" The reconstructions pass as often as real images do: what the judge recognises of each class is "
                 "recovered." if np.isfinite(ceil) and acc >= 0.95 * ceil else "")
        if v["reduced_budget"]:
            extra += (f" Found at the reduced `{preset}` budgets: a stronger attack can only find more, so the "
                      "verdict stands.")
    elif v["verdict"] == NO_LEAK:
        head = (f"## Verdict: **no leak detected** in {who} (rules out more than "
                f"{_pts(v['ci_high'])} points above chance)")
        extra = (f" A perfect reconstruction would add {_pts(ceil - ch)} points; this audit rules out more than "
                 f"{_pts(v['ci_high'])}.")
    else:
        head = f"## Verdict: **cannot tell at this budget** whether {who} leaks"
        reasons = str(v.get("reasons") or "")
        extra = f" Why: {reasons}." if reasons else ""
    lines = [head, "", facts + extra, ""]
    lines.append(_budget_paragraph(v, preset, run_dir, record))
    lines.append("")
    lines.append("*Rules*: **leaks** when accuracy − chance has its 95% interval above zero (the leak gate of the "
                 "book's verdicts); **no leak detected** only at the papers' budgets, with an interval that rules out "
                 f"{100 * RULE_OUT:.0f} points and a judge whose ceiling is at least {100 * JUDGE_ROOM:.0f} points "
                 "above chance; otherwise **cannot tell**. The primary attack and judge (the preset's primary attack, "
                 "the open-set evaluation model) decide; the other rows of `audit_verdict.csv` are shown, never "
                 "decide.")
    return "\n".join(lines)


def _budget_paragraph(v: dict, preset: str, run_dir: Path, record: dict) -> str:
    n, r = v.get("n_identities", 0), v.get("restarts", np.nan)
    text = "**What this budget can decide.** "
    if np.isfinite(v.get("mde", np.nan)):
        text += (f"With {n} attacked classes x {r:.0f} reconstruction(s) each, this design detects a leak of "
                 f"{_pts(v['mde'])} points above chance with 80% power. ")
        if np.isfinite(v.get("restarts_needed", np.nan)):
            text += (f"Ruling out {100 * RULE_OUT:.0f} points with 80% power when nothing leaks needs about "
                     f"{v['restarts_needed']:.0f} reconstruction(s) per class (from the measured variances). ")
        elif np.isfinite(v.get("mde_floor", np.nan)):
            text += (f"With {n} classes no number of reconstructions per class rules out {100 * RULE_OUT:.0f} points "
                     f"(the classes differ too much: with endless restarts the smallest detectable leak is still "
                     f"{_pts(v['mde_floor'])} points); that needs more private classes. ")
    if v["reduced_budget"]:
        fi, fp = v.get("iterations_fraction", np.nan), v.get("prior_steps_fraction", np.nan)
        parts = [f"{100 * fi:.0f}% of its paper's iterations" if np.isfinite(fi) else "",
                 f"its prior at {100 * fp:.0f}% of its paper's steps" if np.isfinite(fp) else ""]
        text += (f"The `{preset}` budgets run the attack at {' and '.join(p for p in parts if p) or 'a reduced budget'}:"
                 " a leak found here stands, a miss says nothing. ")
        est = deciding_seconds(run_dir)
        if est is not None:
            text += (f"A deciding audit (`--preset paper`, the papers' budgets) would take about "
                     f"**{_duration(est['seconds'])}** on this machine ({record.get('device', 'this machine')}; "
                     f"scaled from this run's step times: "
                     + ", ".join(f"{k} {_duration(s)}" for k, s in est["parts"].items()) + ").")
    else:
        text += "The attack and its prior ran at their papers' budgets."
    return text


def gap_text(run_dir: str | Path) -> str | None:
    """Markdown: the feature-space gap of the audited model's reconstructions and what it
    means (None without a gap record)."""
    results = pd.read_csv(Path(run_dir) / "results.csv")
    rows = results[results["defense"] == LABEL]
    if rows.empty or not np.isfinite(rows["mean_dist_private_normalized"].astype(float)).any():
        return None
    r = rows.iloc[0]
    return (f"In your model's own feature space (its penultimate features, or its logits when it exposes none), "
            f"each {r['attack']} reconstruction lies at a median-normalised squared distance of "
            f"**{r['mean_dist_private_normalized']:.2f}** from the nearest private training image of its class, on "
            f"average (1.0: as far as a private image lies from its nearest same-class neighbour; larger: the "
            f"reconstructions sit outside the cloud of real images), and **{r['mean_dist_erased_normalized']:.2f}** "
            f"from the nearest Random-Erased private image (what a model trained with Random Erasing sees). "
            f"{100 * r['fraction_nearer_erased']:.0f}% of the reconstructions are nearer an erased than a real image; "
            f"they cover {100 * r['coverage_private']:.1f}% of the private images (share with a reconstruction "
            f"among their 5 nearest neighbours). The MIDRE paper argues that reconstructions of an undefended model "
            f"overlap the private features and that Random Erasing moves them toward the erased ones: compare with "
            f"`--compare-defense random-erasing`.")


# The report's captions and notes (notebooks/audit_report.ipynb shows them; the notebook holds no prose in code).
ACCURACY_CAPTION = ("Attack accuracy of each attack under each judge (colour), with its 95% interval over the attacked "
                    "identities; crosses: the same judge's chance rate.")
FEATURE_SPACE_CAPTION = ("UMAP embedding of your model's features: private training images (blue), the same images "
                         "Random-Erased (orange), reconstructions (red), one panel per attacked class, a convex hull per "
                         "group; grey: private images of the other classes. Reconstructions inside the blue hull look, "
                         "to your model, like its training images.")
DEFENSE_NOT_ASKED = ("Not asked: run the audit with `--compare-defense random-erasing` and `--arch NAME` to retrain your "
                     "architecture with Random Erasing on your data and attack the copy alike.")
DEFENSE_NOTE = ("The copy is retrained by the suite (its recipe, your data and architecture); your model was trained with "
                "yours, so the difference holds the recipe's effect too.")


def gallery_caption(run_dir) -> str:
    """The leakage galleries' caption, naming the audited model."""
    return (f"Leakage galleries against {model_label(run_dir).removeprefix('your model: ')}: two reconstructions per "
            "class (at most eight classes), each beside its nearest same-class private image (in pixels; in "
            "evaluation-model features) and its nearest training image of any identity (PUBLIC in red: the attacker's "
            "own data, not a leak). E/R/P +/−: the open-set, robust and pixel judges' verdicts.")
