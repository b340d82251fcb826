"""Linear probe: logistic regression on frozen, standardised features (scikit-learn)."""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssl_bench.evaluate.base import EVALUATIONS, EvalContext, Split
from ssl_bench.evaluate.metrics import classification_metrics, full_proba

C_GRID = (0.01, 0.1, 1.0, 10.0)


@EVALUATIONS.register("linear")
class LinearProbe:
    """Linear probe: logistic regression on frozen standardised features, C chosen on val."""

    def __init__(
        self,
        train_split: Split = "train",
        test_split: Split = "test",
        C: Optional[float] = None,
        select_split: Split = "val",
        max_iter: int = 2000,
    ):
        """``C: null`` picks the inverse regularisation strength from {0.01, 0.1, 1, 10} by AUC on
        ``select_split`` (if the dataset has it, else C = 1), then refits on ``train_split``."""
        self.train_split, self.test_split, self.C, self.max_iter = train_split, test_split, C, max_iter
        self.select_split = select_split
        self.chosen_C: Optional[float] = None

    def _fit_predict(self, ctx: EvalContext, C: float, x_tr, y_tr, x_te) -> np.ndarray:
        with warnings.catch_warnings():
            # weakly regularised grid points may stop at max_iter; their val score decides
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._fit_predict_inner(ctx, C, x_tr, y_tr, x_te)

    def _fit_predict_inner(self, ctx: EvalContext, C: float, x_tr, y_tr, x_te) -> np.ndarray:
        clf = LogisticRegression(C=C, max_iter=self.max_iter)
        if ctx.data.task == "multi-label":
            model = make_pipeline(StandardScaler(), OneVsRestClassifier(clf)).fit(x_tr, y_tr.astype(int))
            return model.predict_proba(x_te)
        model = make_pipeline(StandardScaler(), clf).fit(x_tr, y_tr)
        return full_proba(model.predict_proba(x_te), model[-1].classes_, ctx.data.num_classes)

    def run(self, ctx: EvalContext) -> dict[str, float]:
        x_tr, y_tr = ctx.features(self.train_split)
        C = self.C
        if C is None:
            C = 1.0
            if getattr(ctx.data, self.select_split, None) is not None:
                x_va, y_va = ctx.features(self.select_split)
                scores = []
                for c in C_GRID:
                    m = classification_metrics(y_va, self._fit_predict(ctx, c, x_tr, y_tr, x_va), ctx.data.task)
                    scores.append(np.nan_to_num(m["auc"], nan=-1.0) + 1e-3 * m["balanced_accuracy"])
                C = C_GRID[int(np.argmax(scores))]
        self.chosen_C = C
        x_te, y_te = ctx.features(self.test_split)
        return classification_metrics(y_te, self._fit_predict(ctx, C, x_tr, y_tr, x_te), ctx.data.task)
