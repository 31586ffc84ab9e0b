"""Composition of defenses, e.g. ``random-erasing+nls`` (Random Erasing is data-side, so it
composes with any model- or loss-side defense, as the MIDRE paper suggests)."""

from __future__ import annotations

from typing import Any

from ..errors import ReAnalysisError
from .base import DEFENSES, Defense


def create_defense(name: str, **params: Any) -> Defense:
    """Instantiate a registered defense; parameters are validated at once.

    ``"random-erasing+nls"`` composes defenses (see :class:`ComposedDefense`).

    Example:
        >>> create_defense("nls", alpha=-0.1).params["alpha"]
        -0.1
    """
    if "+" in name:
        return ComposedDefense(name, **params)
    factory = DEFENSES.get(name)
    try:
        return factory(**params)
    except TypeError as exc:
        raise ReAnalysisError(f"bad parameter for defense {name!r}: {exc}; see `re-analysis defenses`") from None


def changes_loss(d: Defense) -> bool:
    return type(d).loss is not Defense.loss


def changes_batches(d: Defense) -> bool:
    return type(d).batches is not Defense.batches


class ComposedDefense(Defense):
    """Apply several defenses' hooks in order: batch transforms chained, model wrappers
    chained, engines configured in turn (a privacy engine last, so that no later member
    replaces its optimiser); at most one member may override the loss, and at most one the
    batch sampling. The standard augmentation stays on unless a member switches it off
    (``none-noaug``).

    Parameters go to the member whose name prefixes them (``nls.alpha=-0.1``) or, unprefixed,
    to the one member that accepts that name.

    Example:
        >>> from re_analysis.defenses import create_defense
        >>> d = create_defense("random-erasing+nls", alpha=-0.1)
        >>> [m.name for m in d.members], d.params["nls.alpha"]
        (['random-erasing', 'nls'], -0.1)
    """

    def __init__(self, name: str, **params: Any):
        names = name.split("+")
        if len(set(names)) != len(names):
            raise ReAnalysisError(f"defense {name!r} names a defense twice")
        routed: dict[str, dict[str, Any]] = {n: {} for n in names}
        for key, value in params.items():
            if "." in key and key.split(".", 1)[0].replace("_", "-") in routed:
                owner, sub = key.split(".", 1)
                routed[owner.replace("_", "-")][sub] = value
                continue
            owners = [n for n in names if key in defaults_of(n)]
            if len(owners) != 1:
                raise ReAnalysisError(f"parameter {key!r} of {name!r} matches {len(owners)} member defenses; "
                                      f"prefix it with the member's name, e.g. {names[-1]}.{key}=...")
            routed[owners[0]][key] = value
        self.members = [create_defense(n, **routed[n]) for n in names]
        self.name = name
        loss_owners = [m.name for m in self.members if changes_loss(m)]
        if len(loss_owners) > 1:
            raise ReAnalysisError(f"defenses {', '.join(loss_owners)} both change the loss and cannot be composed")
        samplers = [m.name for m in self.members if changes_batches(m)]
        if len(samplers) > 1:
            raise ReAnalysisError(f"defenses {', '.join(samplers)} both draw their own batches and cannot be composed")
        private = [m for m in self.members if getattr(m, "per_sample_privacy", False)]
        mixing = [m.name for m in self.members if getattr(m, "loss_mixes_samples", False)]
        if private and mixing:
            raise ReAnalysisError(f"{private[0].name} clips per-sample gradients, but {', '.join(mixing)} computes a "
                                  "loss over the whole batch, so the privacy guarantee would not hold; drop one of them")
        self.standard_augmentation = all(m.standard_augmentation for m in self.members)
        self.train_recipe = {k: v for m in self.members for k, v in m.train_recipe.items()}
        self.params = {f"{m.name}.{k}": v for m in self.members for k, v in m.params.items()}

    def check(self, splits):
        for m in self.members:
            m.check(splits)
        self.params = {f"{m.name}.{k}": v for m in self.members for k, v in m.params.items()}  # as resolved

    def batches(self, n, batch_size, generator):
        for m in self.members:
            if changes_batches(m):
                return m.batches(n, batch_size, generator)
        return super().batches(n, batch_size, generator)

    def transform_batch(self, x, y, generator=None):
        for m in self.members:
            x = m.transform_batch(x, y, generator)
        return x

    def wrap_model(self, model):
        for m in self.members:
            model = m.wrap_model(model)
        return model

    def loss(self, model, x, y, epoch):
        for m in self.members:
            if changes_loss(m):
                return m.loss(model, x, y, epoch)
        return super().loss(model, x, y, epoch)

    def configure(self, model, optimizer, data):
        ordered = sorted(self.members, key=lambda m: getattr(m, "per_sample_privacy", False))  # stable
        for m in ordered:
            model, optimizer = m.configure(model, optimizer, data)
        return model, optimizer

    def state(self):
        modules, optimizers = {}, {}
        for m in self.members:
            mods, opts = m.state()
            modules.update({f"{m.name}.{k}": v for k, v in mods.items()})
            optimizers.update({f"{m.name}.{k}": v for k, v in opts.items()})
        return modules, optimizers

    def epoch_stats(self):
        out = {}
        for m in self.members:
            out.update(m.epoch_stats())
        return out

    def report(self, model=None, x_test=None, y_test=None):
        out = {}
        for m in self.members:
            out.update(m.report(model, x_test, y_test))
        return out

    def artifacts(self):
        out = {}
        for m in self.members:
            out.update(m.artifacts())
        return out

    def wrapper_info(self):
        infos = [m.wrapper_info() for m in self.members if m.wrapper_info()]
        if not infos:
            return None
        if len(infos) == 1:
            return infos[0]
        return {"defense": "+".join(i["defense"] for i in infos),
                "params": {f"{i['defense']}.{k}": v for i in infos for k, v in i.get("params", {}).items()}}


def defaults_of(name: str) -> set[str]:
    import inspect

    return set(inspect.signature(DEFENSES.get(name)).parameters)
