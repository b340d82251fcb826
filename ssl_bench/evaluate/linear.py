"""Linear probe: logistic regression on frozen, standardised features (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssl_bench.evaluate.base import EVALUATIONS, EvalContext
from ssl_bench.evaluate.metrics import classification_metrics, full_proba


@EVALUATIONS.register("linear")
class LinearProbe:
    """Linear probe: L2-regularised logistic regression on frozen standardised features."""

    def __init__(self, train_split: str = "train", test_split: str = "test", C: float = 1.0, max_iter: int = 2000):
        self.train_split, self.test_split, self.C, self.max_iter = train_split, test_split, C, max_iter

    def run(self, ctx: EvalContext) -> dict[str, float]:
        x_tr, y_tr = ctx.features(self.train_split)
        x_te, y_te = ctx.features(self.test_split)
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        if ctx.data.task == "multi-label":
            model = make_pipeline(StandardScaler(), OneVsRestClassifier(clf))
            model.fit(x_tr, y_tr.astype(int))
            proba = model.predict_proba(x_te)
        else:
            model = make_pipeline(StandardScaler(), clf)
            model.fit(x_tr, y_tr)
            proba = full_proba(model.predict_proba(x_te), model[-1].classes_, ctx.data.num_classes)
        return classification_metrics(y_te, proba, ctx.data.task)
