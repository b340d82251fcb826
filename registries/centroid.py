"""Tutorial plug-in (docs/write_an_evaluation.md): nearest class centroid on frozen features.

Each class is represented by the mean of its (L2-normalised) training features; a test image's class
probabilities are the softmax of its cosine similarities to the centroids divided by ``temperature``.
A cheap, parameter-free probe between kNN and the linear probe.

    plugins: [registries/centroid.py]
    evaluate: [{name: centroid, temperature: 0.1}]
"""

import numpy as np

from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS, EvalContext, Evaluation
from ssl_bench.evaluate.metrics import classification_metrics


@EVALUATIONS.register("centroid")
class NearestCentroid(Evaluation):
    """Nearest class centroid (cosine) on frozen features; softmax(cos / temperature) probabilities."""

    def __init__(self, temperature: float = 0.1, train_split: str = "train", test_split: str = "test"):
        if temperature <= 0:
            raise SSLBenchError(f"recipe key evaluate.centroid.temperature must be > 0, got {temperature}")
        self.temperature, self.train_split, self.test_split = temperature, train_split, test_split

    def run(self, ctx: EvalContext) -> dict[str, float]:
        if ctx.data.task == "multi-label":
            raise SSLBenchError("evaluation centroid needs one class per image (not a multi-label task)")
        x_tr, y_tr = ctx.features(self.train_split)
        x_te, y_te = ctx.features(self.test_split)
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
        centroids = np.stack([unit(x_tr)[y_tr == c].mean(0) if (y_tr == c).any() else np.zeros(x_tr.shape[1])
                              for c in range(ctx.data.num_classes)])
        logits = unit(x_te) @ unit(centroids).T / self.temperature
        proba = np.exp(logits - logits.max(1, keepdims=True))
        proba /= proba.sum(1, keepdims=True)
        return classification_metrics(y_te, proba, ctx.data.task)
