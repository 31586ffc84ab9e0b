"""One small registry (timm style) serving datasets, models, defenses and attacks.

Example:
    >>> from re_analysis.registry import Registry
    >>> colours = Registry("colour")
    >>> @colours.register("red", "a warm colour", hex="#f00")
    ... def red():
    ...     return "red"
    >>> colours.names(), colours.meta("red")["hex"], colours.get("red")()
    (['red'], '#f00', 'red')
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .errors import ReAnalysisError


class Registry:
    """``name -> factory`` with a one-line description and free metadata per entry.

    Args:
        kind: what the registry holds ("dataset", "model", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._descriptions: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, description: str = "", **meta: Any):
        """Decorator registering a factory (function or class) under ``name``."""

        def deco(obj):
            self._items[name] = obj
            self._descriptions[name] = description or (inspect.getdoc(obj) or "").split("\n")[0]
            self._meta[name] = dict(meta)
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def info(self) -> dict[str, str]:
        """``{name: one-line description}``, sorted by name."""
        return {k: self._descriptions[k] for k in self.names()}

    def check(self, name: str) -> None:
        if name not in self._items:
            raise ReAnalysisError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")

    def get(self, name: str) -> Callable[..., Any]:
        """The registered factory; an unknown name raises one clear error listing the known ones."""
        self.check(name)
        return self._items[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.check(name)
        return self._meta[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
