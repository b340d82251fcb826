"""Scatter plots of 2-D embeddings coloured by class (t-SimCNE maps, t-SNE baselines).

Readable from a few hundred to 100,000 points: marker size and opacity shrink with the number of
points, the points are drawn in a random order (no class hides another because it came last), the
point layer is rasterised (a light PNG/PDF even at 100k points), and the legend uses fixed-size
markers with the class names.  Optionally, thumbnails of real images are placed at cluster
positions (k-means centres of the map, scikit-learn), each showing the image nearest its centre.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["point_style", "scatter_embedding"]


def point_style(n: int) -> tuple[float, float]:
    """(marker area in pt², alpha) for ``n`` points: 12 pt² / 0.9 at 500 points, 0.5 pt² / 0.25 at 100k."""
    size = float(np.clip(6000.0 / max(n, 1), 0.5, 12.0))
    alpha = float(np.clip(20.0 / np.sqrt(max(n, 1)), 0.25, 0.9))
    return size, alpha


def _colours(num: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if num <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(num)]


def scatter_embedding(
    xy: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    class_names: Sequence[str] = (),
    title: Optional[str] = None,
    images: Optional[torch.Tensor] = None,
    thumbnails: int = 0,
    seed: int = 0,
    splits: Optional[Sequence[str]] = None,
) -> Path:
    """Save a PNG scatter of ``xy`` [N, 2] coloured by integer ``labels`` [N]; return its path.

    ``images`` (uint8 [N, C, H, W], the same order as ``xy``) and ``thumbnails`` > 0 add that many
    image thumbnails at k-means cluster positions.  ``splits`` (a split name per point, e.g. train /
    test) draws each split with its own marker (the first as dots, the others as crosses).  The
    axes fit the points (equal aspect, no empty margins).  The file is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ssl_bench.plots import save_figure

    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"scatter_embedding needs [N, 2] coordinates, got {xy.shape}")
    labels = np.asarray(labels).reshape(-1).astype(int)
    n = len(xy)
    num = max(int(labels.max()) + 1 if n else 0, len(class_names))
    names = list(class_names) + [str(c) for c in range(len(class_names), num)]
    colours = _colours(num)
    size, alpha = point_style(n)
    order = np.random.default_rng(seed).permutation(n)

    fig, ax = plt.subplots(figsize=(7.0, 6.0))
    split_arr = np.asarray(splits).reshape(-1) if splits is not None else np.full(n, "", dtype=object)
    kinds = list(dict.fromkeys(split_arr[order].tolist())) if n else []
    markers = {s: ("o" if i == 0 else "x") for i, s in enumerate(sorted(kinds, key=lambda s: s != "train"))}
    for s in kinds:
        sel = order[split_arr[order] == s]
        m = markers[s]
        ax.scatter(
            xy[sel, 0], xy[sel, 1], c=[colours[c] for c in labels[sel]], s=size if m == "o" else size * 1.6,
            alpha=alpha, marker=m, linewidths=0 if m == "o" else 0.6, rasterized=True,
        )
    if images is not None and thumbnails > 0 and n > 0:
        _add_thumbnails(ax, xy, images, min(thumbnails, n), seed)
    present = sorted(set(labels.tolist()))
    counts = np.bincount(labels, minlength=num)
    handles = [
        Line2D([], [], ls="", marker="o", markersize=7, color=colours[c], label=f"{names[c]} ({counts[c]})")
        for c in present
    ]
    if len(kinds) > 1:
        handles += [Line2D([], [], ls="", marker=markers[s], markersize=7, color="0.3",
                           label=f"{s} ({int((split_arr == s).sum())})")
                    for s in markers]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    ax.set_aspect("equal", adjustable="box")  # the box takes the data's shape: no empty margins
    ax.margins(0.02)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or f"{n} points", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out, dpi=150, bbox_inches="tight")  # atomically; a failed write is one line naming it


def _add_thumbnails(ax, xy: np.ndarray, images: torch.Tensor, k: int, seed: int) -> None:
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from sklearn.cluster import KMeans

    centres = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(xy).cluster_centers_
    nearest = np.unique(((xy[None, :, :] - centres[:, None, :]) ** 2).sum(-1).argmin(1))
    side = images.shape[-1]
    zoom = 24.0 / side  # about a third of an inch per thumbnail whatever the image size
    for i in nearest:
        img = images[int(i)].permute(1, 2, 0).cpu().numpy()
        img = img[..., 0] if img.shape[-1] == 1 else img
        box = OffsetImage(img, zoom=zoom, cmap="gray" if img.ndim == 2 else None)
        ax.add_artist(AnnotationBbox(box, xy[int(i)], frameon=True, pad=0.1, bboxprops={"lw": 0.5}))
