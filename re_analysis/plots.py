"""seaborn/matplotlib figures used by the notebooks and ``re-analysis analyze``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics.judges import JUDGE_TABLE

GROUP_COLORS = {"private": "#1f77b4", "erased": "#ff7f0e", "reconstruction": "#d62728"}
OTHER_CLASSES_COLOR = "#c7c7c7"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def feature_space_figure(embedding: np.ndarray, groups, labels, class_names=None, title: str = ""):
    """Per-class 2-D scatter of private / erased / reconstruction features with a convex
    hull per group (the idea of MIDRE's Fig. 2), over the OTHER classes' private features in
    grey (MIDRE's second claim: a class's private features stay apart from the others).
    Returns the matplotlib figure."""
    import seaborn as sns
    from scipy.spatial import ConvexHull, QhullError

    plt = _plt()
    df = pd.DataFrame({"x": embedding[:, 0], "y": embedding[:, 1], "group": list(groups), "label": np.asarray(labels)})
    classes = sorted(df["label"].unique())
    cols = min(len(classes), 5)
    rows = int(np.ceil(len(classes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, c in zip(axes.flat, classes):
        sub = df[df["label"] == c]
        others = df[(df["label"] != c) & (df["group"] == "private")]
        ax.scatter(others["x"], others["y"], s=4, color=OTHER_CLASSES_COLOR, alpha=0.5, linewidths=0,
                   label="other classes (private)" if c == classes[0] else None)
        sns.scatterplot(data=sub, x="x", y="y", hue="group", palette=GROUP_COLORS, s=10, alpha=0.6, ax=ax,
                        legend=c == classes[0])
        for g, color in GROUP_COLORS.items():
            pts = sub.loc[sub["group"] == g, ["x", "y"]].to_numpy()
            if len(pts) >= 3:
                try:
                    h = ConvexHull(pts)
                except QhullError:
                    continue
                loop = np.append(h.vertices, h.vertices[0])
                ax.plot(pts[loop, 0], pts[loop, 1], color=color, lw=1.2)
                ax.fill(pts[loop, 0], pts[loop, 1], color=color, alpha=0.08)
        name = class_names[c] if class_names is not None and c < len(class_names) else c
        ax.set_title(f"class {name}", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _show(ax, image, title: str = "", color: str = "black"):
    img = (np.asarray(image, dtype=np.float64) * 0.5 + 0.5).clip(0, 1)  # normalised [-1, 1] -> [0, 1]
    img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, color=color)


def nearest_images_figure(recon, nearest_pixels, nearest_features, nearest_any, labels, nearest_public,
                          verdicts=None, title: str = "", class_names=None):
    """The leakage gallery: one row per reconstruction, beside its nearest same-class private
    image in pixels and in evaluation features, and its nearest training image of any class
    (red when public). ``verdicts`` (rows of judgements.csv) put each judge's verdict on the
    reconstruction; ``class_names`` name the classes (default: ``class <index>``). Images are
    normalised (N, C, H, W) arrays in [-1, 1]."""
    plt = _plt()
    n = len(recon)
    # constrained layout makes room for the suptitle above the column heads (tight_layout does not)
    fig, axes = plt.subplots(n, 4, figsize=(4 * 1.25, n * 1.3 + 0.4), squeeze=False, layout="constrained")
    heads = ["reconstruction", "nearest private\n(pixels)", "nearest private\n(eval features)", "nearest training\nimage (any)"]
    for i in range(n):
        verdict = ""
        if verdicts is not None:
            v = verdicts.iloc[i]
            marks = [f"{j.mark}{'+' if bool(v[j.column]) else '-'}" for j in JUDGE_TABLE if j.mark and j.column in v]
            verdict = " ".join(marks)
        name = class_names[int(labels[i])] if class_names is not None else f"class {int(labels[i])}"
        _show(axes[i, 0], recon[i], f"{name} {verdict}")
        _show(axes[i, 1], nearest_pixels[i])
        _show(axes[i, 2], nearest_features[i])
        pub = bool(nearest_public[i])
        _show(axes[i, 3], nearest_any[i])
        axes[i, 3].set_xlabel("PUBLIC" if pub else "private", fontsize=7, color="#d62728" if pub else "black")
    for ax, h in zip(axes[0], heads):
        ax.set_title(f"{h}\n{ax.get_title()}".strip(), fontsize=7)
    fig.suptitle(title or "reconstructions and their nearest training images", fontsize=9)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Save atomically (temp file + rename, recorded in its run's manifest) and close the figure."""
    from .artifacts import atomic_output

    plt = _plt()
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
