"""Random Erasing as a model inversion defense (MIDRE), and its one-property ablations.

Tran, Nguyen et al., "Random Erasing vs. Model Inversion: A Promising Defense or a False
Hope?", TMLR 2025 (arXiv 2409.01062); Random Erasing itself: Zhong et al., AAAI 2020.
Official MIDRE configuration: ``p=1.0``, ``scale=(0.1, 0.4)`` (also ``(0.1, 0.8)``),
``ratio=(1, 1)``, ``value=(0.485, 0.456, 0.406)``, applied in training only, after
the standard augmentation and ``Normalize(0.5, 0.5)`` — so the fill lives in normalised
space: 0.485 there is pixel value 0.74, a light grey, not the ImageNet mean.

Registered ablations, each changing ONE property of the MIDRE default and usable anywhere a
defense name is (CLI, presets, compositions):

- Partial Erasure (the model never sees a whole image): ``re-partial-p0.5`` erases half the
  images, with boxes twice as large (``scale=(0.2, 0.8)``), so the expected erased area per
  image seen stays MIDRE's 0.25 (see :func:`same_expected_area_scale`); ``re-partial-boxes``
  erases EVERY image with those larger boxes, so that against ``re-partial-p0.5`` only ``p``
  differs. Claim 5 counts only where both comparisons agree.
- Random Location: ``re-fixed-center``, ``re-fixed-corner`` (top-left), ``re-fixed-edge``
  (middle of the left edge): the box sits at one position, with MIDRE's area distribution.
  On centred images a corner box hides mostly background and a centre box mostly ink: every
  RE defense records, per epoch, the share of erased pixels that were foreground and the
  share of foreground erased (``erased_foreground_share``, ``foreground_erased_share``).
- Erased area: ``re-area0.2``, ``re-area0.4``, ``re-area0.6``, ``re-area0.8`` (upper bound of
  ``scale``; lower bound 0.1). ``re-area0.4`` is MIDRE's default under a sweep name.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import ReAnalysisError
from .base import Defense, register_defense
from .compose import create_defense

MIDRE_FILL = (0.485, 0.456, 0.406)
LOCATIONS = {"random": None, "center": (0.5, 0.5), "fixed": (0.5, 0.5), "corner": (0.0, 0.0),
             "edge": (0.5, 0.0)}  # (row, column) of the box's top-left, as a fraction of the free range


def parse_location(location) -> tuple[float, float] | None:
    """``"random"`` -> None; a named or ``(row, column)`` fixed position -> fractions in [0, 1]."""
    if isinstance(location, str):
        if location not in LOCATIONS:
            raise ReAnalysisError(f"RandomErasing location must be one of {', '.join(LOCATIONS)} or a (row, column) "
                                  f"pair of fractions in [0, 1], got {location!r}")
        return LOCATIONS[location]
    try:
        fy, fx = (float(f) for f in location)
    except (TypeError, ValueError):
        fy = fx = float("nan")
    if not (0 <= fy <= 1 and 0 <= fx <= 1):
        raise ReAnalysisError(f"RandomErasing location must be one of {', '.join(LOCATIONS)} or a (row, column) "
                              f"pair of fractions in [0, 1], got {location!r}")
    return fy, fx


def same_expected_area_scale(scale: Sequence[float], p: float) -> tuple[float, float]:
    """The ``scale`` that keeps the expected erased area per image seen when only a fraction
    ``p`` of images is erased.

    The erased fraction of an image is ``B * A`` with ``B ~ Bernoulli(p)`` (erased or not)
    and ``A ~ Uniform(lo, hi)`` (the box area), independent, so ``E[B A] = p (lo + hi) / 2``.
    Dividing both bounds by ``p`` gives ``p (lo + hi) / (2 p) = (lo + hi) / 2``: the same
    expectation, and the same shape of area distribution, stretched. (Realised areas are
    rounded to whole pixels, which moves both expectations by well under a percent of the
    image at 28 px; a test measures it.)

    Example:
        >>> same_expected_area_scale((0.1, 0.4), 0.5)
        (0.2, 0.8)
    """
    lo, hi = (float(v) for v in scale)
    if not 0 < p <= 1 or hi / p >= 1:
        raise ReAnalysisError(f"no scale keeps the expected erased area of {tuple(scale)} at p={p}: the largest box "
                              f"would cover {hi / p:.2f} of the image; choose p > {hi:.2f}")
    return round(lo / p, 10), round(hi / p, 10)


class RandomErasing:
    """Erase one rectangle per image, with **each image of a batch getting its own box**.

    Box sampling follows ``torchvision.transforms.v2.RandomErasing`` (area fraction
    uniform in ``scale``, log aspect ratio uniform in ``log(ratio)``, up to 10 attempts for
    a box that fits, position uniform), but vectorised over the batch: torchvision, called
    on a batch tensor, erases the same box in every image, which is not the augmentation
    the MIDRE paper trains with. Written by hand because no library samples per-image boxes
    on device.

    Args:
        scale: range of the erased area as a fraction of the image.
        ratio: range of the box aspect ratio (height / width); ``(1, 1)`` is square.
        value: fill, in the space the input lives in (normalised, for MIDRE): a number, one
            number per channel, or ``"random"`` (standard normal noise per pixel). The
            default is MIDRE's ``(0.485, 0.456, 0.406)``; on a one-channel image its mean,
            0.449, is used.
        p: probability that an image is erased (MIDRE: 1.0, the model never sees a whole
            image: the paper's "Partial Erasure" property; ``p < 1`` ablates it).
        location: ``"random"`` (uniform position per image, MIDRE) or one fixed position
            for every box (the paper's "Random Location" ablation): ``"center"`` (alias
            ``"fixed"``), ``"corner"`` (top-left), ``"edge"`` (middle of the left edge), or a
            pair ``(row, column)`` of fractions of the free range (``(0.5, 0.5)`` = centre).
            With ``scale=(a, a)`` and ``ratio=(1, 1)`` every image loses the same box.

    Example:
        >>> import torch
        >>> from re_analysis import RandomErasing
        >>> x = torch.zeros(8, 1, 28, 28)
        >>> out = RandomErasing(value=1.0)(x, generator=torch.Generator().manual_seed(0))
        >>> bool(((out == 1).flatten(1).float().mean(1) > 0.05).all())
        True
    """

    def __init__(self, scale: Sequence[float] = (0.1, 0.4), ratio: Sequence[float] = (1.0, 1.0),
                 value: float | Sequence[float] | str = MIDRE_FILL, p: float = 1.0,
                 location: str = "random"):
        scale = tuple(float(s) for s in scale)
        ratio = tuple(float(r) for r in ratio)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] < 1:
            raise ReAnalysisError(f"RandomErasing scale must be (lo, hi) with 0 < lo <= hi < 1, got {scale}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ReAnalysisError(f"RandomErasing ratio must be (lo, hi) with 0 < lo <= hi, got {ratio}")
        if not 0 <= float(p) <= 1:
            raise ReAnalysisError(f"RandomErasing p must be a probability in [0, 1], got {p}")
        self.anchor = parse_location(location)
        if isinstance(value, str):
            if value != "random":
                raise ReAnalysisError(f"RandomErasing value must be a number, a per-channel list or 'random', got {value!r}")
        else:
            value = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
            if not value or any(math.isnan(v) for v in value):
                raise ReAnalysisError(f"RandomErasing value must hold finite numbers, got {value}")
        self.scale, self.ratio, self.value, self.p = scale, ratio, value, float(p)
        self.location = location if isinstance(location, str) else [float(f) for f in location]

    def __repr__(self) -> str:
        return (f"RandomErasing(scale={self.scale}, ratio={self.ratio}, value={self.value}, "
                f"p={self.p}, location={self.location!r})")

    def sample_boxes(self, n: int, height: int, width: int, device=None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Boxes as an (n, 4) long tensor of ``(top, left, h, w)``; ``h == 0`` means not erased."""
        attempts = 10
        kw = dict(device=device, generator=generator)
        area = height * width
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, attempts, **kw))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, attempts, **kw))
        h = torch.sqrt(target * aspect).round().long()
        w = torch.sqrt(target / aspect).round().long()
        ok = (h < height) & (w < width) & (h > 0) & (w > 0)
        first = ok.float().argmax(dim=1, keepdim=True)
        h = h.gather(1, first).squeeze(1)
        w = w.gather(1, first).squeeze(1)
        erase = ok.any(dim=1) & (torch.rand(n, **kw) < self.p)
        if self.anchor is None:
            top = (torch.rand(n, **kw) * (height - h + 1)).floor().long()
            left = (torch.rand(n, **kw) * (width - w + 1)).floor().long()
        else:  # integer arithmetic: the centre is (height - h) // 2, as before
            fy, fx = self.anchor
            top = ((height - h) * int(round(fy * 2 ** 20))) // 2 ** 20
            left = ((width - w) * int(round(fx * 2 ** 20))) // 2 ** 20
        zero = torch.zeros_like(h)
        return torch.stack([torch.where(erase, top, zero), torch.where(erase, left, zero),
                            torch.where(erase, h, zero), torch.where(erase, w, zero)], dim=1)

    def masks(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Boolean (n, 1, H, W) masks of the boxes."""
        rows = torch.arange(height, device=boxes.device).view(1, height, 1)
        cols = torch.arange(width, device=boxes.device).view(1, 1, width)
        top, left, h, w = (boxes[:, k].view(-1, 1, 1) for k in range(4))
        inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
        return inside.unsqueeze(1)

    def fill(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        channels = x.shape[-3]
        if self.value == "random":
            return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        v = torch.tensor(self.value, device=x.device, dtype=x.dtype)
        if len(v) not in (1, channels):
            if channels == 1:
                v = v.mean().view(1)
            else:
                raise ReAnalysisError(f"RandomErasing value has {len(v)} entries but images have {channels} channels; "
                                      "pass one value or one per channel")
        return v.view(-1, 1, 1)

    def erase(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(erased batch, boolean (N, 1, H, W) mask of the erased pixels) for ``x`` of shape (N, C, H, W)."""
        if x.ndim != 4:
            raise ReAnalysisError(f"RandomErasing expects (N, C, H, W) or (C, H, W) tensors, got shape {tuple(x.shape)}")
        n, _, height, width = x.shape
        mask = self.masks(self.sample_boxes(n, height, width, device=x.device, generator=generator), height, width)
        return torch.where(mask, self.fill(x, generator), x), mask

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Erase ``x`` of shape (N, C, H, W) (or one image (C, H, W)); returns a new tensor."""
        single = x.ndim == 3
        out, _ = self.erase(x.unsqueeze(0) if single else x, generator)
        return out[0] if single else out


FOREGROUND_CONTRAST = 0.5  # in normalised [-1, 1] units: a quarter of the grey range


def foreground(x: torch.Tensor) -> torch.Tensor:
    """Boolean (N, 1, H, W): pixels that differ from their image's background (its median
    value, the background on digits and glyphs) by more than a quarter of the grey range."""
    grey = x.float().mean(1, keepdim=True)
    background = grey.flatten(1).median(1).values.view(-1, 1, 1, 1)
    return (grey - background).abs() > FOREGROUND_CONTRAST


MIDRE_DEVIATIONS = (
    ("boxes are drawn per image on the batch tensor (vectorised), with torchvision's sampling rules",
     "MIDRE draws them per image in the DataLoader; the distribution is the same and a test compares it "
     "with torchvision's"),
    ("one-channel images are filled with the mean of MIDRE's three fill values (0.449)",
     "MIDRE trains on colour images only"),
)


@register_defense("random-erasing", "MIDRE: per-image Random Erasing of training inputs (TMLR 2025)", role="re")
class RandomErasingDefense(Defense):
    """Train on Random-Erased inputs with plain cross-entropy (MIDRE, TMLR 2025).

    Parameters are those of :class:`RandomErasing`; defaults are the official MIDRE
    configuration (``p=1``, ``scale=(0.1, 0.4)``, square boxes, fill 0.485/0.456/0.406 in
    normalised space). Erasing comes after the standard augmentation and ``Normalize``.
    """

    paper = ("Tran, Nguyen et al., Random Erasing vs. Model Inversion: A Promising Defense or a False Hope?, "
             "TMLR 2025")
    code = "https://github.com/ngoc-nguyen-0/MIDRE_TMLR"
    deviations = MIDRE_DEVIATIONS

    def __init__(self, scale=(0.1, 0.4), ratio=(1.0, 1.0), value=MIDRE_FILL, p: float = 1.0,
                 location="random"):
        self.eraser = RandomErasing(scale=scale, ratio=ratio, value=value, p=p, location=location)
        e = self.eraser
        self.params = {"scale": list(e.scale), "ratio": list(e.ratio),
                       "value": e.value if isinstance(e.value, str) else list(e.value),
                       "p": e.p, "location": e.location}

    def transform_batch(self, x, y, generator=None):
        out, mask = self.eraser.erase(x, generator)
        with torch.no_grad():  # what the boxes hide: ink or background (Random Location's confound)
            fg = foreground(x)
            if getattr(self, "counts", None) is None:  # reset by epoch_stats
                self.counts = torch.zeros(3, dtype=torch.float64)
            self.counts += torch.stack([(mask & fg).sum(), mask.sum(), fg.sum()]).double().cpu()
        return out

    def epoch_stats(self):
        """Of the epoch's training images: ``erased_foreground_share``, the share of erased pixels
        that were foreground (ink on glyphs and digits), and ``foreground_erased_share``, the
        share of foreground pixels erased (see :func:`foreground`)."""
        counts = getattr(self, "counts", None)
        if counts is None:
            return {}
        both, erased, fg = counts.tolist()
        self.counts = None
        return {"erased_foreground_share": both / erased if erased else float("nan"),
                "foreground_erased_share": both / fg if fg else float("nan")}


class RandomErasingAblation(RandomErasingDefense):
    """MIDRE's Random Erasing with ONE property changed (``fixed``); the other parameters
    keep MIDRE's defaults and may be set, the fixed ones may not."""

    fixed: dict = {}

    def __init__(self, scale=None, ratio=None, value=None, p=None, location=None):
        given = {k: v for k, v in dict(scale=scale, ratio=ratio, value=value, p=p, location=location).items()
                 if v is not None}
        clash = sorted(set(given) & set(self.fixed))
        if clash:
            raise ReAnalysisError(f"{self.name} fixes {', '.join(clash)} (that is the ablation); use "
                                  f"random-erasing with {clash[0]}=... to choose another value")
        super().__init__(**{**given, **self.fixed})


def register_ablation(name: str, description: str, role: str = "variant", **fixed) -> type[RandomErasingAblation]:
    """Register a Random Erasing ablation ``name`` that fixes the parameters ``fixed`` and plays
    ``role`` in the claims (``partial``, ``partial_control``, ``location`` or ``variant``)."""
    cls = type(f"RandomErasing_{name.replace('-', '_').replace('.', '_')}", (RandomErasingAblation,),
               {"name": name, "fixed": dict(fixed), "__doc__": description,
                "paper": RandomErasingDefense.paper + " (ablation)", "code": RandomErasingDefense.code,
                "deviations": MIDRE_DEVIATIONS})
    return register_defense(name, description, role=role)(cls)


PARTIAL_P = 0.5
PARTIAL_SCALE = same_expected_area_scale((0.1, 0.4), PARTIAL_P)
register_ablation(f"re-partial-p{PARTIAL_P}",
                  f"RE ablation, Partial Erasure: p={PARTIAL_P} with boxes scaled to keep the expected erased area",
                  role="partial", p=PARTIAL_P, scale=PARTIAL_SCALE)
# The second Partial Erasure arm: re-partial-p0.5's box on EVERY image. Against p0.5 only p differs
# (the box distribution is the same); against RE, p and the box size differ together.
register_ablation("re-partial-boxes", f"RE ablation, Partial Erasure's control: every image erased with "
                  f"re-partial-p{PARTIAL_P}'s boxes (scale {PARTIAL_SCALE})", role="partial_control", scale=PARTIAL_SCALE)
for _where, _what in (("center", "centre"), ("corner", "top-left corner"), ("edge", "middle of the left edge")):
    register_ablation(f"re-fixed-{_where}", f"RE ablation, Random Location: every box at the {_what}",
                      role="location", location=_where)
for _hi in (0.2, 0.4, 0.6, 0.8):
    register_ablation(f"re-area{_hi}", f"RE ablation, erased area: scale (0.1, {_hi})", scale=(0.1, _hi))


def eraser_of(defense: str, params: dict | None = None) -> RandomErasing | None:
    """The :class:`RandomErasing` a target trained with (its defense name and parameters as
    recorded in its config), or None when it trained without Random Erasing.

    Example:
        >>> eraser_of("re-area0.8+nls", {"nls.alpha": -0.05}).scale
        (0.1, 0.8)
    """
    d = create_defense(defense, **(params or {}))
    for m in getattr(d, "members", [d]):
        if isinstance(m, RandomErasingDefense):
            return m.eraser
    return None
