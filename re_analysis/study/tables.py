"""A study's tables: results, summary (every number with its interval), comparisons,
the privacy-utility trade-off and the verdicts, computed from the per-item records
(judgements, natural accuracy, gap, separation, chance samples) and written atomically,
recomputed only when their inputs or the verdict rules changed.

Example:
    >>> from re_analysis.study.tables import tradeoff_ratio
    >>> tradeoff_ratio(20.0, 4.0)
    5.0
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..artifacts import atomic_write_json, atomic_write_text, config_hash, read_json
from ..errors import ReAnalysisError
from ..metrics.judges import JUDGE_TABLE, PRIMARY_JUDGE, judge_ceilings_of, scored_names  # noqa: F401 (re-exported)
from ..metrics.stats import identity_column
from ..verdicts import RULES_VERSION as VERDICT_RULES  # cached verdict tables follow the rules' version

TABLES_RECORD = "tables.json"  # the key of the inputs the derived tables were computed from
ID_COLUMNS = ["dataset", "defense", "defense_name", "defense_params", "attack", "seed", "target_dir", "attack_dir"]


def result_columns() -> list[str]:
    """The columns of ``results.csv``, one row per run; each judge of
    :data:`~re_analysis.metrics.judges.JUDGE_TABLE` (a judge registered since included)
    contributes its attack accuracy (and its companions'), chance rate and ceiling."""
    accuracy = [f"attack_accuracy_{n}" for n in scored_names()]
    return ID_COLUMNS + [
        # utility, and what Random Erasing hid in training (share of erased pixels that were ink, of ink erased)
        "natural_accuracy", "epsilon", "delta", "erased_foreground_share", "foreground_erased_share",
        # attack accuracy under every judge (open set unless "closed"), and how they agree
        *accuracy, "judges_all_accept", "judges_disagree", "eval_judged_public", "pixel_nearest_public",
        "pixel_rejected", "target_accuracy_on_reconstructions", "attack_failed", "attack_no_initial_point",
        # what an attack gets for free: unoptimised prior samples the target labels as the class
        *[j.chance for j in JUDGE_TABLE], "chance_n", "chance_min_per_class",
        # each judge's acceptance of held-out private images: what a perfect reconstruction scores
        *[j.ceiling for j in JUDGE_TABLE],
        # distribution metrics in evaluation-model features
        "knn_distance", "fid", "fid_n_reconstructions", "distribution_n_excluded", "precision", "recall", "density",
        "coverage",
        # the feature-space gap (target features) and the separation of private classes
        "mean_dist_private", "mean_dist_erased", "mean_dist_private_normalized", "mean_dist_erased_normalized",
        "fraction_nearer_erased", "coverage_private", "separation_margin", "separation_margin_test",
        "separation_nn_purity", "separation_silhouette",
        # the judges' own quality and the run's budget
        "eval_natural_accuracy", "robust_natural_accuracy", "robust_pgd_accuracy", "n_reconstructions",
        "n_classes_attacked", "iterations_fraction", "prior_steps_fraction", "reduced_budget", "prior_passed",
        "prior_quality",
    ]


def metric_columns() -> list[str]:
    """The measured columns of ``results.csv`` (all but :data:`ID_COLUMNS`)."""
    return result_columns()[len(ID_COLUMNS):]


@dataclass
class StudyTables:
    """Everything a study measured: one row per run, and per-item tables for paired statistics."""

    results: pd.DataFrame
    judgements: pd.DataFrame
    natural: pd.DataFrame
    gap: pd.DataFrame
    separation: pd.DataFrame
    chance: pd.DataFrame = field(default_factory=pd.DataFrame)  # per unoptimised prior sample, every judge


def with_keys(table: pd.DataFrame, **keys) -> pd.DataFrame:
    return table.assign(**keys)[list(keys) + [c for c in table.columns if c not in keys]]


def summarize(results: pd.DataFrame, judgements: pd.DataFrame | None = None,
              natural: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per dataset/defense/attack: every metric's mean over seeds and standard
    deviation (``_std``); attack accuracy under every judge (``attack_accuracy_<judge>``) and
    natural accuracy also with their 95% interval (``_ci_low``, ``_ci_high``: identities the
    unit, :func:`re_analysis.metrics.stats.interval_table`) when the per-item tables are given."""
    from ..metrics.stats import interval_table

    num = [c for c in metric_columns() if c in results and pd.to_numeric(results[c], errors="coerce").notna().any()]
    # built in one piece: pandas 3 warns of a fragmented frame after column-by-column assignment
    numeric = pd.concat([results[["dataset", "defense", "attack"]],
                         results[num].apply(pd.to_numeric, errors="coerce")], axis=1)
    g = numeric.groupby(["dataset", "defense", "attack"], sort=False)[num]
    mean, std = g.mean().add_suffix("_mean"), g.std(ddof=1).add_suffix("_std")
    out = pd.concat([mean, std, g.size().rename("n_seeds")], axis=1)  # one concat: no fragmented frame
    cols = [c for m in num for c in (f"{m}_mean", f"{m}_std")] + ["n_seeds"]
    out = out[cols].reset_index()
    keys = ["dataset", "defense", "attack"]
    if judgements is not None and not judgements.empty:
        judged = [j for j in JUDGE_TABLE if j.column in judgements]
        ci = interval_table(judgements, [j.column for j in judged], keys,
                            unit=identity_column(judgements))
        names = {f"{j.column}_{end}": f"{j.accuracy}_{end}" for j in judged for end in ("ci_low", "ci_high")}
        out = out.merge(ci[keys + list(names)].rename(columns=names), on=keys, how="left")
    if natural is not None and not natural.empty:
        ci = interval_table(natural, ["correct"], ["dataset", "defense"])
        ci = ci.rename(columns={"correct_ci_low": "natural_accuracy_ci_low", "correct_ci_high": "natural_accuracy_ci_high"})
        out = out.merge(ci[["dataset", "defense", "natural_accuracy_ci_low", "natural_accuracy_ci_high"]],
                        on=["dataset", "defense"], how="left")
    return out


def comparisons(judgements: pd.DataFrame, natural: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each defense against ``none`` on paired items, per dataset, attack and judge
    (reconstructions: same seed and initial latents; natural accuracy: same test images):
    difference, 95% interval, p-value and "no measurable difference" where the interval
    covers zero (:func:`re_analysis.metrics.stats.compare_with_none`)."""
    from ..metrics.stats import compare_with_none

    parts = [compare_with_none(judgements, column=j.column).assign(judge=j.name)
             for j in JUDGE_TABLE if j.column in judgements]
    if natural is not None and not natural.empty:
        nat = compare_with_none(natural.assign(attack="(natural accuracy)"), column="correct")
        parts.append(nat.assign(judge="natural accuracy"))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def tradeoff_ratio(attack_drop: float, natural_drop: float) -> float:
    """Attack-accuracy points removed per point of natural accuracy lost.

    A natural-accuracy drop of zero or less is no utility cost: the ratio is then the limit
    of ``attack_drop / natural_drop`` as the cost goes to zero from above, ``+inf`` when
    attack accuracy went down (privacy at no utility cost, which ranks first), ``-inf`` when
    it went up, and 0 when it did not move.

    Example:
        >>> tradeoff_ratio(40.0, 2.0), tradeoff_ratio(10.0, 0.0), tradeoff_ratio(10.0, -0.5)
        (20.0, inf, inf)
    """
    if natural_drop > 0:
        return attack_drop / natural_drop
    if attack_drop == 0:
        return 0.0
    return float("inf") if attack_drop > 0 else float("-inf")


def tradeoff(results: pd.DataFrame) -> pd.DataFrame:
    """Privacy-utility trade-off of each defense against no defense, per dataset and attack.

    Definition. For a defense D, an attack A and a seed s, the drops are in percentage
    points against the undefended target of the same seed attacked the same way:
    ``attack_acc_drop = 100 (acc_A(none, s) - acc_A(D, s))`` (top-1 attack accuracy) and
    ``natural_acc_drop = 100 (nat(none, s) - nat(D, s))``. Both are averaged over the seeds
    (``*_std``: their standard deviation over seeds), and the trade-off is the ratio of the
    means, ``tradeoff = mean attack_acc_drop / mean natural_acc_drop``: attack-accuracy points
    removed per point of natural accuracy lost (higher is better). When the mean natural
    drop is zero or negative the defense costs no utility, and ``tradeoff`` is ``+inf`` if
    it lowered attack accuracy (the best case, ranked first), ``-inf`` if it raised it, 0 if
    neither moved (:func:`tradeoff_ratio`). Rows are ranked by ``tradeoff``, best first,
    within each dataset and attack.
    """
    columns = ["dataset", "defense", "attack", "attack_acc_drop", "natural_acc_drop", "tradeoff",
               "attack_acc_drop_std", "natural_acc_drop_std", "n_seeds"]
    base = results[results["defense"] == "none"].set_index(["dataset", "attack", "seed"])
    rows = []
    for _, r in results[results["defense"] != "none"].iterrows():
        key = (r["dataset"], r["attack"], r["seed"])
        if key not in base.index:
            continue
        b = base.loc[key]
        rows.append({"dataset": r["dataset"], "defense": r["defense"], "attack": r["attack"], "seed": r["seed"],
                     "attack_acc_drop": 100 * (b["attack_accuracy_top1"] - r["attack_accuracy_top1"]),
                     "natural_acc_drop": 100 * (b["natural_accuracy"] - r["natural_accuracy"])})
    if not rows:
        return pd.DataFrame(columns=columns)
    g = pd.DataFrame(rows).groupby(["dataset", "defense", "attack"], sort=False)
    out = g[["attack_acc_drop", "natural_acc_drop"]].mean()
    out["tradeoff"] = [tradeoff_ratio(a, n) for a, n in zip(out["attack_acc_drop"], out["natural_acc_drop"])]
    out = out.join(g[["attack_acc_drop", "natural_acc_drop"]].std(ddof=1).add_suffix("_std"))
    out["n_seeds"] = g.size()
    out = out.reset_index().sort_values(["dataset", "attack", "tradeoff"], ascending=[True, True, False],
                                        kind="stable")
    return out[columns].reset_index(drop=True)




def write_tables(tables: StudyTables | pd.DataFrame, root: Path, preset=None) -> None:
    """Write every table of the study (a bare results frame writes results, summary and trade-off)."""
    from ..verdicts import claim_verdicts, roles_for, summarize_verdicts

    if isinstance(tables, pd.DataFrame):
        tables = StudyTables(tables, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    results = tables.results
    texts = {"results": results.to_csv(index=False)}
    for name, frame in (("judgements", tables.judgements), ("natural", tables.natural),
                        ("gap_samples", tables.gap), ("separation", tables.separation), ("chance", tables.chance)):
        if not frame.empty:
            texts[name] = frame.to_csv(index=False)
    # the derived tables (bootstraps: seconds to minutes) are a function of these texts and the
    # claims' roles: when neither changed since the last call, the tables on disk stand
    from ..verdicts import margins_of

    decision = ({"claims": preset.claims, "primary": preset.primary_attack, "judge": preset.primary_judge,
                 "design": preset.design_components} if preset else {})
    decision["margins"] = margins_of(preset.margins if preset else None)  # the margins in force, defaults included
    key = config_hash({"tables": {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()},
                       **decision, "rules": VERDICT_RULES})
    derived = ["summary", "tradeoff"] + (["comparisons", "verdicts", "verdict_summary"] if "judgements" in texts else [])
    done = root / TABLES_RECORD
    if (done.is_file() and read_json(done).get("key") == key
            and all((root / f"{n}.csv").is_file() for n in list(texts) + derived)):
        return
    for name, text in texts.items():
        atomic_write_text(root / f"{name}.csv", text)
    atomic_write_text(root / "summary.csv", summarize(results, tables.judgements, tables.natural).to_csv(index=False))
    atomic_write_text(root / "tradeoff.csv", tradeoff(results).to_csv(index=False))
    if tables.judgements.empty:
        atomic_write_json(done, {"key": key})
        return
    atomic_write_text(root / "comparisons.csv", comparisons(tables.judgements, tables.natural).to_csv(index=False))
    names = dict(zip(results["defense"], results["defense_name"]))
    claims = preset.claims if preset else {}
    roles = roles_for(results["defense"].unique(), names, claims)
    primary = preset.primary_attack if preset else None
    judge = preset.primary_judge if preset else PRIMARY_JUDGE
    verdicts = claim_verdicts(tables.judgements, tables.natural, tables.gap, tables.separation, tables.chance, roles,
                              ceilings=judge_ceilings_of(results), primary_attack=primary, primary_judge=judge,
                              margins=preset.margins if preset else None,
                              design_components=preset.design_components if preset else None)
    atomic_write_text(root / "verdicts.csv", verdicts.to_csv(index=False))
    atomic_write_text(root / "verdict_summary.csv",
                      summarize_verdicts(verdicts, judge=judge, attack=primary).to_csv(index=False))
    atomic_write_json(done, {"key": key})


def load_results(out_dir: str | Path) -> pd.DataFrame:
    path = Path(out_dir) / "results.csv"
    if not path.is_file():
        raise ReAnalysisError(f"no results.csv in {out_dir}; run `re-analysis study --out {out_dir}` first")
    return pd.read_csv(path)
