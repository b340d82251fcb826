"""k-nearest-neighbour classification on frozen features (cosine distance, scikit-learn)."""

from __future__ import annotations

import numpy as np

from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate.base import EVALUATIONS, Evaluation, EvalContext, Split
from ssl_bench.evaluate.metrics import classification_metrics, full_proba

__all__ = ["KNN"]


@EVALUATIONS.register("knn")
class KNN(Evaluation):
    """kNN classifier on frozen features, cosine distance; weights uniform, distance or softmax(τ)."""

    def __init__(
        self, k: int = 20, train_split: Split = "train", test_split: Split = "test", weights: str = "uniform",
        temperature: float = 0.07
    ):
        if k < 1:
            raise SSLBenchError(f"recipe key evaluate.knn.k must be ≥ 1, got {k}")
        if weights not in ("uniform", "distance", "softmax"):
            raise SSLBenchError("recipe key evaluate.knn.weights must be uniform, distance or softmax, got "
                                f"'{weights}'")
        self.k, self.train_split, self.test_split = k, train_split, test_split
        self.weights, self.temperature = weights, temperature

    def check_data(self, data) -> None:
        n = len(data.split(self.train_split))
        if self.k > n:
            raise SSLBenchError(
                f"recipe key evaluate.knn.k ({self.k}) is larger than the {self.train_split} split ({n} images): "
                "every test image would be scored by every training image"
            )

    def run(self, ctx: EvalContext) -> dict[str, float]:
        x_tr, y_tr = ctx.features(self.train_split)
        x_te, y_te = ctx.features(self.test_split)
        # softmax weights exp(cos/τ) (InstDisc, arXiv 1805.01978) = exp(−d/τ) up to a constant for d = 1 − cos
        w = (lambda d: np.exp(-d / self.temperature)) if self.weights == "softmax" else self.weights
        self.check_data(ctx.data)
        from sklearn.neighbors import KNeighborsClassifier  # (imported where used: see metrics.py)

        knn = KNeighborsClassifier(n_neighbors=self.k, metric="cosine", weights=w)
        if ctx.data.task == "multi-label":
            knn.fit(x_tr, y_tr.astype(int))
            proba = np.stack([p[:, 1] if p.shape[1] > 1 else np.zeros(len(x_te)) for p in knn.predict_proba(x_te)], 1)
        else:
            knn.fit(x_tr, y_tr)
            proba = full_proba(knn.predict_proba(x_te), knn.classes_, ctx.data.num_classes)
        return classification_metrics(y_te, proba, ctx.data.task, ctx.data.positive_class)
