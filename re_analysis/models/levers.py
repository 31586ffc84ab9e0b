"""Speed levers: ways to compute the same thing in less time, each of which can be switched off.

A lever never changes what is computed (budgets, losses, selection, data): it changes how.
The levers that keep every number bitwise the same are on by default. Those that change
float rounding (``bitwise=False``) are off: the latent search amplifies a difference of one
rounding into other reconstructions within tens of iterations (one ulp on the initial
latents moves LOMMA-GMI's losses on glyphs by 4% in 50 iterations), so none of them can meet
issue 34's test of a lever (first update equal to 1e-5, first 50 iterations' losses within
1e-3); they stay available, declared, for whoever accepts other reconstructions of the same
method. ``benchmarks/unit_cost.py`` measures each against the path without it, side by side.

Levers are read when the work starts (``lever(name)``); set them for a block with
:func:`levers`, or for a process with the environment variable ``RE_ANALYSIS_LEVERS``
(``all``, ``none``, or ``name=0,name=1,...`` over the defaults), which workers inherit.
None of them enters a run's configuration or hash: a cached run stays valid either way.

Example:
    >>> from re_analysis.models.levers import lever, levers
    >>> lever("fold_batchnorm"), lever("reuse_evaluation")  # rounding off, bitwise on
    (False, True)
    >>> with levers(fold_batchnorm=True):
    ...     lever("fold_batchnorm")
    True
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from ..errors import ReAnalysisError

__all__ = ["Lever", "LEVERS", "lever", "levers", "lever_states", "retain_freed_memory"]


@dataclass(frozen=True)
class Lever:
    """A lever: its name, whether it is on by default, whether it keeps every number bitwise
    the same (else it changes float rounding) and what it does."""

    name: str
    default: bool
    bitwise: bool
    what: str


LEVERS: dict[str, Lever] = {lv.name: lv for lv in (
    Lever("retain_freed_memory", True, True,
          "glibc keeps freed memory in the process (mallopt: no mmap or trim threshold) instead of handing it "
          "back to the kernel after every step and faulting it in again, zeroed, page by page, in the next "
          "(thousands of page faults per attack step); the process keeps its peak memory until it ends"),
    Lever("teacher_once", True, True,
          "LOMMA's distillation: the target's logits on the public images computed once, not once per student"),
    Lever("reuse_evaluation", True, True,
          "evaluation: the chance samples and their verdicts, the pixel judge's memory and reject radius, and "
          "the judges' ceilings computed once per process for the same prior, target, classes, seed and "
          "judges: a unit's second attack on a target reuses its first's"),
    Lever("channels_last_inference", False, False,
          "judges, chance samples and feature extraction on frozen channels_last copies (logits within 1e-6; "
          "a verdict can flip only at a near-tie)"),
    Lever("fold_batchnorm", False, False,
          "frozen models (the attack's target, students and generator; with channels_last_inference the judges "
          "and the chance samples' models too): each eval-mode BatchNorm folded into the convolution or "
          "linear layer before it"),
    Lever("bf16_search", False, False,
          "REDUCED PRECISION: the latent search's forward passes under bfloat16 autocast (oneDNN's bf16 "
          "convolutions, about 2x on CPUs with AVX512-BF16 or AMX); not float noise: other reconstructions"),
    Lever("bf16_distillation", False, False,
          "REDUCED PRECISION: LOMMA's students distilled under bfloat16 autocast; other students"),
)}

ENV = "RE_ANALYSIS_LEVERS"
_overrides: dict[str, bool] = {}


def _from_env() -> dict[str, bool]:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return {}
    if spec in ("all", "none"):
        return {k: spec == "all" for k in LEVERS}
    out = {}
    for item in spec.split(","):
        name, _, value = item.strip().partition("=")
        if name not in LEVERS or value not in ("0", "1"):
            raise ReAnalysisError(f"{ENV}={spec!r}: give 'all', 'none' or name=0/1 pairs; the levers are "
                                  f"{', '.join(LEVERS)}")
        out[name] = value == "1"
    return out


def lever(name: str) -> bool:
    """Whether lever ``name`` is on (a :func:`levers` block, else ``RE_ANALYSIS_LEVERS``, else its default)."""
    if name not in LEVERS:
        raise ReAnalysisError(f"unknown lever {name!r}; the levers are {', '.join(LEVERS)}")
    if name in _overrides:
        return _overrides[name]
    return _from_env().get(name, LEVERS[name].default)


def lever_states() -> dict[str, bool]:
    """Every lever's current state."""
    return {name: lever(name) for name in LEVERS}


@contextlib.contextmanager
def levers(all: bool | None = None, **values: bool):  # noqa: A002 (the natural word here)
    """Set levers inside a ``with`` block: ``levers(all=False)`` is the path without any,
    ``levers(fold_batchnorm=False)`` one switched off."""
    unknown = set(values) - set(LEVERS)
    if unknown:
        raise ReAnalysisError(f"unknown lever(s) {', '.join(sorted(unknown))}; the levers are {', '.join(LEVERS)}")
    saved = dict(_overrides)
    if all is not None:
        _overrides.update({k: bool(all) for k in LEVERS})
    _overrides.update({k: bool(v) for k, v in values.items()})
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


_retained = False


def retain_freed_memory() -> bool:
    """Under the ``retain_freed_memory`` lever, tell glibc's allocator to keep freed memory in
    the process: large tensors are then reused from the heap instead of being unmapped when
    freed and faulted back in (zeroed by the kernel, page by page) at the next step. Done once
    per process; a no-op elsewhere than Linux with glibc. Returns whether it is in effect."""
    global _retained
    if _retained or not lever("retain_freed_memory"):
        return _retained
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1 and libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1
    except (OSError, AttributeError):
        return False
    _retained = bool(ok)
    return _retained

