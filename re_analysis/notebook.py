"""Helpers for the papermill notebooks: strict parameters and the cached study behind them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ReAnalysisError
from .metrics.judges import JUDGE_TABLE, judge_spec

# Every notebook's parameters, with the types papermill may pass.
PARAMETERS: dict[str, tuple[type, ...]] = {
    "run_dir": (str,), "preset": (str,), "dataset": (str, type(None)), "defenses": (list, type(None)),
    "attacks": (list, type(None)), "seeds": (list, type(None)), "device": (str,),
}
IGNORED = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def check_parameters(namespace: dict[str, Any], spec: dict[str, tuple[type, ...]] = PARAMETERS) -> None:
    """Fail at once, naming the fix, when papermill passed an unknown name or a wrong type.

    Call it in the cell right after the ``parameters`` cell with ``globals()``: papermill
    injects its values between the two, so any user-level name that is not a declared
    parameter came from a mistyped ``-p NAME``.
    """
    unknown = sorted(k for k, v in namespace.items()
                     if not k.startswith("_") and k not in spec and k not in IGNORED
                     and not callable(v) and type(v).__name__ != "module")
    if unknown:
        raise ReAnalysisError(f"unknown notebook parameter(s) {', '.join(unknown)}; this notebook takes "
                              f"{', '.join(sorted(spec))}")
    for k, types in spec.items():
        if k in namespace and not isinstance(namespace[k], types):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise ReAnalysisError(f"notebook parameter {k} must be {names}, got {type(namespace[k]).__name__} "
                                  f"{namespace[k]!r}; pass e.g. -y '{k}: ...' to papermill")


def ensure_study(run_dir: str, preset: str, dataset: str | None = None, defenses: list | None = None,
                 attacks: list | None = None, seeds: list | None = None, device: str = "auto",
                 progress: bool = False) -> pd.DataFrame:
    """Results of the study these parameters describe, running whatever is not cached yet; a
    published bundle's folder is read as it is, never recomputed."""
    from .publish import is_bundle
    from .study import load_preset, load_results, restrict, run_study

    if is_bundle(run_dir):
        if defenses is not None or attacks is not None or seeds is not None or dataset is not None:
            raise ReAnalysisError(f"{run_dir} is a published study: it is rendered as published; drop the dataset, "
                                  "defenses, attacks and seeds parameters (or run a study of your own)")
        return load_results(run_dir)
    p = load_preset(preset, dataset=dataset, device=device)
    if defenses is not None or attacks is not None or seeds is not None:
        p = restrict(p, defenses, attacks, seeds)
    results = finished_study(run_dir, p)
    if results is None:
        results = run_study(p, run_dir, progress=progress)
    if results.empty:
        raise ReAnalysisError("the study produced no rows; check the defenses and attacks parameters")
    return results


def finished_study(run_dir: str, preset) -> pd.DataFrame | None:
    """The results of ``run_dir`` when its last study call ran exactly ``preset`` and
    finished (``study.json`` is written last), else None. The book builds every chapter
    right after its study: re-checking every step per notebook would only repeat that."""
    from .artifacts import read_json
    from .study import load_results

    record_path = Path(run_dir) / "study.json"
    if not record_path.is_file() or not (Path(run_dir) / "results.csv").is_file():
        return None
    from .study.units import EXECUTION_KEYS

    # how and where the study ran (`book --workers 2` over a preset that says 1) does not change it
    skip = {"seconds_this_call", *EXECUTION_KEYS}
    record = {k: v for k, v in read_json(record_path).items() if k not in skip}
    wanted = {k: v for k, v in preset.to_dict().items() if k not in skip}
    if record != json.loads(json.dumps(wanted)):  # the record went through JSON: tuples are lists there
        return None
    return load_results(run_dir)


def mean_std(df: pd.DataFrame, by: list[str], cols: list[str], digits: int = 3) -> pd.DataFrame:
    """A display table of ``mean ± std`` over seeds."""
    g = df.groupby(by, sort=False)[cols]
    m, s = g.mean(), g.std(ddof=1).fillna(0.0)
    out = m.copy().astype(object)
    for c in cols:
        out[c] = [f"{a:.{digits}f} ± {b:.{digits}f}" for a, b in zip(m[c], s[c])]
    out["seeds"] = g.size()
    return out.reset_index()


def run_path(run_dir: str, relative: str) -> Path:
    """A run folder named in results.csv (``target_dir`` / ``attack_dir``), under ``run_dir``."""
    return Path(run_dir) / relative


def show_figure(fig, caption: str, run_dir: str | None = None, preset: str | None = None) -> None:
    """Display a matplotlib figure with a caption saying what it shows and which run it came
    from (the rendered book has no other way to tell a reader where a figure came from)."""
    import io

    from IPython.display import HTML, display
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    display(HTML(_figure_html(buf.getvalue(), caption, run_dir, preset)))


# --------------------------------------------------------------------------------------------
# Display helpers: numbers with their intervals, tables a chapter may lack, captioned figures.

NO_VALUE = "n/a"


def _finite(x) -> bool:
    try:
        return bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


def _fmt(v: float, digits: int, signed: bool) -> str:
    text = f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
    if v == 0 and text[0] == "-":  # a negative zero is zero; -0.001 stays "-0.00"
        text = ("+" if signed else "") + text[1:]
    return text


def _bound(v: float, digits: int, signed: bool) -> str:
    """An interval bound; one that rounds to zero without being zero keeps its first
    significant digit (up to two more decimals), so "excludes zero" stays visible."""
    text = _fmt(v, digits, signed)
    extra = digits
    while v != 0 and float(text) == 0 and extra < digits + 2:
        extra += 1
        text = _fmt(v, extra, signed)
    return text


def format_number(x, digits: int = 2, signed: bool = False) -> str:
    """One number as the book prints it: ``digits`` decimals, ``+inf`` / ``-inf`` spelled out,
    ``n/a`` for a missing value.

    Example:
        >>> format_number(0.6249), format_number(-0.05, signed=True), format_number(float("inf"))
        ('0.62', '-0.05', '+inf')
    """
    try:
        v = float(x)
    except (TypeError, ValueError):
        return NO_VALUE
    if np.isnan(v):
        return NO_VALUE
    if np.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return _fmt(v, digits, signed)


def format_interval(mean, low=None, high=None, digits: int = 2, signed: bool = False) -> str:
    """``mean [low, high]`` (a 95% interval), the way every headline number of the book reads.

    Without a finite interval the mean stands alone, marked ``(no interval)``; without a
    mean the cell reads ``n/a``.

    Example:
        >>> format_interval(0.6234, 0.551, 0.7049)
        '0.62 [0.55, 0.70]'
        >>> format_interval(-0.1, -0.2, 0.004, signed=True)  # a bound near zero keeps a significant digit
        '-0.10 [-0.20, +0.004]'
        >>> format_interval(-0.05, -0.1, 0.0, signed=True)
        '-0.05 [-0.10, +0.00]'
        >>> format_interval(0.5, float("nan"), float("nan"))
        '0.50 (no interval)'
    """
    m = format_number(mean, digits, signed)
    if m == NO_VALUE:
        return NO_VALUE
    if not (_finite(low) and _finite(high)):
        return f"{m} (no interval)"
    return f"{m} [{_bound(float(low), digits, signed)}, {_bound(float(high), digits, signed)}]"


def interval_columns(table: pd.DataFrame, column: str) -> tuple[str, str | None, str | None]:
    """The mean, low and high columns of ``column`` in a summary-like table.

    Looks for ``column_mean`` (or ``column``) and ``column_ci_low`` / ``column_ci_high``; a
    judge, by its name (``top1``) or any of its columns, stands for its attack accuracy
    (``attack_accuracy_top1``). A missing interval is None.

    Example:
        >>> t = pd.DataFrame({"attack_accuracy_top1_mean": [0.5], "attack_accuracy_top1_ci_low": [0.4],
        ...                   "attack_accuracy_top1_ci_high": [0.6]})
        >>> interval_columns(t, "top1")
        ('attack_accuracy_top1_mean', 'attack_accuracy_top1_ci_low', 'attack_accuracy_top1_ci_high')
    """
    try:
        name = judge_spec(column).accuracy
    except ReAnalysisError:  # not a judge: the column itself
        name = column
    mean = f"{name}_mean" if f"{name}_mean" in table else name if name in table else None
    if mean is None:
        raise ReAnalysisError(f"the table has no column {column!r} (nor {column}_mean); its columns: "
                              f"{', '.join(map(str, table.columns))}")
    low, high = (f"{name}_{end}" if f"{name}_{end}" in table else None for end in ("ci_low", "ci_high"))
    return mean, low, high


def with_interval(table: pd.DataFrame, column: str, digits: int = 2, signed: bool = False) -> pd.Series:
    """Each row's ``column`` written with its 95% interval, e.g. ``0.62 [0.55, 0.70]``
    (``summary.csv``, or any table with ``column_mean`` / ``column_ci_low`` / ``column_ci_high``).

    Example:
        >>> s = pd.DataFrame({"natural_accuracy_mean": [0.9812], "natural_accuracy_ci_low": [0.97],
        ...                   "natural_accuracy_ci_high": [0.99]})
        >>> with_interval(s, "natural_accuracy").tolist()
        ['0.98 [0.97, 0.99]']
    """
    mean, low, high = interval_columns(table, column)
    lows = table[low] if low else pd.Series(np.nan, index=table.index)
    highs = table[high] if high else pd.Series(np.nan, index=table.index)
    return pd.Series([format_interval(m, lo, hi, digits, signed) for m, lo, hi in zip(table[mean], lows, highs)],
                     index=table.index, dtype=object)


def with_spread(table: pd.DataFrame, column: str, digits: int = 2) -> pd.Series:
    """``mean ± sd`` over seeds from ``column_mean`` / ``column_std`` (the mean alone with one
    seed, ``n/a`` when missing): for secondary numbers that have no per-item interval.

    Example:
        >>> s = pd.DataFrame({"fid_mean": [12.345, 3.0], "fid_std": [1.2, float("nan")]})
        >>> with_spread(s, "fid", 1).tolist()
        ['12.3 ± 1.2', '3.0']
    """
    mean = f"{column}_mean" if f"{column}_mean" in table else column
    if mean not in table:
        return pd.Series(NO_VALUE, index=table.index, dtype=object)
    std = table[f"{column}_std"] if f"{column}_std" in table else pd.Series(np.nan, index=table.index)
    out = []
    for m, s in zip(table[mean], std):
        text = format_number(m, digits)
        out.append(f"{text} ± {float(s):.{digits}f}" if text != NO_VALUE and _finite(s) else text)
    return pd.Series(out, index=table.index, dtype=object)


def interval_means(items: pd.DataFrame, columns, by, group: str = "seed", unit: str | None = None) -> pd.DataFrame:
    """Per ``by`` group, each of ``columns`` as ``<col>_mean``, ``<col>_ci_low``, ``<col>_ci_high``:
    the mean over items and its 95% interval with the (``group`` = seed, ``unit``) cluster as
    the unit (:func:`re_analysis.metrics.stats.interval_table`), plus ``n_items`` and
    ``n_seeds``. NaN values are left out; a column that is absent or all NaN in a group
    gives NaN. What :func:`with_interval` reads.

    Example:
        >>> t = pd.DataFrame({"defense": ["none"] * 4, "seed": [0, 0, 0, 0], "hit": [1, 1, 0, 0]})
        >>> interval_means(t, ["hit"], ["defense"])[["defense", "hit_mean", "n_items"]].values.tolist()
        [['none', 0.5, 4]]
    """
    from .metrics.stats import interval_table

    out = interval_table(items, list(columns), by, seed=group, unit=unit)
    return out.rename(columns={c: f"{c}_mean" for c in columns})


def difference_sentence(difference, low, high, what: str = "the difference", digits: int = 2) -> str:
    """A paired difference in words, with its interval: lower, higher, or no measurable difference.

    Example:
        >>> difference_sentence(-0.12, -0.2, -0.05, "RE minus none")
        'RE minus none is -0.12 [-0.20, -0.05]: lower'
        >>> difference_sentence(0.02, -0.04, 0.08, "RE minus none")
        'RE minus none is +0.02 [-0.04, +0.08]: no measurable difference (the interval covers zero)'
    """
    text = f"{what} is {format_interval(difference, low, high, digits, signed=True)}"
    if not (_finite(low) and _finite(high)):
        return f"{text}: no interval, so no conclusion"
    if float(high) < 0:
        return f"{text}: lower"
    if float(low) > 0:
        return f"{text}: higher"
    return f"{text}: no measurable difference (the interval covers zero)"


def load_table(run_dir: str | Path, name: str) -> pd.DataFrame | None:
    """``run_dir/name.csv`` as a frame, or None when the study did not write it (or wrote it empty)."""
    path = Path(run_dir) / (name if name.endswith(".csv") else f"{name}.csv")
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    # pandas 3's read_csv gives one block per column: a wide table (summary.csv, 100+ columns) then
    # warns "highly fragmented" into the book at its first insert; a copy consolidates the blocks
    return None if table.empty else table.copy()


def missing_table(name: str, why: str = "") -> str:
    """The sentence a chapter prints instead of a table the study did not write.

    Example:
        >>> missing_table("separation.csv", "it needs at least two attacked classes")
        'This study wrote no separation.csv (it needs at least two attacked classes), so this part has no numbers.'
    """
    name = name if name.endswith(".csv") else f"{name}.csv"
    return f"This study wrote no {name}{f' ({why})' if why else ''}, so this part has no numbers."


def budget_label(row) -> str:
    """``paper`` or ``reduced (iterations 0.20, prior 0.50)``: a run's budget against its paper's.

    Example:
        >>> budget_label({"reduced_budget": True, "iterations_fraction": 0.2, "prior_steps_fraction": 1.0})
        'reduced (iterations 0.20)'
        >>> budget_label({"reduced_budget": False, "iterations_fraction": 1.0, "prior_steps_fraction": None})
        'paper'
    """
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    parts = [f"{name} {float(get(col)):.2f}" for name, col in (("iterations", "iterations_fraction"),
                                                                ("prior", "prior_steps_fraction"))
             if _finite(get(col)) and float(get(col)) < 1]
    reduced = get("reduced_budget")
    if parts:
        return f"reduced ({', '.join(parts)})"
    if isinstance(reduced, str):
        reduced = reduced.strip().lower() == "true"
    if reduced is True or (reduced is not None and not isinstance(reduced, bool) and _finite(reduced) and bool(reduced)):
        return "reduced"
    if not any(_finite(get(c)) for c in ("iterations_fraction", "prior_steps_fraction")):
        return "not recorded"
    return "paper"


def reduced_runs(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (attack, defense) that ran below its paper budget in some seed: the lowest
    iteration and prior fractions over its seeds, and how many seeds were reduced."""
    r = results.copy()
    r["budget"] = [budget_label(row) for row in r.to_dict("records")]
    low = r[r["budget"].str.startswith("reduced")]
    if low.empty:
        return pd.DataFrame(columns=["attack", "defense", "iterations_fraction", "prior_steps_fraction", "seeds"])
    cols = [c for c in ("iterations_fraction", "prior_steps_fraction") if c in low]
    g = low.groupby(["attack", "defense"], sort=False)
    out = g[cols].min() if cols else pd.DataFrame(index=g.size().index)
    out["seeds"] = g.size()
    return out.reset_index()


def budget_sentence(results: pd.DataFrame) -> str:
    """Which runs ran below their paper budget, in one generated sentence."""
    red = reduced_runs(results)
    n = len(results.drop_duplicates(["attack", "defense"]))
    if red.empty:
        return f"All {n} attack/defense pairs ran at their paper budget (iterations and prior training steps)."
    attacks = []
    for attack, g in red.groupby("attack", sort=False):
        fr = []
        for name, col in (("iterations", "iterations_fraction"), ("prior training steps", "prior_steps_fraction")):
            if col in g and g[col].notna().any() and g[col].min() < 1:
                fr.append(f"{name} at {g[col].min():.2f} of the paper's")
        attacks.append(f"{attack} ({'; '.join(fr) or 'reduced'}; {len(g)} defense(s))")
    return (f"{len(red)} of {n} attack/defense pairs ran below their paper budget: {', '.join(attacks)}. "
            "Read their numbers as what a shorter search finds, not as the paper's attack.")


NOWRAP_CHARS = 24  # cells up to this long stay on one line (an interval such as "+0.10 [+0.003, +0.20]")


def table_html(table: pd.DataFrame, html_columns=(), index: bool = False) -> str:
    """A headline table as HTML: values escaped (except ``html_columns``, already HTML), short
    cells kept on one line, text left-aligned, the row index hidden.

    Example:
        >>> "<td" in table_html(pd.DataFrame({"a": ["0.62 [0.55, 0.70]"]}))
        True
    """
    import html

    def cell(value, raw: bool) -> str:
        if raw:
            return str(value)
        text = NO_VALUE if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        text = html.escape(text)
        return f'<span style="white-space:nowrap">{text}</span>' if len(text) <= NOWRAP_CHARS else text

    shown = table.copy() if index else table.reset_index(drop=True)
    shown = shown.astype(object)
    for c in shown.columns:
        shown[c] = [cell(v, c in html_columns) for v in shown[c]]
    shown.columns = [html.escape(str(c)) for c in shown.columns]
    body = shown.to_html(index=index, escape=False, border=0, classes="dataframe re-analysis-table")
    body = body.replace("<th>", '<th style="text-align:left">').replace('<th style="min-width', '<th style="text-align:left;min-width')
    body = body.replace("<td>", '<td style="text-align:left;vertical-align:top">')
    return f'<div style="overflow-x:auto;font-size:88%">{body}</div>'


def show_table(table: pd.DataFrame, html_columns=(), index: bool = False) -> None:
    """Display a headline table (see :func:`table_html`)."""
    from IPython.display import HTML, display

    display(HTML(table_html(table, html_columns, index)))


def _source(run_dir: str | None, preset: str | None) -> str:
    """A caption's source line: the preset and the run's folder name, never a local path."""
    if preset is None:
        return ""
    return f" Source: study preset <code>{preset}</code>" + (f", run <code>{Path(run_dir).name}</code>." if run_dir else ".")


def _figure_html(png: bytes, caption: str, run_dir: str | None, preset: str | None) -> str:
    import base64

    source = _source(run_dir, preset)
    img = base64.b64encode(png).decode("ascii")
    return (f'<figure style="margin:1em 0"><img src="data:image/png;base64,{img}" style="max-width:100%"/>'
            f'<figcaption style="font-size:90%"><em>{caption}</em>{source}</figcaption></figure>')


def show_images(images, caption: str, run_dir: str | None = None, preset: str | None = None) -> int:
    """Display PNGs written by the study side by side (wrapping on narrow pages) under one
    caption; ``images`` is a list of ``(path, title)``. Absent files are skipped; returns how
    many were shown (nothing is displayed when none exists)."""
    import base64
    import html

    from IPython.display import HTML, display

    found = [(Path(p), t) for p, t in images if Path(p).is_file()]
    if not found:
        return 0
    cells = "".join(
        f'<div style="flex:1 1 0;min-width:260px;max-width:560px;text-align:center;margin:0 .5em .5em 0">'
        f'<div style="font-size:90%;font-weight:bold">{html.escape(str(t))}</div>'
        f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode("ascii")}" style="width:100%"/></div>'
        for p, t in found)
    source = _source(run_dir, preset)
    display(HTML(f'<figure style="margin:1em 0"><div style="display:flex;flex-wrap:wrap;align-items:flex-start">{cells}'
                 f'</div><figcaption style="font-size:90%"><em>{caption}</em>{source}</figcaption></figure>'))
    return len(found)


def show_image(path: str | Path, caption: str, run_dir: str | None = None, preset: str | None = None) -> bool:
    """Display a PNG written by the study (a gallery, a feature-space figure) with a caption,
    as :func:`show_figure` does; False (and nothing shown) when the file is absent."""
    from IPython.display import HTML, display

    path = Path(path)
    if not path.is_file():
        return False
    display(HTML(_figure_html(path.read_bytes(), caption, run_dir, preset)))
    return True


def judges_present(table: pd.DataFrame) -> list[str]:
    """The judges (names from :data:`~re_analysis.metrics.judges.JUDGE_TABLE`, in the book's
    order) whose attack accuracy ``table`` (summary.csv or results.csv) holds with at least one value."""
    out = []
    for judge in JUDGE_TABLE:
        try:
            mean, _, _ = interval_columns(table, judge.name)
        except ReAnalysisError:
            continue
        if pd.to_numeric(table[mean], errors="coerce").notna().any():
            out.append(judge.name)
    return out


def study_sentence(results: pd.DataFrame, preset: str | None = None) -> str:
    """What the numbers of a chapter rest on: dataset, seeds, classes attacked and
    reconstructions, and what an interval means, in one generated paragraph.

    Example:
        >>> r = pd.DataFrame({"dataset": ["glyphs"] * 2, "seed": [0, 1], "n_classes_attacked": [20, 20],
        ...                   "n_reconstructions": [100, 100], "attack": ["gmi"] * 2, "defense": ["none"] * 2})
        >>> study_sentence(r).split(";")[0]
        'Dataset **glyphs**, 2 seeds (0, 1)'
    """
    seeds = sorted(int(s) for s in results["seed"].unique())
    datasets = ", ".join(f"**{d}**" for d in results["dataset"].unique())
    text = f"Dataset {datasets}, {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})"
    if preset:
        text += f", study preset `{preset}`"
    if "n_classes_attacked" in results and results["n_classes_attacked"].notna().any():
        k = results["n_classes_attacked"].dropna().astype(int)
        n = results["n_reconstructions"].dropna().astype(int) if "n_reconstructions" in results else pd.Series(dtype=int)
        per_pair = results.groupby(["attack", "defense"])["n_reconstructions"].sum() if len(n) else pd.Series(dtype=int)
        text += (f"; {k.min() if k.min() == k.max() else f'{k.min()}-{k.max()}'} classes attacked per seed"
                 + (f", {int(per_pair.min())} reconstructions per attack and defense over all seeds" if len(per_pair) else ""))
    text += (". Every interval is 95%, with the attacked identity as the unit (restarts of one identity averaged "
             "first); with one seed it is a t-interval over identities and covers only their spread, not that of "
             "training." if len(seeds) == 1 else
             ". Every interval is 95%, with the attacked identity as the unit (restarts of one identity averaged "
             "first): a t-interval over the per-seed means.")
    return text


def attack_dirs(results: pd.DataFrame, run_dir: str | Path, seed: int | None = None) -> pd.DataFrame:
    """results rows of one seed (default: the smallest) with ``path``: the attack run folder."""
    seed = int(results["seed"].min()) if seed is None else seed
    rows = results[results["seed"] == seed].copy()
    rows["path"] = [Path(run_dir) / str(d) for d in rows["attack_dir"]]
    return rows


def verdict_reason(row) -> str:
    """Why one row of ``verdicts.csv`` is inconclusive, in words ("" when it is not), from
    what the row records: its gate (no chance rate, no leak, utility), else its interval
    against the row's threshold and the note that says what the interval rules out.

    Example:
        >>> verdict_reason({"claim": 1, "verdict": "inconclusive", "estimate": -0.02, "ci_low": -0.08,
        ...                 "ci_high": 0.03, "threshold": 0.0, "gate": "", "note": ""})
        'the interval -0.02 [-0.08, +0.03] covers 0'
        >>> verdict_reason({"claim": 2, "verdict": "inconclusive", "estimate": -0.02, "ci_low": -0.05,
        ...                 "ci_high": 0.01, "threshold": -0.03, "gate": "", "note": ""})
        'the interval -0.02 [-0.05, +0.01] covers -0.03'
    """
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    if not str(get("verdict", "")).startswith("inconclusive"):
        return ""
    note = get("note", "")
    note = note if isinstance(note, str) else ""
    gate = get("gate", "")
    if isinstance(gate, str) and gate:
        return note or f"gated: {gate}"
    if not (_finite(get("ci_low")) and _finite(get("ci_high"))):
        return "there is no interval to judge (nothing varies, or too few paired items)"
    if note:
        return note
    est = format_interval(get("estimate"), get("ci_low"), get("ci_high"), signed=True)
    threshold = get("threshold", 0.0)
    return f"the interval {est} covers {float(threshold) if _finite(threshold) else 0.0:g}"


def _flag(v) -> bool | None:
    if isinstance(v, str):
        return {"true": True, "false": False}.get(v.strip().lower())
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return bool(v)


def prior_sentence(results: pd.DataFrame) -> str:
    """Whether each attack's image prior passed its held-out check (``prior_passed``,
    ``prior_quality``: its FID to held-out public images over that of real public images,
    1 = as close as real ones), in one generated sentence; "" when the study recorded none.

    Example:
        >>> r = pd.DataFrame({"attack": ["gmi", "kedmi"], "defense": ["none", "none"], "seed": [0, 0],
        ...                   "prior_passed": [True, False], "prior_quality": [1.8, 6.5]})
        >>> prior_sentence(r)
        'The prior of kedmi failed its held-out check (FID ratio up to 6.5 against held-out public images; 1 = as close as real ones) in 1 of 1 run(s): its reconstructions say little about leakage. The other priors passed.'
    """
    if "prior_passed" not in results:
        return ""
    flags = results.assign(_ok=[_flag(v) for v in results["prior_passed"]])
    flags = flags[flags["_ok"].notna()]
    if flags.empty:
        return ""
    failed = flags[flags["_ok"] == False]  # noqa: E712
    if failed.empty:
        return ("Every attack's image prior passed its held-out check (FID to held-out public images within the "
                "documented floor of that of real ones).")
    parts = []
    for attack, g in failed.groupby("attack", sort=False):
        q = pd.to_numeric(g.get("prior_quality"), errors="coerce") if "prior_quality" in g else pd.Series(dtype=float)
        ratio = f"FID ratio up to {q.max():.1f} against held-out public images; 1 = as close as real ones" \
            if len(q) and q.notna().any() else "no FID ratio recorded"
        n = int((flags["attack"] == attack).sum())
        parts.append(f"{attack} failed its held-out check ({ratio}) in {len(g)} of {n} run(s)")
    return (f"The prior of {'; the prior of '.join(parts)}: its reconstructions say little about leakage."
            + (" The other priors passed." if len(failed["attack"].unique()) < flags["attack"].nunique() else ""))
