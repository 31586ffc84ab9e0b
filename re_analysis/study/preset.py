"""Study presets: what a preset may say, how one inherits from another (``base:``), and the
checks that run when one loads (every attack and defense is built with its parameters, so
a misspelt parameter fails at load, not an hour into a study).

A loaded preset is a frozen :class:`Preset`: every setting an attribute with its default
filled in, checked once; derive another with :func:`restrict` or ``load_preset(...,
seeds=[0, 1])``.

Example:
    >>> from re_analysis.study import load_preset
    >>> p = load_preset("smoke")
    >>> p.dataset, p.seeds, p.pairs
    ('mnist5k', (0,), (('none', 'gmi'), ('random-erasing', 'gmi')))
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ReAnalysisError
from ..presets import preset_names as list_presets

class FrozenDict(dict):
    """A mapping of a frozen :class:`Preset`: reads like a dict (JSON, ``**`` unpacking, pickling
    to worker processes), refuses every change."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a Preset is frozen, its mappings too: derive another with restrict() or "
                        "load_preset(name, **overrides), or change a copy from to_dict()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return FrozenDict, (dict(self),)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return FrozenDict({k: copy.deepcopy(v, memo) for k, v in self.items()})


def freeze(value):
    """``value`` with every mapping a :class:`FrozenDict` and every list a tuple, all the way down."""
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value):
    """The plain dicts and lists of a frozen value (what YAML and JSON write)."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Preset:
    """A validated study preset (:func:`load_preset`): what to train, attack and judge.

    Frozen: a study cannot change its own preset half-way; derive another with
    :func:`restrict` (fewer defenses, attacks or seeds) or ``load_preset(name, **overrides)``.
    Frozen all the way down: its mappings refuse changes and its lists are tuples.
    ``robust_model`` is the robust judge's training options, ``None`` for no robust judge
    (``robust_model: false`` in YAML); ``pairs`` are the (defense label, attack) units of the grid.

    What decides the claims is named here, before the data: ``primary_attack`` and
    ``primary_judge`` (the others are shown, never decide), the non-inferiority ``margins``
    (over :data:`re_analysis.verdicts.MARGINS`), the ``design_components`` (seed, unit and
    within variance of an attack comparison measured in a pilot, with their ``source``) that
    give every attack row the design's power, and ``rules``: the version of the verdict rules
    a pre-registered design is decided by (a release with other rules refuses it).
    """

    dataset: str
    seeds: tuple[int, ...]
    defenses: dict[str, dict[str, Any]]
    attacks: dict[str, dict[str, Any]]
    grid: list[dict[str, Any]]
    pairs: tuple[tuple[str, str], ...]
    primary_attack: str
    primary_judge: str = "top1"
    name: str = "custom"
    description: str = ""
    root: str | None = None
    image_size: int | None = None
    dataset_params: dict[str, Any] = field(default_factory=dict)
    per_class: int = 5
    classes: int | list[int] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    eval_model: dict[str, Any] = field(default_factory=dict)
    robust_model: dict[str, Any] | None = field(default_factory=dict)
    prior: dict[str, Any] = field(default_factory=dict)
    claims: dict[str, Any] = field(default_factory=dict)
    margins: dict[str, float] = field(default_factory=dict)
    design_components: dict[str, Any] = field(default_factory=dict)
    rules: int | None = None
    gap_figures: list[list[str]] = field(default_factory=list)
    device: str = "auto"
    workers: int = 1
    embed: bool = True
    extends: str | None = None

    @property
    def robust(self) -> bool:
        """Whether the study trains a robust judge."""
        return self.robust_model is not None

    def to_dict(self) -> dict[str, Any]:
        """The preset as a YAML/JSON mapping of plain dicts and lists (what ``study.json``
        records; ``pairs`` left out, ``robust_model: false`` for no robust judge): ``load_preset``
        of it gives it back."""
        out = {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "pairs"}
        out["robust_model"] = False if self.robust_model is None else out["robust_model"]
        if self.extends is None:  # added later: a study recorded before it reads the same
            del out["extends"]
        return out


# What a preset's YAML may say: the fields of Preset, its `base`, less what validation derives
PRESET_KEYS = {f.name for f in dataclasses.fields(Preset)} - {"pairs"}


def load_preset(name_or_path: str | Path, **overrides: Any) -> Preset:
    """A preset by name (``smoke``, ``quick``, ...) or YAML path, validated, with overrides applied.

    A preset may start from another with ``base: NAME_OR_PATH`` (a relative path is read
    from the preset's folder): its keys are merged over the base's, mappings key by key
    (``train: {epochs: 40}`` keeps the base's ``arch``), lists and scalars replaced.
    """
    preset = read_preset(name_or_path)
    for k, v in overrides.items():
        if v is not None:
            preset[k] = v
    return validate_preset(preset)


def read_preset(name_or_path: str | Path, _seen: tuple = ()) -> dict[str, Any]:
    """The raw mapping of a preset, with its ``base`` chain merged in (see :func:`load_preset`)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, where = path.read_text(), path.resolve()
    elif str(name_or_path) in list_presets():
        text, where = resources.files("re_analysis.presets").joinpath(f"{name_or_path}.yaml").read_text(), None
    else:
        raise ReAnalysisError(f"unknown preset {str(name_or_path)!r}; choose one of {', '.join(list_presets())} "
                              "or pass the path of a YAML file")
    preset = yaml.safe_load(text)
    if not isinstance(preset, dict):
        raise ReAnalysisError(f"preset {str(name_or_path)!r} is not a YAML mapping of settings")
    base = preset.pop("base", None)
    if base is None:
        return preset
    key = str(where or name_or_path)
    if key in _seen:
        raise ReAnalysisError(f"preset {str(name_or_path)!r} is its own base (through {' -> '.join(_seen)}); "
                              "break the cycle of `base:` entries")
    if where is not None and not Path(str(base)).is_absolute() and str(base).endswith((".yaml", ".yml")):
        base = where.parent / str(base)
    return deep_merge(read_preset(base, _seen + (key,)), preset)


def deep_merge(base: dict, child: dict) -> dict:
    """``child`` over ``base``: mappings merged key by key, anything else replaced.

    Example:
        >>> deep_merge({"train": {"arch": "cnn28s", "epochs": 20}, "seeds": [0, 1]}, {"train": {"epochs": 40}, "seeds": [5]})
        {'train': {'arch': 'cnn28s', 'epochs': 40}, 'seeds': [5]}
    """
    out = copy.deepcopy(base)
    for k, v in child.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


DEFENSE_SPEC_KEYS = {"defense", "params", "train", "seeds"}
# What a defense entry's `train` may change: the recipe, not what the study fixes for every target
FIXED_TRAIN_KEYS = {"dataset", "root", "image_size", "dataset_params", "defense", "defense_params", "seed", "device",
                    "role", "init_from"}
# `robust_model: {from_judge: true}`: the robust judge fine-tunes the open-set judge adversarially
# (its `epochs` are then fine-tuning epochs) instead of training from random weights
ROBUST_KEYS = {"from_judge"}


def training_overrides(where: str, train: Any, extra: set[str] = frozenset()) -> dict[str, Any]:
    """Training options of a preset (its ``train``, ``eval_model``, ``robust_model``, or a
    defense entry's own ``train`` over the preset's), checked by name against ``TrainConfig``.

    A method whose official recipe differs from the shared one declares it in its entry, e.g.
    Trap-MID's constant learning rate: ``trap-mid: {defense: trap-mid, train: {milestones: [1.0]}}``.
    """
    import dataclasses

    from ..config import TrainConfig

    if train is None:
        return {}
    if not isinstance(train, dict):
        raise ReAnalysisError(f"{where} must be a mapping of training options, got {train!r}")
    allowed = ({f.name for f in dataclasses.fields(TrainConfig)} - FIXED_TRAIN_KEYS) | set(extra)
    unknown = set(train) - allowed
    if unknown:
        raise ReAnalysisError(f"{where}: unknown training option(s) {', '.join(sorted(unknown))}; "
                              f"choose from {', '.join(sorted(allowed))}")
    return dict(train)


def validate_preset(p: dict[str, Any] | Preset) -> Preset:
    """A preset mapping (a YAML's, with its ``base`` merged) checked and completed into a
    :class:`Preset`: every key known, every defense and attack built with its parameters (a
    misspelt parameter fails here, not an hour into a study), the grid expanded into pairs."""
    from ..attacks import create_attack, list_attacks
    from ..data import list_datasets
    from ..defenses import create_defense, list_defenses

    p = p.to_dict() if isinstance(p, Preset) else {k: v for k, v in copy.deepcopy(p).items() if k != "pairs"}
    unknown = set(p) - PRESET_KEYS
    if unknown:
        raise ReAnalysisError(f"unknown preset key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(PRESET_KEYS))}")
    if p.get("dataset") not in list_datasets():
        raise ReAnalysisError(f"preset dataset {p.get('dataset')!r} is not one of {', '.join(list_datasets())}")
    seeds = p.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ReAnalysisError(f"preset seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    defenses = p.get("defenses") or {"none": {"defense": "none"}}
    for label, spec in defenses.items():
        spec = spec or {}
        unknown = set(spec) - DEFENSE_SPEC_KEYS
        if unknown:
            raise ReAnalysisError(f"preset defense {label!r} has unknown key(s) {', '.join(sorted(unknown))}; "
                                  f"a defense entry takes {', '.join(sorted(DEFENSE_SPEC_KEYS))}")
        for name in str(spec.get("defense", label)).split("+"):
            if name not in list_defenses():
                raise ReAnalysisError(f"preset defense {label!r} uses unknown defense {name!r}; "
                                      f"choose from {', '.join(list_defenses())}")
        defenses[label] = {"defense": spec.get("defense", label), "params": dict(spec.get("params") or {}),
                           "train": training_overrides(f"preset defense {label!r}: train", spec.get("train")),
                           "seeds": defense_seeds(label, spec.get("seeds"), seeds)}
        if defenses[label]["params"]:  # a misspelt parameter fails here, not when its target trains
            create_defense(defenses[label]["defense"], **defenses[label]["params"])
    attacks = p.get("attacks") or {"gmi": {}}
    for name in attacks:
        if name not in list_attacks():
            raise ReAnalysisError(f"preset attack {name!r} is not one of {', '.join(list_attacks())}")
        attacks[name] = dict(attacks[name] or {})
        per_class = attacks[name].get("per_class")
        if per_class is not None and not (isinstance(per_class, int) and not isinstance(per_class, bool)
                                          and per_class >= 1):
            raise ReAnalysisError(f"preset attack {name!r}: per_class must be a positive integer (reconstructions "
                                  f"per identity for this attack, over the preset's per_class), got {per_class!r}")
        # a misspelt parameter fails here, not an hour into the study
        create_attack(name, **{k: v for k, v in attacks[name].items() if k != "per_class"})
    grid = p.get("grid") or [{"defenses": "all", "attacks": "all"}]
    pairs = []
    for block in grid:
        ds = list(defenses) if block.get("defenses", "all") == "all" else list(block["defenses"])
        ats = list(attacks) if block.get("attacks", "all") == "all" else list(block["attacks"])
        for d in ds:
            if d not in defenses:
                raise ReAnalysisError(f"grid names defense {d!r}, which the preset's defenses do not define")
            for a in ats:
                if a not in attacks:
                    raise ReAnalysisError(f"grid names attack {a!r}, which the preset's attacks do not define")
                if (d, a) not in pairs:
                    pairs.append((d, a))
    if "none" not in defenses:
        raise ReAnalysisError("a study needs the 'none' defense as its baseline; add `none: {}` to defenses")
    check_claim_controls(p.get("name", "custom"), defenses, pairs, p.get("claims") or {})
    p.update({"seeds": seeds, "defenses": defenses, "attacks": attacks, "grid": grid, "pairs": pairs})
    p.setdefault("per_class", 5)
    p["train"] = training_overrides("preset train", p.get("train"))
    p["eval_model"] = training_overrides("preset eval_model", p.get("eval_model"))
    if p.get("robust_model", {}) is not False:
        p["robust_model"] = training_overrides("preset robust_model (false: no robust judge)", p.get("robust_model"),
                                               extra=ROBUST_KEYS)
    p.setdefault("prior", {})
    p.setdefault("classes", None)
    p.setdefault("claims", {})
    p.setdefault("primary_attack", next(iter(attacks)))
    if p["primary_attack"] not in attacks:
        raise ReAnalysisError(f"preset primary_attack {p['primary_attack']!r} is not one of its attacks "
                              f"({', '.join(attacks)}); it is the attack the verdict summary reads")
    check_decision_rules(p)
    classes = p["classes"]
    if classes is not None and not ((isinstance(classes, int) and not isinstance(classes, bool) and classes >= 2)
                                    or (isinstance(classes, list) and classes and all(isinstance(c, int) for c in classes))):
        raise ReAnalysisError(f"preset classes must be a number of private classes to attack (>= 2, a seeded choice "
                              f"per seed) or a list of class indices, got {classes!r}")
    p.setdefault("gap_figures", [])
    p.setdefault("device", "auto")
    p.setdefault("workers", 1)
    if not (isinstance(p["workers"], int) and not isinstance(p["workers"], bool) and p["workers"] >= 1):
        raise ReAnalysisError(f"preset workers must be a positive integer (processes that run independent steps "
                              f"at once), got {p['workers']!r}")
    p.setdefault("embed", True)
    p.setdefault("name", "custom")
    if p["robust_model"] is False:
        p["robust_model"] = None
    p["seeds"] = tuple(p["seeds"])
    p["pairs"] = tuple(tuple(x) for x in p["pairs"])
    preset = Preset(**{k: freeze(v) for k, v in p.items()})  # frozen all the way down
    if preset.extends is not None:
        check_extension(load_preset(preset.extends), preset)
    return preset


# What an extension of a registered design may differ in besides its added arms: how and where
# it runs, its prose and its name (``design_hash`` leaves the first three out too)
EXTENSION_FREE = ("workers", "device", "description", "name", "defenses", "grid", "extends")


def check_extension(base: Preset, ext: Preset) -> None:
    """``ext`` (``extends: BASE``) may only ADD arms to the registered design ``base``: the same
    seeds, budgets, judges, claims and rules, every arm of ``base`` defined and attacked as there
    (a second stage of a pre-registered study); ``claims:`` may give the roles ``base`` leaves
    unset (``partial``, ``location``, ...) to the added arms. Anything else is one error naming
    what changed.

    Example:
        >>> check_extension(load_preset("decisive"), load_preset("decisive", name="decisive-again"))
    """
    b, e = base.to_dict(), ext.to_dict()
    changed = [k for k in sorted(set(b) | set(e)) if k not in EXTENSION_FREE + ("claims",) and b.get(k) != e.get(k)]
    # claims: the registered roles stay; a role the base leaves unset may be given to added arms only
    new_arms = set(ext.defenses) - set(base.defenses)
    for role in sorted(set(b["claims"]) | set(e["claims"])):
        if role in b["claims"]:
            if e["claims"].get(role) != b["claims"][role]:
                changed.append(f"claims.{role}")
        else:
            value = e["claims"][role]
            labels = list(value.values()) if isinstance(value, dict) else [value] if isinstance(value, str) else value
            if not set(labels) <= new_arms:
                changed.append(f"claims.{role} (it names arms of {base.name!r})")
    for label, spec in base.defenses.items():
        if thaw(ext.defenses.get(label)) != thaw(spec):
            changed.append(f"defenses.{label}")
        elif sorted(a for d, a in ext.pairs if d == label) != sorted(a for d, a in base.pairs if d == label):
            changed.append(f"the attacks of {label}")
    if changed:
        raise ReAnalysisError(f"preset {ext.name!r} extends {base.name!r} but changes {', '.join(changed)}; an "
                              "extension may only add arms (defenses and grid rows for them): register another "
                              "design instead, or drop `extends`")


def check_claim_controls(name: str, defenses: dict, pairs: list, claims: dict) -> None:
    """A preset that runs a Partial Erasure arm (p < 1) runs its control too (the same boxes on
    every image): without it claim 5 compares arms where p and the boxes change together."""
    from ..verdicts import roles_for

    run = [d for d in defenses if any(x == d for x, _ in pairs)]
    roles = roles_for(run, {d: defenses[d]["defense"] for d in run}, claims)
    if roles.partial and not roles.partial_control:
        raise ReAnalysisError(
            f"preset {name!r} runs the Partial Erasure arm {', '.join(roles.partial)} without its control: add "
            "`re-partial-boxes: {defense: re-partial-boxes}` (the same boxes on every image) to its defenses and its "
            "grid beside it, so that claim 5 compares arms that differ in p alone")


def check_decision_rules(p: dict[str, Any]) -> None:
    """The preset's primary judge, margins, design components and rules' version, checked (and
    defaults filled in) in place."""
    from ..metrics.judges import JUDGE_TABLE
    from ..verdicts import RULES_VERSION, margins_of

    p.setdefault("primary_judge", "top1")
    judges = [j.name for j in JUDGE_TABLE]
    if p["primary_judge"] not in judges:
        raise ReAnalysisError(f"preset primary_judge {p['primary_judge']!r} is not a judge; choose one of "
                              f"{', '.join(judges)}")
    if p["primary_judge"] == "robust" and p.get("robust_model", {}) is False:
        raise ReAnalysisError("preset primary_judge 'robust' needs the robust judge; drop `robust_model: false`")
    p["margins"] = dict(p.get("margins") or {})
    margins_of(p["margins"])  # unknown names and values out of range fail here
    design = dict(p.get("design_components") or {})
    if design:
        missing = {"seed", "unit"} - set(design)
        bad = [k for k in ("seed", "unit", "within") if k in design
               and not (isinstance(design[k], (int, float)) and design[k] >= 0)]
        if missing or bad:
            raise ReAnalysisError("preset design_components needs non-negative `seed` and `unit` (and optionally "
                                  "`within`) variances of an attack comparison from a pilot run, with their `source`; "
                                  f"got {design!r}")
    p["design_components"] = design
    rules = p.get("rules")
    if rules is not None and rules != RULES_VERSION:
        raise ReAnalysisError(f"preset {p.get('name', 'custom')!r} is registered under verdict rules {rules}; this "
                              f"release implements rules {RULES_VERSION}: decide it with the release that implements "
                              f"rules {rules}, or register a new design")
    p["rules"] = rules


def defense_seeds(label: str, given, seeds: list[int]) -> list[int]:
    """The seeds a defense label runs on: ``given`` (a subset of the preset's ``seeds``, so
    that depth goes where the power is needed, e.g. more seeds for claim 1's two arms) or
    every seed. ``none`` runs on every seed: every comparison is paired with it."""
    if given is None:
        return list(seeds)
    if label == "none" and set(given) != set(seeds):
        raise ReAnalysisError("the 'none' defense runs on every seed of the preset (every comparison pairs with it); "
                              "drop its `seeds` entry")
    if not isinstance(given, list) or not given or not set(given) <= set(seeds):
        raise ReAnalysisError(f"preset defense {label!r}: seeds must be a non-empty list drawn from the preset's "
                              f"seeds {seeds}, got {given!r}")
    return [s for s in seeds if s in given]


def runs_of(preset: Preset, label: str, seed: int) -> bool:
    """Whether the study trains (and attacks) defense ``label`` on ``seed``."""
    return seed in preset.defenses[label].get("seeds", preset.seeds)


def restrict(preset: Preset, defenses=None, attacks=None, seeds=None, primary_attack: str | None = None) -> Preset:
    """The preset limited to some defense labels / attacks / seeds (a notebook's parameters).

    Pairs of the preset's grid that survive the filter are kept; a requested defense or
    attack the preset does not pair at all is run against every kept attack / defense.
    ``none`` always stays: it is the baseline. Restricting the primary attack away is an
    error unless ``primary_attack`` names the new one explicitly.
    """
    full = validate_preset(preset)
    p = full.to_dict()
    if seeds is not None:
        p["seeds"] = list(seeds)
        for spec in p["defenses"].values():  # a label keeps its own seeds among those asked for
            spec["seeds"] = [s for s in spec["seeds"] if s in p["seeds"]] or list(p["seeds"])
        p["defenses"]["none"]["seeds"] = list(p["seeds"])
    keep_d = list(dict.fromkeys(["none", *defenses])) if defenses is not None else list(p["defenses"])
    keep_a = list(attacks) if attacks is not None else list(p["attacks"])
    for d in keep_d:
        p["defenses"].setdefault(d, {"defense": d})
    for a in keep_a:
        p["attacks"].setdefault(a, {})
    pairs = [(d, a) for d, a in full.pairs if d in keep_d and a in keep_a]
    for d in keep_d:
        for a in keep_a:
            if (not any(x == d for x, _ in pairs) or not any(y == a for _, y in pairs)) and (d, a) not in pairs:
                pairs.append((d, a))
    p["defenses"] = {k: v for k, v in p["defenses"].items() if k in keep_d}
    p["attacks"] = {k: v for k, v in p["attacks"].items() if k in keep_a}
    if primary_attack is not None:
        p["primary_attack"] = primary_attack
    if p.get("primary_attack") not in p["attacks"]:  # the attack that decides is named before the data
        raise ReAnalysisError(f"the preset's primary attack {p['primary_attack']!r} is restricted away (attacks "
                              f"{', '.join(p['attacks'])}); keep it, or name another with primary_attack=... and "
                              "say so: the verdicts then answer a question the preset did not register")
    p["grid"] = [{"defenses": [d], "attacks": [a]} for d, a in pairs]
    return validate_preset(p)


