"""How faithful is each method to its paper? A table generated from the code itself.

Every registered attack (and defense) class declares ``paper`` (citation), ``code`` (the
official repository) and ``deviations``: ``(what differs, why)`` pairs naming what still
differs from the official method (scale, resolution, prior architecture, ...). The book's
method chapter renders :func:`fidelity_table`, so the table cannot drift from what runs.

Example:
    >>> from re_analysis.attacks import ATTACKS
    >>> table = fidelity_table(ATTACKS)
    >>> list(table.columns)
    ['method', 'paper', 'code', 'deviation', 'reason']
    >>> "gmi" in set(table["method"])
    True
"""

from __future__ import annotations

import pandas as pd

from .errors import ReAnalysisError
from .registry import Registry

__all__ = ["fidelity_table", "missing_fidelity"]

COLUMNS = ["method", "paper", "code", "deviation", "reason"]


def missing_fidelity(registry: Registry) -> dict[str, list[str]]:
    """``{name: [missing attributes]}`` for entries that do not declare paper, code and deviations."""
    out = {}
    for name in registry.names():
        obj = registry.get(name)
        missing = [a for a in ("paper", "code") if not isinstance(getattr(obj, a, None), str) or not getattr(obj, a)]
        devs = getattr(obj, "deviations", None)
        if not isinstance(devs, tuple) or not all(isinstance(d, tuple) and len(d) == 2 and all(d) for d in devs):
            missing.append("deviations")
        if missing:
            out[name] = missing
    return out


def fidelity_table(registry: Registry) -> pd.DataFrame:
    """One row per declared deviation of each registered method (or one row saying "none").

    Args:
        registry: :data:`re_analysis.attacks.ATTACKS` or the defenses' registry.

    Returns:
        DataFrame with columns method, paper, code, deviation, reason.
    """
    missing = missing_fidelity(registry)
    if missing:
        names = "; ".join(f"{k}: {', '.join(v)}" for k, v in missing.items())
        raise ReAnalysisError(f"{registry.kind}s without a fidelity declaration ({names}); give each class "
                              "`paper`, `code` and `deviations` (a tuple of (what differs, why) pairs)")
    rows = []
    for name in registry.names():
        cls = registry.get(name)
        devs = cls.deviations or (("none", ""),)
        rows += [{"method": name, "paper": cls.paper, "code": cls.code, "deviation": what, "reason": why}
                 for what, why in devs]
    return pd.DataFrame(rows, columns=COLUMNS)
