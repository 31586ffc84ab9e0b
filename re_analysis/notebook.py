"""Helpers for the papermill notebooks: strict parameters and the cached study behind them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ReAnalysisError

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
    """Results of the study these parameters describe, running whatever is not cached yet."""
    from .study import load_preset, restrict, run_study

    p = load_preset(preset, dataset=dataset, device=device)
    if defenses is not None or attacks is not None or seeds is not None:
        p = restrict(p, defenses, attacks, seeds)
    results = run_study(p, run_dir, progress=progress)
    if results.empty:
        raise ReAnalysisError("the study produced no rows; check the defenses and attacks parameters")
    return results


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
    import base64
    import io

    from IPython.display import HTML, display
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    source = ""
    if preset is not None:
        source = f" Source: study preset <code>{preset}</code>"
        source += f", run <code>{Path(run_dir).name}</code>." if run_dir else "."
    img = base64.b64encode(buf.getvalue()).decode("ascii")
    display(HTML(f'<figure style="margin:1em 0"><img src="data:image/png;base64,{img}" style="max-width:100%"/>'
                 f'<figcaption style="font-size:90%"><em>{caption}</em>{source}</figcaption></figure>'))
