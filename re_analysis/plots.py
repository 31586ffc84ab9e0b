"""seaborn/matplotlib figures used by the notebooks and ``re-analysis analyze``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

GROUP_COLORS = {"private": "#1f77b4", "erased": "#ff7f0e", "reconstruction": "#d62728"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def feature_space_figure(embedding: np.ndarray, groups, labels, class_names=None, title: str = ""):
    """Per-class 2-D scatter of private / erased / reconstruction features with a convex
    hull per group (the idea of MIDRE's Fig. 2). Returns the matplotlib figure."""
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
