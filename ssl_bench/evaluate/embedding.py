"""Quality of a 2-D map (t-SimCNE): kNN accuracy on the map and on backbone features, silhouette.

The t-SimCNE protocol (Böhm et al., ICLR 2023, arXiv 2210.09879; Nwabufo et al., MIDL 2024,
arXiv 2402.14566): a k = 15 nearest-neighbour classifier (Euclidean) on the 2-D embedding, and the
silhouette score (scikit-learn) of the embedding with the classes as clusters.  Here the split is
fixed: the classifier is fitted on the embedded ``train_split`` and scored on ``test_split`` (the
map of the test images is out-of-sample: t-SimCNE is parametric); the silhouette is computed on
both splits together, on a seeded subsample of ``silhouette_samples`` points when there are more
(silhouette is O(N²)).  The same kNN is run on the backbone features for comparison.

``protocol: poster`` is the medical t-SimCNE poster's (Nwabufo et al.): the whole dataset (every
split) is embedded, the kNN is fitted and scored on a seeded stratified 90 / 10 split of all points,
and the silhouette is computed on all points.

Results: the classification metrics of the 2-D kNN (``accuracy`` is the kNN accuracy, plus
``balanced_accuracy``, ``auc``, …), ``silhouette``, ``knn_accuracy_features`` and ``dim`` (the
head's output size: 2 after t-SimCNE's stage 2).  The run directory gets ``embedding.csv`` (split,
index, label, coordinates) and, for 2-D maps, ``embedding.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate.base import EVALUATIONS, Evaluation, EvalContext, Split
from ssl_bench.evaluate.metrics import classification_metrics, full_proba

__all__ = ["knn_accuracy", "map_metrics", "write_embedding_csv", "embedding_frame", "EmbeddingQuality"]


def knn_accuracy(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, k: int = 15) -> float:
    """Accuracy of a Euclidean k-nearest-neighbour classifier fitted on (x_tr, y_tr)."""
    from sklearn.neighbors import KNeighborsClassifier  # (imported where used: see metrics.py)

    knn = KNeighborsClassifier(n_neighbors=min(k, len(x_tr))).fit(x_tr, y_tr.reshape(-1))
    return float((knn.predict(x_te) == y_te.reshape(-1)).mean())


def map_metrics(
    xy_tr: np.ndarray,
    y_tr: np.ndarray,
    xy_te: np.ndarray,
    y_te: np.ndarray,
    task: str,
    num_classes: int,
    k: int = 15,
    silhouette_samples: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """kNN (k, Euclidean) classification metrics train → test, and the silhouette of both splits by class."""
    if task == "multi-label":
        raise SSLBenchError("map metrics (kNN, silhouette by class) need single-label classes, not a multi-label task")
    from sklearn.metrics import silhouette_score  # (imported where used: see metrics.py)
    from sklearn.neighbors import KNeighborsClassifier

    y_tr, y_te = y_tr.reshape(-1), y_te.reshape(-1)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(xy_tr))).fit(xy_tr, y_tr)
    out = classification_metrics(y_te, full_proba(knn.predict_proba(xy_te), knn.classes_, num_classes), task)
    xy, y = np.concatenate([xy_tr, xy_te]), np.concatenate([y_tr, y_te])
    if len(np.unique(y)) < 2:
        out["silhouette"] = float("nan")
    else:
        sample = silhouette_samples if len(xy) > silhouette_samples else None
        out["silhouette"] = float(silhouette_score(xy, y, sample_size=sample, random_state=seed))
    return out


def write_embedding_csv(path: Path, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """``split,index,label,x,y`` (``z0 … z{d−1}`` beyond 2-D) for each split's coordinates, atomically."""
    from ssl_bench import runs

    runs.atomic_write_text(Path(path), embedding_frame(parts).to_csv(index=False, float_format="%.7g"))
    return Path(path)


def embedding_frame(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per image: split, index, label, then x, y (2-D) or z0 … z{d−1}."""
    import pandas as pd  # (imported where used, as scikit-learn: see metrics.py)

    frames = []
    for split, (z, y) in parts.items():
        cols = ["x", "y"] if z.shape[1] == 2 else [f"z{i}" for i in range(z.shape[1])]
        df = pd.DataFrame(z, columns=cols)
        df.insert(0, "label", y.reshape(len(z), -1)[:, 0] if y.size else -1)
        df.insert(0, "index", np.arange(len(z)))
        df.insert(0, "split", split)
        frames.append(df)
    return pd.concat(frames)


@EVALUATIONS.register("embedding")
class EmbeddingQuality(Evaluation):
    """2-D map quality: kNN (k = 15) on the map and on backbone features, silhouette by class."""

    def __init__(
        self,
        k: int = 15,
        train_split: Split = "train",
        test_split: Split = "test",
        silhouette_samples: int = 10000,
        seed: int = 0,
        plot: bool = True,
        thumbnails: int = 0,
        protocol: Literal["split", "poster"] = "split",
    ):
        if k < 1:
            raise SSLBenchError(f"recipe key evaluate.embedding.k must be ≥ 1, got {k}")
        if silhouette_samples < 2:
            raise SSLBenchError("recipe key evaluate.embedding.silhouette_samples must be ≥ 2, got "
                                f"{silhouette_samples}")
        self.k, self.train_split, self.test_split = k, train_split, test_split
        self.silhouette_samples, self.seed, self.plot, self.thumbnails = silhouette_samples, seed, plot, thumbnails
        self.protocol = protocol
        self.files: dict[str, Path] = {}

    @property
    def key(self) -> str:
        return "embedding" if self.protocol == "split" else "embedding@poster"

    def run(self, ctx: EvalContext) -> dict[str, float]:
        if self.protocol == "poster":
            return self.run_poster(ctx)
        z_tr, y_tr = ctx.projections(self.train_split)
        z_te, y_te = ctx.projections(self.test_split)
        out = map_metrics(
            z_tr, y_tr, z_te, y_te, ctx.data.task, ctx.data.num_classes, self.k, self.silhouette_samples, self.seed
        )
        f_tr, fy_tr = ctx.features(self.train_split)
        f_te, fy_te = ctx.features(self.test_split)
        out["knn_accuracy_features"] = knn_accuracy(f_tr, fy_tr, f_te, fy_te, self.k)
        out["dim"] = int(z_tr.shape[1])
        if ctx.out_dir is not None:
            self.files["csv"] = write_embedding_csv(
                Path(ctx.out_dir) / "embedding.csv", {self.train_split: (z_tr, y_tr), self.test_split: (z_te, y_te)}
            )
            if self.plot and z_tr.shape[1] == 2:
                self.files["png"] = self._plot(ctx, z_tr, y_tr, z_te, y_te, out)
        return out

    def run_poster(self, ctx: EvalContext) -> dict[str, float]:
        """Every split embedded; kNN on a seeded stratified 90 / 10 split of all points; silhouette on all."""
        from sklearn.model_selection import train_test_split

        splits = [s for s in ("train", "val", "test") if getattr(ctx.data, s) is not None]
        z = np.concatenate([ctx.projections(s)[0] for s in splits])
        f = np.concatenate([ctx.features(s)[0] for s in splits])
        y = np.concatenate([ctx.projections(s)[1].reshape(-1) for s in splits])
        tr, te = train_test_split(np.arange(len(y)), test_size=0.1, stratify=y, random_state=self.seed)
        out = map_metrics(z[tr], y[tr], z[te], y[te], ctx.data.task, ctx.data.num_classes, self.k,
                          self.silhouette_samples, self.seed)
        out["knn_accuracy_features"] = knn_accuracy(f[tr], y[tr], f[te], y[te], self.k)
        out["dim"] = int(z.shape[1])
        if ctx.out_dir is not None:
            parts = {s: ctx.projections(s) for s in splits}
            self.files["csv"] = write_embedding_csv(Path(ctx.out_dir) / "embedding.csv", parts)
            if self.plot and z.shape[1] == 2:
                self.files["png"] = self._plot(ctx, z[tr], y[tr], z[te], y[te], out,
                                               names=("kNN reference", "kNN query"))
        return out

    def _plot(self, ctx: EvalContext, z_tr, y_tr, z_te, y_te, m: dict, names=None) -> Optional[Path]:
        from ssl_bench.scatter import scatter_embedding

        images = None
        if self.thumbnails and names is None:
            import torch

            images = torch.cat([ctx.data.split(self.train_split).images, ctx.data.split(self.test_split).images])
        names = names or (self.train_split, self.test_split)
        title = (
            f"{ctx.data.name}: {len(z_tr) + len(z_te)} images ({len(z_tr)} {names[0]}, {len(z_te)} {names[1]}) · "
            f"kNN acc {m['accuracy']:.3f} · silhouette {m['silhouette']:.3f}"
        )
        return scatter_embedding(
            np.concatenate([z_tr, z_te]), np.concatenate([y_tr.reshape(-1), y_te.reshape(-1)]),
            Path(ctx.out_dir) / "embedding.png", ctx.data.class_names, title, images, self.thumbnails, self.seed,
            splits=[names[0]] * len(z_tr) + [names[1]] * len(z_te),
        )
