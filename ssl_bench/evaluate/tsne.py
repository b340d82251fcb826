"""t-SNE baseline: a non-parametric 2-D map of pixels or backbone features, scored like t-SimCNE's.

The comparison rows of t-SimCNE on medical images (Nwabufo et al., MIDL 2024, arXiv 2402.14566;
Böhm et al., ICLR 2023, arXiv 2210.09879): t-SNE (van der Maaten & Hinton, JMLR 2008) of the raw
pixel space, and of the features of a contrastively trained network (SimCLR/BYOL runs here).
scikit-learn's Barnes-Hut ``TSNE`` (PCA initialisation, learning rate 'auto') after a PCA to
``pca_dim`` dimensions, the usual pre-processing.

t-SNE cannot place new points, so the train and test images are embedded together; then the same
protocol as ``embedding`` applies (kNN k = 15 fitted on the train part of the map, scored on the
test part; silhouette of the whole map by class).  The run directory gets ``tsne_<input>.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate.base import EVALUATIONS, Evaluation, EvalContext, Split
from ssl_bench.evaluate.embedding import knn_accuracy, map_metrics

__all__ = ["tsne_2d", "TSNEBaseline"]


def tsne_2d(x: np.ndarray, perplexity: float = 30.0, pca_dim: int = 50, max_iter: int = 1000,
            seed: int = 0) -> np.ndarray:
    """[N, D] → [N, 2]: PCA to ``pca_dim`` (when D is larger), then scikit-learn t-SNE."""
    from sklearn.decomposition import PCA  # (imported where used: see metrics.py)
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float32)
    if x.shape[1] > pca_dim and len(x) > pca_dim:
        x = PCA(pca_dim, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, (len(x) - 1) / 3.0)  # sklearn requires perplexity < N
    return TSNE(2, perplexity=perplexity, init="pca", max_iter=max_iter, random_state=seed).fit_transform(x)


@EVALUATIONS.register("tsne")
class TSNEBaseline(Evaluation):
    """t-SNE baseline (scikit-learn) of pixels or backbone features, scored like the t-SimCNE map."""

    def __init__(
        self,
        input: Literal["features", "pixels"] = "features",
        perplexity: float = 30.0,
        pca_dim: int = 50,
        max_iter: int = 1000,
        k: int = 15,
        train_split: Split = "train",
        test_split: Split = "test",
        silhouette_samples: int = 10000,
        seed: int = 0,
        plot: bool = True,
    ):
        if perplexity <= 0 or pca_dim < 2 or max_iter < 250 or k < 1:
            raise SSLBenchError(
                "recipe keys evaluate.tsne: perplexity must be > 0, pca_dim ≥ 2, max_iter ≥ 250 (scikit-learn), k ≥ 1"
            )
        self.input, self.perplexity, self.pca_dim, self.max_iter = input, perplexity, pca_dim, max_iter
        self.k, self.train_split, self.test_split = k, train_split, test_split
        self.silhouette_samples, self.seed, self.plot = silhouette_samples, seed, plot

    def _inputs(self, ctx: EvalContext, split: str) -> tuple[np.ndarray, np.ndarray]:
        if self.input == "features":
            return ctx.features(split)
        s = ctx.data.split(split)
        return s.images.flatten(1).float().div(255).numpy(), s.labels.numpy()

    @property
    def key(self) -> str:
        return f"tsne@{self.input}"

    def run(self, ctx: EvalContext) -> dict[str, float]:
        x_tr, y_tr = self._inputs(ctx, self.train_split)
        x_te, y_te = self._inputs(ctx, self.test_split)
        xy = tsne_2d(np.concatenate([x_tr, x_te]), self.perplexity, self.pca_dim, self.max_iter, self.seed)
        xy_tr, xy_te = xy[: len(x_tr)], xy[len(x_tr) :]
        self.xy = xy  # the last map (train rows, then test rows)
        out = map_metrics(
            xy_tr, y_tr, xy_te, y_te, ctx.data.task, ctx.data.num_classes, self.k, self.silhouette_samples, self.seed
        )
        out[f"knn_accuracy_{self.input}"] = knn_accuracy(x_tr, y_tr, x_te, y_te, self.k)
        if ctx.out_dir is not None and self.plot:
            from ssl_bench.scatter import scatter_embedding

            title = (f"{ctx.data.name}: t-SNE of {self.input} · kNN acc {out['accuracy']:.3f} · silhouette "
                     f"{out['silhouette']:.3f}")
            scatter_embedding(
                xy, np.concatenate([y_tr.reshape(-1), y_te.reshape(-1)]), Path(ctx.out_dir) / f"tsne_{self.input}.png",
                ctx.data.class_names, title, seed=self.seed,
                splits=[self.train_split] * len(y_tr) + [self.test_split] * len(y_te),
            )
        return out
