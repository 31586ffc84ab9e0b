"""Defenses against model inversion, one module each, registered by name.

A defense overrides only the hooks it changes (see :class:`Defense`): the batch sampling,
the batch transform applied to training inputs, the loss, the model wrapper, and the
optimiser/engine set-up. Every defense trains on top of its dataset's standard augmentation
(:mod:`re_analysis.augment`) except ``none-noaug``. Each declares ``paper``, ``code`` and
``deviations`` (what still differs from the official code, and why).

Example:
    >>> from re_analysis.defenses import create_defense, defense_class, list_defenses
    >>> {"random-erasing", "re-area0.8", "re-fixed-corner", "re-partial-p0.5", "trap-mid"} <= set(list_defenses())
    True
    >>> d = create_defense("random-erasing", scale=(0.1, 0.8))
    >>> defense_class("bido").code
    'https://github.com/AlanPeng0897/Defend_MI'
"""

from .base import DEFENSES, Defense, defense_class, defense_info, list_defenses, register_defense
from .compose import create_defense
from .random_erasing import MIDRE_FILL, RandomErasing, RandomErasingDefense, eraser_of, same_expected_area_scale
from . import base as _base  # noqa: F401  (registers "none", "none-noaug")
from . import bido, dpsgd, mid, nls, tldmi, trapmid  # noqa: F401  (register the baselines)

BASELINES = ("mid", "bido", "bido-coco", "nls", "tl-dmi", "dp-sgd", "trap-mid")

__all__ = ["DEFENSES", "Defense", "create_defense", "list_defenses", "register_defense", "defense_info",
           "defense_class", "RandomErasing", "RandomErasingDefense", "MIDRE_FILL", "eraser_of",
           "same_expected_area_scale", "BASELINES"]
