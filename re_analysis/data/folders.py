"""Face and object datasets from a user's local copy: ``celeba``, ``facescrub``,
``stanford-dogs`` and any class-per-folder tree (``imagefolder``).

Private/public convention of the MI literature (GMI, KEDMI, PLG-MI): private = the
classes with the most images (CelebA: the 1,000 most frequent identities), public = the
remaining classes, so the two never share a class. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..errors import ReAnalysisError
from .registry import MISplits, register_dataset, stratified_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
IGNORED_FILES = ("Thumbs.db", "desktop.ini")  # what file browsers leave in folders (and hidden .names)


class FolderImageDataset(Dataset):
    """Images read lazily from files, resized to a square ``image_size``, in [0, 1], with
    ``channels`` 3 (RGB) or 1 (grayscale)."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], image_size: int,
                 center_crop: int | None = None, channels: int = 3):
        self.paths = [Path(p) for p in paths]
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.image_size = image_size
        self.center_crop = center_crop
        self.channels = channels
        steps = [v2.ToImage()]
        if center_crop:
            steps.append(v2.CenterCrop(center_crop))
        steps += [v2.Resize((image_size, image_size), antialias=True), v2.ToDtype(torch.float32, scale=True)]
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im:
            x = self.transform(im.convert("RGB" if self.channels == 3 else "L"))
        return x, int(self.labels[i])

    def subset(self, idx) -> "FolderImageDataset":
        idx = np.asarray(idx, dtype=np.int64)
        return FolderImageDataset([self.paths[i] for i in idx], self.labels.numpy()[idx],
                                  self.image_size, self.center_crop, self.channels)


def scan_class_folders(root: Path, hint: str, every_class: bool = False) -> dict[str, list[Path]]:
    """``{class name: image paths}`` of a class-per-folder tree, classes sorted by name.
    ``every_class``: a class folder without images is an error (a user's own tree), not skipped."""
    if not root.is_dir():
        raise ReAnalysisError(f"data folder {root} does not exist; {hint}")
    classes, strangers = {}, []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if every_class:
            strangers += sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() not in IMAGE_EXTENSIONS
                                and not f.name.startswith(".") and f.name not in IGNORED_FILES)
        if files:
            classes[d.name] = files
        elif every_class:
            raise ReAnalysisError(f"class folder {d} holds no image ({', '.join(IMAGE_EXTENSIONS)}); add its images "
                                  "or remove the folder")
    if strangers:
        raise ReAnalysisError(f"{len(strangers)} file(s) in the class folders of {root} are not images "
                              f"({', '.join(IMAGE_EXTENSIONS)}): {_first(strangers)}; move them out (every file "
                              "of a class folder is one of its images)")
    if len(classes) < 2:
        raise ReAnalysisError(f"found {len(classes)} class folders with images under {root}; {hint}")
    return classes


def _shown(p: Path) -> str:
    """``p`` relative to the current folder where it lies below it (as a user typed it)."""
    p = Path(p)
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _first(paths: Sequence[Path], n: int = 3) -> str:
    """The first ``n`` of ``paths``, and how many more."""
    return ", ".join(_shown(p) for p in paths[:n]) + (f" and {len(paths) - n} more" if len(paths) > n else "")


def check_images(trees: dict[str, Sequence[str | Path]], channels: int, mixed_sizes: bool = False,
                 progress: bool = False) -> dict[str, dict]:
    """Decode every image of ``trees`` (name -> image paths) once, before any work: one
    :class:`ReAnalysisError` naming the first offending files for images that do not decode,
    for images of different sizes within one tree (unless ``mixed_sizes``: each is then resized)
    and, with ``channels=1``, for colour images (their colour would be thrown away).

    Returns per tree ``{"n": images, "sizes": {"28x28": count, ...}, "modes": {"RGB": count}}``.

    Example:
        >>> check_images({"private": ["p/a/0.png"]}, channels=3)  # doctest: +SKIP
        {'private': {'n': 1, 'sizes': {'28x28': 1}, 'modes': {'L': 1}}}
    """
    from collections import Counter

    from tqdm.auto import tqdm

    out, broken, colour = {}, [], []
    total = sum(len(v) for v in trees.values())
    bar = tqdm(total=total, desc="checking images", disable=not progress, leave=False)
    for name, paths in trees.items():
        sizes: dict[tuple[int, int], list[Path]] = {}
        modes: Counter = Counter()
        for p in map(Path, paths):
            try:
                with Image.open(p) as im:
                    im.load()
                    size, mode = im.size, im.mode
                    if channels == 1 and mode not in ("1", "L", "LA", "I", "I;16", "F"):
                        rgb = np.asarray(im.convert("RGB"))
                        if (rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any():
                            colour.append(p)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a damaged file
                why = str(exc).splitlines()[0][:80] if str(exc) else ""
                broken.append((p, f"{type(exc).__name__}: {why}" if why else type(exc).__name__))
                bar.update()
                continue
            sizes.setdefault(size, []).append(p)
            modes[mode] += 1
            bar.update()
        out[name] = {"n": len(paths), "sizes": {f"{w}x{h}": len(v) for (w, h), v in
                                                 sorted(sizes.items(), key=lambda kv: -len(kv[1]))},
                     "modes": dict(modes), "_sizes": sizes}
    bar.close()
    if broken:
        shown = ", ".join(f"{_shown(p)} ({why})" for p, why in broken[:3])
        raise ReAnalysisError(f"{len(broken)} image file(s) do not decode: {shown}"
                              f"{f' and {len(broken) - 3} more' if len(broken) > 3 else ''}; replace or remove them")
    if colour:
        raise ReAnalysisError(f"--channels 1 but {len(colour)} image(s) are in colour ({_first(colour)}): their colour "
                              "would be thrown away; give --channels 3 if your model reads colour")
    for name, info in out.items():
        sizes = info.pop("_sizes")
        if len(sizes) > 1 and not mixed_sizes:
            (common, _), *others = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
            odd = [p for _, v in others for p in v]
            kinds = ", ".join(f"{len(v)} are {w}x{h}" for (w, h), v in others[:3])
            raise ReAnalysisError(f"the {name} images differ in size: {kinds} ({_first(odd)}), the other "
                                  f"{len(sizes[common])} are {common[0]}x{common[1]}; resize them to one size, or pass "
                                  "--allow-mixed-sizes to have each resized to --image-size")
    return out


def split_classes(classes: dict[str, list[Path]], name: str, seed: int, image_size: int,
                  num_private: int | None, center_crop: int | None = None,
                  test_fraction: float = 0.1) -> MISplits:
    """Private = the ``num_private`` classes with most images (default: half), public = the rest."""
    order = sorted(classes, key=lambda c: (-len(classes[c]), c))
    n_priv = num_private if num_private is not None else len(order) // 2
    if not 1 <= n_priv < len(order):
        raise ReAnalysisError(
            f"{name}: num_private={n_priv} must leave at least one public class among {len(order)}; pass a smaller value")
    priv_names, pub_names = order[:n_priv], order[n_priv:]
    p_paths, p_labels = [], []
    for i, c in enumerate(priv_names):
        p_paths += classes[c]
        p_labels += [i] * len(classes[c])
    q_paths, q_labels = [], []
    for i, c in enumerate(pub_names):
        q_paths += classes[c]
        q_labels += [i] * len(classes[c])
    private = FolderImageDataset(p_paths, p_labels, image_size, center_crop)
    tr, te = stratified_split(np.asarray(p_labels), test_fraction, seed)
    return MISplits(name=name, private_train=private.subset(tr), private_test=private.subset(te),
                    public=FolderImageDataset(q_paths, q_labels, image_size, center_crop),
                    num_classes=len(priv_names), num_public_classes=len(pub_names), channels=3,
                    image_size=image_size, private_class_names=priv_names, public_class_names=pub_names)


def require_root(root, name: str, hint: str) -> Path:
    if root is None:
        raise ReAnalysisError(f"{name} needs --root pointing to your local copy; {hint}")
    return Path(root).expanduser()


@register_dataset("imagefolder", "any class-per-folder tree (root/<class>/<image>); private = classes with most images",
                  hflip=None)
def load_imagefolder(root=None, seed: int = 0, image_size: int | None = None,
                     num_private: int | None = None, hflip: bool = False) -> MISplits:
    """``hflip=True`` declares that a mirrored image keeps its class (faces, animals), which
    lets training, priors and attacks flip; the default is not to flip."""
    hint = "arrange images as ROOT/<class name>/<image file> with at least two classes"
    root = require_root(root, "imagefolder", hint)
    splits = split_classes(scan_class_folders(root, hint), "imagefolder", seed, image_size or 64, num_private)
    splits.hflip_preserves_labels = bool(hflip)
    return splits


def class_order(names: list[str], classes_file: str | Path | None, what: str) -> list[str]:
    """The class folders of ``names`` in the order a model's outputs follow: the sorted folder
    order, or one folder name per line of ``classes_file`` (output index i = line i)."""
    if classes_file is None:
        return names
    path = Path(classes_file)
    if not path.is_file():
        raise ReAnalysisError(f"class-order file {path} does not exist; write one {what} folder name per line, "
                              "in the order of the model's outputs")
    order = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if sorted(order) != sorted(names) or len(set(order)) != len(order):
        missing, extra = sorted(set(names) - set(order)), sorted(set(order) - set(names))
        raise ReAnalysisError(f"class-order file {path} must name each {what} folder once; missing {missing}, "
                              f"unknown {extra}")
    return order


@register_dataset("folders", "your own data: private and public identities as two class-per-folder trees",
                  hflip=None, identities=True)
def load_folders(root=None, seed: int = 0, image_size: int | None = None, private: str | None = None,
                 public: str | None = None, private_test: str | None = None, channels: int = 3,
                 classes: str | None = None, hflip: bool = False, test_fraction: float = 0.1) -> MISplits:
    """A user's own MI setting: ``private`` (the classes the model trained on) and ``public``
    (other identities the attacker holds) as class-per-folder trees (``DIR/<class>/<image>``),
    images resized to ``image_size`` (default 64) with ``channels`` 1 or 3. Held-out private
    images come from ``private_test`` (the same class folders) or a seeded ``test_fraction``
    of each private class. ``classes`` names a file listing the private folders in the order
    of the model's outputs (default: sorted by name).

    Example:
        >>> splits = load_dataset("folders", private="data/private", public="data/public")  # doctest: +SKIP
    """
    hint = "arrange images as DIR/<class name>/<image file>, one folder per identity"
    if private is None or public is None:
        raise ReAnalysisError("the folders dataset needs both trees: dataset_params private=DIR and public=DIR")
    if channels not in (1, 3):
        raise ReAnalysisError(f"folders: channels must be 1 or 3, got {channels!r}")
    priv = scan_class_folders(Path(private).expanduser(), hint, every_class=True)
    pub = scan_class_folders(Path(public).expanduser(), hint, every_class=True)
    shared = sorted(set(priv) & set(pub))
    if shared:
        raise ReAnalysisError(f"private and public trees share class folder(s) {', '.join(shared[:5])}: public data "
                              "must hold other identities than the model's training classes; move them out of one tree")
    size = image_size or 64
    priv_names = class_order(sorted(priv), classes, "private class")
    pub_names = sorted(pub)

    def dataset(classes_: dict, names: list[str]) -> FolderImageDataset:
        """The images of ``classes_``, labelled by their class's index in ``names``."""
        present = [c for c in names if c in classes_]
        paths = [f for c in present for f in classes_[c]]
        labels = [names.index(c) for c in present for _ in classes_[c]]
        return FolderImageDataset(paths, labels, size, channels=channels)

    private_all = dataset(priv, priv_names)
    if private_test is not None:
        held = scan_class_folders(Path(private_test).expanduser(), hint, every_class=True)
        unknown = sorted(set(held) - set(priv_names))
        if unknown:
            raise ReAnalysisError(f"private test folder(s) {', '.join(unknown[:5])} are not private classes; "
                                  f"name them as in {private}")
        train, test = private_all, dataset(held, priv_names)
    else:
        tr, te = stratified_split(private_all.labels.numpy(), test_fraction, seed)
        train, test = private_all.subset(tr), private_all.subset(te)
    splits = MISplits(name="folders", private_train=train, private_test=test, public=dataset(pub, pub_names),
                      num_classes=len(priv_names), num_public_classes=len(pub_names), channels=channels,
                      image_size=size, private_class_names=priv_names, public_class_names=pub_names)
    splits.hflip_preserves_labels = bool(hflip)
    return splits


@register_dataset("facescrub", "FaceScrub faces (root/actors/faces/<name>/..., root/actresses/faces/<name>/...)",
                  hflip=True, identities=True)
def load_facescrub(root=None, seed: int = 0, image_size: int | None = None,
                   num_private: int | None = None) -> MISplits:
    hint = ("FaceScrub is not downloadable here: obtain it from its authors and point --root at the folder "
            "holding actors/faces and actresses/faces (or one class folder per person)")
    root = require_root(root, "facescrub", hint)
    subdirs = [root / "actors" / "faces", root / "actresses" / "faces"]
    if any(d.is_dir() for d in subdirs):
        classes = {}
        for d in subdirs:
            if d.is_dir():
                classes.update(scan_class_folders(d, hint))
    else:
        classes = scan_class_folders(root, hint)
    return split_classes(classes, "facescrub", seed, image_size or 64, num_private)


@register_dataset("stanford-dogs", "Stanford Dogs (root/Images/<synset-breed>/...)", image_size=224, hflip=True)
def load_stanford_dogs(root=None, seed: int = 0, image_size: int | None = None,
                       num_private: int | None = None) -> MISplits:
    hint = "point --root at the Stanford Dogs folder that holds Images/<n02085620-Chihuahua>/..."
    root = require_root(root, "stanford-dogs", hint)
    base = root / "Images" if (root / "Images").is_dir() else root
    return split_classes(scan_class_folders(base, hint), "stanford-dogs", seed, image_size or 224, num_private)


@register_dataset("celeba", "CelebA aligned faces (torchvision layout); private = the 1,000 most frequent identities",
                  hflip=True, identities=True)
def load_celeba(root=None, seed: int = 0, image_size: int | None = None,
                num_private: int = 1000) -> MISplits:
    """CelebA in torchvision's ``CelebA(root, download=False)`` layout.

    Reads ``identity_CelebA.txt`` directly (torchvision's class also insists on the
    attribute and landmark files, which an MI study does not use). Faces are centre-cropped
    to 108 px before resizing, the crop the GMI/KEDMI line of work uses at 64 px.
    """
    hint = ("CelebA cannot be downloaded here: point --root at the folder that holds "
            "celeba/img_align_celeba/ and celeba/identity_CelebA.txt (torchvision's CelebA layout)")
    root = require_root(root, "celeba", hint)
    base = root / "celeba" if (root / "celeba").is_dir() else root
    ident, img_dir = base / "identity_CelebA.txt", base / "img_align_celeba"
    for p in (ident, img_dir):
        if not p.exists():
            raise ReAnalysisError(f"CelebA: {p} is missing; {hint}")
    rows = [line.split() for line in ident.read_text().splitlines() if line.strip()]
    classes: dict[str, list[Path]] = {}
    for fname, pid in rows:
        classes.setdefault(pid, []).append(img_dir / fname)
    missing = [p for p in (classes[c][0] for c in list(classes)[:5]) if not p.is_file()]
    if missing:
        raise ReAnalysisError(f"CelebA: image {missing[0]} listed in identity_CelebA.txt is missing; {hint}")
    return split_classes(classes, "celeba", seed, image_size or 64, min(num_private, len(classes) - 1),
                         center_crop=108)
