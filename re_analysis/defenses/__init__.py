"""Defenses against model inversion, one module each, registered by name.

A defense overrides only the hooks it changes (see :class:`Defense`): the batch transform
applied to training inputs, the loss, the model wrapper, and the optimiser/engine set-up.

Example:
    >>> from re_analysis.defenses import create_defense, list_defenses
    >>> "random-erasing" in list_defenses()
    True
    >>> d = create_defense("random-erasing", scale=(0.1, 0.8))
"""

from .base import DEFENSES, Defense, create_defense, defense_info, list_defenses, register_defense
from .random_erasing import MIDRE_FILL, RandomErasing, RandomErasingDefense
from . import base as _base  # noqa: F401  (registers "none")
from . import bido, dpsgd, mid, nls, tldmi  # noqa: F401  (register the baselines)

__all__ = ["DEFENSES", "Defense", "create_defense", "list_defenses", "register_defense", "defense_info",
           "RandomErasing", "RandomErasingDefense", "MIDRE_FILL"]
