"""Model inversion attacks, registered by name, and their GAN priors.

Example:
    >>> from re_analysis.attacks import list_attacks
    >>> "gmi" in list_attacks()
    True
"""

from .base import (ATTACKS, Attack, AttackResult, LabelOnlyTarget, LatentOptimizationAttack, attack_info,
                   create_attack, list_attacks, register_attack)
from . import gmi as _gmi  # noqa: F401
from . import kedmi as _kedmi  # noqa: F401
from . import lomma as _lomma  # noqa: F401
from . import plgmi as _plgmi  # noqa: F401
from . import brepmi as _brepmi  # noqa: F401
from . import ppa as _ppa  # noqa: F401
from .priors import PAPER_BUDGETS, Prior, PriorConfig, heldout_public, load_prior, paper_steps, train_prior
from .quality import prior_quality, record_prior_quality
from .runner import AttackConfig, load_attack_run, run_attack

__all__ = ["ATTACKS", "Attack", "AttackResult", "AttackConfig", "LabelOnlyTarget", "LatentOptimizationAttack",
           "PAPER_BUDGETS", "Prior", "PriorConfig", "attack_info", "create_attack", "heldout_public", "list_attacks",
           "load_attack_run", "load_prior", "paper_steps", "prior_quality", "record_prior_quality",
           "register_attack", "run_attack", "train_prior"]
