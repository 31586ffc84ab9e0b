"""``glyphs``: a many-identity, fine-grained MI benchmark rendered offline from Debian fonts.

Each **identity is a font** (its style is shared across content, as a face is shared across
pose and expression); its images are the 62 characters A-Z, a-z, 0-9, each with a small
seeded jitter (shift, scale, slight rotation), 32 x 32 grayscale, white ink on black (like
MNIST). The paper's claim (MIDRE, Tran, Nguyen et al., TMLR 2025) concerns 1,000 CelebA or
530 FaceScrub people; faces cannot be fetched here, and 5 digit classes put every attack at
the ceiling, so fonts stand in: hundreds of identities that differ in fine detail.

How the identities are chosen (every step is recorded in the manifest):

1. **Fonts**: every ``.ttf``/``.otf`` file of the Debian packages in :data:`FONT_PACKAGES`
   (``fonts-aenigma``: 465 faces by Brian Kent), or of a folder passed as ``root``.
2. **Latin glyphs** (:func:`has_latin_glyphs`): a font is kept only if each of the 62
   characters draws ink, differs from the font's ``.notdef`` drawing (what FreeType draws
   for U+FFFF, a code point no font maps), and no single drawing stands for more than
   :data:`MAX_SHARED_DRAWING` characters (caps-only fonts share a drawing between the two
   cases, pixel fonts may share O/Q/o/q/0; a box drawn for a whole missing case is shared
   by 26).
3. **One face per family** (:func:`font_family`): aenigma names a design's variants by
   appending words to the design's name (*Bocuma*, *Bocuma Angle*, *Bocuma Angle Dent*),
   so the family is the first word of the font's family name, case-folded; the kept face
   has the fewest words in its name (ties: the first file name).
4. **Near-duplicate designs removed** (:func:`drop_near_duplicates`): in family order, a
   face is dropped when the relative pixel difference between its 62 un-jittered
   renderings and those of an already kept face is below :data:`DUPLICATE_THRESHOLD`
   (0.35: on fonts-aenigma the pairs below it, such as Jupiter Crash / Your Complex, are
   one design; the next pair, Zenith / Relapse at 0.38, visibly differs).

Private = a seeded choice (``identity_seed``) of ``num_private`` identities; public = all the
others (disjoint identities, for the attacker's prior). Each private identity is split
train/test by character (``seed``: a seeded 10% of its characters, all their jittered copies
together). A mirrored
glyph is not the same glyph: horizontal flips are not label-preserving.

The rendering is built once per font set and parameters, cached under
``$RE_ANALYSIS_DATA/glyphs`` (default ``~/.cache/re-analysis/glyphs``), and described by a
manifest (font files with their sha256, package versions, Pillow and FreeType versions,
what was dropped and why) whose ``hash`` keys the cache; :func:`re_analysis.data.manifest_hash`
returns it, so that it can enter a run's config hash.

Example:
    >>> from re_analysis.data import load_dataset
    >>> s = load_dataset("glyphs", seed=0)                 # doctest: +SKIP
    >>> s.num_classes, s.image_size, len(s.private_train)  # doctest: +SKIP
    (100, 32, 5600)
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import string
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..artifacts import atomic_save_tensors, config_hash, load_tensors
from ..errors import ReAnalysisError
from .registry import MISplits, register_dataset
from .tensors import TensorImageDataset

CHARACTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits
FONT_PACKAGES = {"fonts-aenigma": "/usr/share/fonts/truetype/aenigma"}
FONT_SUFFIXES = (".ttf", ".otf")
BUILDER_VERSION = 1  # bump when the rendering or selection rules change: it enters the manifest hash
MAX_SHARED_DRAWING = 5
DUPLICATE_THRESHOLD = 0.35  # relative pixel difference; see drop_near_duplicates
SUPERSAMPLE = 2  # glyphs are drawn at 2x and box-filtered down: smooth edges at 32 px
FILL = 0.8  # a font's largest glyph side fills this fraction of the frame before jitter
JITTER = {"max_shift": 2.0, "scale": (0.9, 1.1), "max_rotation": 5.0}  # shift in px at 32 px; degrees


def install_hint() -> str:
    return f"apt-get install {' '.join(FONT_PACKAGES)}"


@dataclass(frozen=True)
class FontFile:
    """One font file: where it is, its name in the manifest, its package and checksum."""

    path: Path
    name: str  # "fonts-aenigma/bocuma.ttf", or the path relative to a user's root
    package: str | None
    sha256: str


@dataclass
class GlyphSet:
    """The rendered identities: ``images`` (fonts, images per font, S, S) uint8, and for
    each image the index of its character in :data:`CHARACTERS`."""

    images: torch.Tensor
    characters: torch.Tensor
    font_names: list[str]
    manifest: dict


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_fonts(root: str | os.PathLike | None = None) -> list[FontFile]:
    """The font files of the Debian packages in :data:`FONT_PACKAGES`, or of ``root``.

    Raises one :class:`ReAnalysisError` naming the packages to install when none is found.
    """
    sources = [(None, Path(root))] if root is not None else [(p, Path(d)) for p, d in FONT_PACKAGES.items()]
    fonts = []
    for package, folder in sources:
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file()):
            rel = path.relative_to(folder).as_posix()
            fonts.append(FontFile(path, f"{package}/{rel}" if package else rel, package, sha256_of(path)))
    if not fonts:
        where = root if root is not None else ", ".join(FONT_PACKAGES.values())
        raise ReAnalysisError(f"no TrueType fonts for the glyphs dataset in {where}; install Debian's font packages "
                              f"(`{install_hint()}`) or pass --root to a folder of .ttf files")
    return fonts


def package_versions(packages) -> dict[str, str | None]:
    """Installed Debian versions of ``packages`` (None where dpkg does not know them)."""
    out = {}
    for pkg in sorted(set(packages)):
        try:
            proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True,
                                  timeout=10)
            out[pkg] = (proc.stdout.strip() or None) if proc.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            out[pkg] = None
    return out


def renderer_versions() -> dict[str, str]:
    """Pillow's and FreeType's versions: another rasteriser may draw other pixels, so they
    enter the build hash along with the fonts."""
    import PIL
    from PIL import features

    return {"pillow": PIL.__version__, "freetype2": features.version("freetype2") or "unknown"}


# ----------------------------------------------------------------------------- drawing


def draw(font, char: str) -> np.ndarray:
    """The ink of ``char`` in ``font`` (a Pillow FreeType font), cropped to its bounding box;
    an empty (0, 0) array when the character draws nothing."""
    from PIL import Image, ImageDraw

    for side in (3 * font.size, 8 * font.size):  # a few decorative glyphs overflow 3 em
        canvas = Image.new("L", (side, side))
        ImageDraw.Draw(canvas).text((side // 2, side // 2), char, font=font, fill=255, anchor="mm")
        box = canvas.getbbox()
        if box is None:
            return np.zeros((0, 0), np.uint8)
        if box[0] > 0 and box[1] > 0 and box[2] < side and box[3] < side:
            break
    return np.asarray(canvas.crop(box)).copy()


def draw_font(path: str, frame: int) -> dict:
    """The 62 drawings of the font at ``path``, cropped, sized so that its largest glyph side
    is about ``FILL * frame`` px, plus its ``.notdef`` drawing (for :func:`has_latin_glyphs`)."""
    from PIL import ImageFont

    target = FILL * frame
    size = max(8, round(target))
    for _ in range(3):  # the em is a poor guess of glyph size for decorative fonts: re-draw at a corrected size
        font = ImageFont.truetype(path, size)
        glyphs = [draw(font, c) for c in CHARACTERS]
        extent = max(max(g.shape) for g in glyphs)
        if extent == 0 or 0.75 * target <= extent <= 1.5 * target:
            break
        size = max(8, round(size * target / extent))
    return {"glyphs": glyphs, "notdef": draw(font, "\uffff"), "extent": extent}


def has_latin_glyphs(glyphs: list[np.ndarray], notdef: np.ndarray) -> tuple[bool, str]:
    """Whether all 62 characters have a real drawing; returns (ok, reason if not).

    A character is missing when it draws no ink or draws the font's ``.notdef`` glyph; a
    drawing may stand for at most :data:`MAX_SHARED_DRAWING` characters.

    Example:
        >>> box = np.ones((5, 4), np.uint8)
        >>> has_latin_glyphs([box] * 62, np.zeros((0, 0), np.uint8))
        (False, 'one drawing stands for 62 characters (A, B, C, ...)')
    """
    empty = [c for c, g in zip(CHARACTERS, glyphs) if g.size == 0]
    if empty:
        return False, f"no ink for {len(empty)} characters ({', '.join(empty[:3])}, ...)"
    missing = [c for c, g in zip(CHARACTERS, glyphs) if g.shape == notdef.shape and np.array_equal(g, notdef)]
    if missing:
        return False, f".notdef drawn for {len(missing)} characters ({', '.join(missing[:3])}, ...)"
    groups: dict[bytes, list[str]] = {}
    for c, g in zip(CHARACTERS, glyphs):
        groups.setdefault(g.tobytes() + bytes(str(g.shape), "ascii"), []).append(c)
    shared = max(groups.values(), key=len)
    if len(shared) > MAX_SHARED_DRAWING:
        return False, f"one drawing stands for {len(shared)} characters ({', '.join(shared[:3])}, ...)"
    return True, ""


def font_name(path: str | os.PathLike) -> str:
    """The family name a font file declares (its name table), e.g. ``"Bocuma Angle Dent BRK"``."""
    from PIL import ImageFont

    try:
        family = ImageFont.truetype(str(path), 8).getname()[0]
    except OSError as exc:
        raise ReAnalysisError(f"{path} is not a readable font ({exc}); remove it from the font folder") from None
    return family or Path(path).stem


def font_family(name: str) -> str:
    """The design family of a font name: its first word, case-folded.

    Example:
        >>> font_family("Bocuma Angle Dent BRK"), font_family("bocuma BRK")
        ('bocuma', 'bocuma')
    """
    words = name.split()
    return words[0].casefold() if words else ""


# ----------------------------------------------------------------------------- rendering


def render_glyphs(glyphs: list[np.ndarray], extent: int, image_size: int, copies: int,
                  rng: np.random.Generator | None) -> np.ndarray:
    """``copies`` renderings of each glyph, (62 * copies, S, S) uint8, character-major.

    Each glyph is centred by its bounding box; the font's largest glyph side becomes
    ``FILL * S`` px; ``rng`` draws the jitter of :data:`JITTER` (None: no jitter). Drawn at
    :data:`SUPERSAMPLE` x the size with Pillow's affine transform, then box-filtered down.
    """
    from PIL import Image

    frame = image_size * SUPERSAMPLE
    n = len(glyphs) * copies
    base = FILL * frame / extent
    if rng is None:
        scale, angle, shift = np.full(n, base), np.zeros(n), np.zeros((n, 2))
    else:
        scale = base * rng.uniform(*JITTER["scale"], n)
        angle = np.deg2rad(rng.uniform(-JITTER["max_rotation"], JITTER["max_rotation"], n))
        shift = rng.uniform(-JITTER["max_shift"], JITTER["max_shift"], (n, 2)) * frame / 32
    # Pillow's AFFINE takes the inverse map, output pixel -> input pixel: rotate back, unscale,
    # and move the output centre (plus shift) onto the centre of the glyph's bounding box.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    out = np.empty((n, image_size, image_size), np.uint8)
    for i in range(n):
        g = glyphs[i // copies]
        cx, cy = frame / 2 + shift[i, 0], frame / 2 + shift[i, 1]
        a, b, d, e = cos[i], sin[i], -sin[i], cos[i]
        data = (a, b, g.shape[1] / 2 - a * cx - b * cy, d, e, g.shape[0] / 2 - d * cx - e * cy)
        hi = Image.fromarray(g).transform((frame, frame), Image.Transform.AFFINE, data,
                                          resample=Image.Resampling.BILINEAR)
        out[i] = np.asarray(hi.reduce(SUPERSAMPLE))
    return out


def font_rng(render_seed: int, sha: str) -> np.random.Generator:
    """A font's jitter stream: from the seed and its checksum, not its position, so adding
    a font elsewhere leaves its images unchanged."""
    return np.random.default_rng([render_seed, int(sha[:16], 16)])


def render_family(members: list[tuple[str, str]], image_size: int, copies: int, render_seed: int) -> dict:
    """Draw a family's faces in order until one has all Latin glyphs; render it plain and jittered.

    ``members`` are (path, sha256) pairs. Runs in worker processes: Pillow and numpy only.
    """
    failed = []
    for k, (path, sha) in enumerate(members):
        d = draw_font(path, image_size * SUPERSAMPLE)
        ok, why = has_latin_glyphs(d["glyphs"], d["notdef"])
        if not ok:
            failed.append((k, why))
            continue
        return {"chosen": k, "failed": failed,
                "plain": render_glyphs(d["glyphs"], d["extent"], image_size, 1, None),
                "images": render_glyphs(d["glyphs"], d["extent"], image_size, copies, font_rng(render_seed, sha))}
    return {"chosen": None, "failed": failed}


def drop_near_duplicates(plain: dict[str, np.ndarray], order: list[str],
                         threshold: float = DUPLICATE_THRESHOLD) -> tuple[list[str], list[dict]]:
    """Keep faces in ``order``, dropping one whose plain renderings lie within ``threshold`` of an
    already kept face; returns (kept, dropped).

    The distance is the relative pixel difference ``||a - b|| / sqrt((||a||^2 + ||b||^2) / 2)``
    over the 62 renderings: 0 for identical ink, sqrt(2) for disjoint ink. Relative, because
    in absolute terms two faint hairline fonts are near each other whatever their design.

    Example:
        >>> a, b = np.full((62, 4, 4), 100, np.uint8), np.zeros((62, 4, 4), np.uint8)
        >>> b[:, :2] = 255
        >>> drop_near_duplicates({"a": a, "a2": a + 2, "b": b}, ["a", "a2", "b"])
        (['a', 'b'], [{'font': 'a2', 'like': 'a', 'distance': 0.0198}])
    """
    if not order:
        return [], []
    x = torch.from_numpy(np.stack([plain[n].reshape(-1) for n in order])).double() / 255
    gram = x @ x.T  # float64: exact enough that no pair near the threshold flips between machines
    energy = gram.diagonal()
    pair = energy[:, None] + energy[None]
    dist = ((pair - 2 * gram).clamp_min(0) / (pair / 2)).sqrt().numpy()
    kept, dropped = [], []
    for i, name in enumerate(order):
        j = min(kept, key=lambda k: dist[i, k], default=None)
        if j is not None and dist[i, j] < threshold:
            dropped.append({"font": name, "like": order[j], "distance": round(float(dist[i, j]), 4)})
        else:
            kept.append(i)
    return [order[i] for i in kept], dropped


def families_of(fonts: list[FontFile]) -> tuple[dict[str, list[int]], list[str]]:
    """Font indices per design family (each ordered by preference: fewest name words, then file
    name) and every font's declared name."""
    names = [font_name(f.path) for f in fonts]
    families: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        families.setdefault(font_family(name), []).append(i)
    for members in families.values():
        members.sort(key=lambda i: (len(names[i].split()), fonts[i].name))
    return dict(sorted(families.items())), names


def render_identities(fonts: list[FontFile], image_size: int, copies: int, render_seed: int,
                      workers: int) -> tuple[list[int], np.ndarray, dict, list[str]]:
    """Choose and render the identities: (kept font indices, their images (K, 62 * copies, S, S),
    what was dropped and why, every font's declared name)."""
    families, names = families_of(fonts)
    jobs = [([(str(fonts[i].path), fonts[i].sha256) for i in members], image_size, copies, render_seed)
            for members in families.values()]
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(render_family, *zip(*jobs), chunksize=4))
    else:
        results = [render_family(*job) for job in jobs]
    no_latin, same_family, chosen = [], [], {}
    for (fam, members), res in zip(families.items(), results):
        no_latin += [{"font": fonts[members[k]].name, "reason": why} for k, why in res["failed"]]
        if res["chosen"] is None:
            continue
        keep = members[res["chosen"]]
        chosen[fonts[keep].name] = (keep, res)
        same_family += [{"font": fonts[i].name, "family": fam, "kept": fonts[keep].name}
                        for i in members[res["chosen"] + 1:]]
    kept, near = drop_near_duplicates({n: r["plain"] for n, (_, r) in chosen.items()}, list(chosen))
    images = np.stack([chosen[n][1]["images"] for n in kept]) if kept else np.zeros((0, 62 * copies, image_size, image_size), np.uint8)
    return [chosen[n][0] for n in kept], images, {"no_latin_glyphs": no_latin, "same_family": same_family,
                                                  "near_duplicate": near}, names


def build_key(fonts: list[FontFile], params: dict) -> str:
    """The content hash of a build: its parameters and every font file's name and checksum."""
    return config_hash({"builder": BUILDER_VERSION, "params": params,
                        "fonts": [[f.name, f.sha256] for f in fonts]}, length=16)


def cache_root() -> Path:
    base = os.environ.get("RE_ANALYSIS_DATA")
    return Path(base) / "glyphs" if base else Path.home() / ".cache" / "re-analysis" / "glyphs"


def build_glyphs(root: str | os.PathLike | None = None, image_size: int = 32, copies: int = 1,
                 render_seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 workers: int | None = None) -> GlyphSet:
    """Render every kept identity (or read the cached rendering of the same fonts and parameters).

    Args:
        root: folder of font files (default: the Debian packages of :data:`FONT_PACKAGES`).
        image_size: side length of the images.
        copies: jittered copies of each character.
        render_seed: seeds the jitter (the study's seed chooses identities, not the pixels).
        cache_dir: where the rendering is cached (default :func:`cache_root`).
        workers: processes that draw the fonts (default: the CPU count, at most 8).
    """
    fonts = find_fonts(root)
    params = {"image_size": image_size, "copies": copies, "render_seed": render_seed,
              "supersample": SUPERSAMPLE, "fill": FILL, "jitter": JITTER,
              "max_shared_drawing": MAX_SHARED_DRAWING, "duplicate_threshold": DUPLICATE_THRESHOLD,
              "renderer": renderer_versions()}
    key = build_key(fonts, params)
    return cached_build(key, tuple(fonts), json.dumps(params, sort_keys=True),
                        str(Path(cache_dir) if cache_dir else cache_root()), workers or min(8, os.cpu_count() or 1))


@functools.lru_cache(maxsize=4)
def cached_build(key: str, fonts: tuple[FontFile, ...], params_json: str, cache_dir: str, workers: int) -> GlyphSet:
    """Read the build ``key`` from the cache or render and cache it (once per process)."""
    path = Path(cache_dir) / f"glyphs-{key}.safetensors"
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            manifest = json.loads(fh.metadata()["manifest"])
        t = load_tensors(path)
        return GlyphSet(t["images"], t["characters"], [f["font"] for f in manifest["identities"]], manifest)
    params = json.loads(params_json)
    fonts = list(fonts)
    kept, images, dropped, names = render_identities(fonts, params["image_size"], params["copies"],
                                                     params["render_seed"], workers)
    images = torch.from_numpy(images)
    characters = torch.arange(len(CHARACTERS)).repeat_interleave(params["copies"])
    manifest = {
        "dataset": "glyphs", "hash": key, "builder_version": BUILDER_VERSION, "params": params,
        "packages": package_versions(f.package for f in fonts if f.package),
        "fonts": [{"font": f.name, "sha256": f.sha256} for f in fonts],
        "identities": [{"font": fonts[i].name, "name": names[i], "family": font_family(names[i])} for i in kept],
        "dropped": dropped,
    }
    atomic_save_tensors(path, {"images": images, "characters": characters}, {"manifest": json.dumps(manifest)})
    return GlyphSet(images, characters, [f["font"] for f in manifest["identities"]], manifest)


# ----------------------------------------------------------------------------- splits


def split_by_character(num_identities: int, characters: torch.Tensor, test_fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per identity, a seeded ``test_fraction`` of its characters (with all their copies) for test.

    Returns (train, test) boolean masks of shape (identities, images per identity).
    """
    rng = np.random.default_rng([seed, 1])
    chars = characters.numpy()
    n_test = max(1, round(test_fraction * len(CHARACTERS)))
    test = np.zeros((num_identities, len(chars)), bool)
    for k in range(num_identities):
        test[k] = np.isin(chars, rng.permutation(len(CHARACTERS))[:n_test])
    return ~test, test


def flat(images: torch.Tensor, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (K, N, S, S) where ``mask`` -> (M, 1, S, S) with identity labels."""
    idx = torch.from_numpy(np.argwhere(mask))
    return images[idx[:, 0], idx[:, 1]][:, None], idx[:, 0]


@register_dataset("glyphs", "font identities from Debian fonts-aenigma: 62 jittered characters per font, 32 px; "
                  "private = a seeded choice of num_private fonts, public = the others", image_size=32, hflip=False,
                  identities=True)
def load_glyphs(root=None, seed: int = 0, image_size: int | None = None, num_private: int = 100,
                copies: int = 1, test_fraction: float = 0.1, identity_seed: int = 0,
                render_seed: int = 0) -> MISplits:
    """MI splits of font identities (see the module docstring for how identities are chosen).

    Args:
        root: folder of font files (default: the Debian packages of :data:`FONT_PACKAGES`).
        seed: chooses each private identity's held-out characters.
        image_size: side length (default 32), rendered natively.
        num_private: private identities; the public split holds all the others.
        copies: jittered copies of each character (more images per identity).
        test_fraction: fraction of each private identity's characters held out for test.
        identity_seed: chooses the private identities. Not the study seed: the attacker's
            prior is trained once per public split with its own seed and shared by every
            target, so the public fonts must not change with the target's seed (they would
            then include other seeds' private fonts).
        render_seed: seeds the jitter of the rendering.
    """
    size = 32 if image_size is None else image_size
    for name, value, low in (("num_private", num_private, 2), ("copies", copies, 1), ("identity_seed", identity_seed, 0),
                             ("render_seed", render_seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ReAnalysisError(f"glyphs: {name} must be an integer >= {low}, got {value!r}")
    if not 0 < test_fraction < 1:
        raise ReAnalysisError(f"glyphs: test_fraction must lie in (0, 1), got {test_fraction!r}")
    glyphs = build_glyphs(root, size, copies, render_seed)
    total = len(glyphs.font_names)
    if num_private >= total:
        raise ReAnalysisError(f"glyphs: only {total} font identities were found, so num_private={num_private} leaves "
                              f"no public fonts; pass num_private below {total} or install more fonts ({install_hint()})")
    order = np.random.default_rng([identity_seed, 0]).permutation(total)
    private, public = np.sort(order[:num_private]), np.sort(order[num_private:])
    train_mask, test_mask = split_by_character(num_private, glyphs.characters, test_fraction, seed)
    priv_images = glyphs.images[torch.from_numpy(private)]
    x_train, y_train = flat(priv_images, train_mask)
    x_test, y_test = flat(priv_images, test_mask)
    x_pub, y_pub = flat(glyphs.images[torch.from_numpy(public)], np.ones((len(public), glyphs.images.shape[1]), bool))
    names = [i["name"] for i in glyphs.manifest["identities"]]
    return MISplits(
        name="glyphs",
        private_train=TensorImageDataset(x_train, y_train), private_test=TensorImageDataset(x_test, y_test),
        public=TensorImageDataset(x_pub, y_pub),
        num_classes=num_private, num_public_classes=len(public), channels=1, image_size=size,
        private_class_names=[names[i] for i in private], public_class_names=[names[i] for i in public],
        hflip_preserves_labels=False, manifest=copy.deepcopy(glyphs.manifest),
    )
