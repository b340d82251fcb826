"""Linear probe: logistic regression on frozen, standardised features (scikit-learn)."""

from __future__ import annotations

import time
import warnings
from typing import Optional

import numpy as np

from ssl_bench.evaluate.base import EVALUATIONS, Evaluation, EvalContext, Split
from ssl_bench.evaluate.metrics import classification_metrics, full_proba

__all__ = ["LinearProbe"]

C_GRID = (0.01, 0.1, 1.0, 10.0)


@EVALUATIONS.register("linear")
class LinearProbe(Evaluation):
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

    @property
    def chosen(self) -> dict:
        return {} if self.chosen_C is None else {"C": self.chosen_C}

    def _fit(self, ctx: EvalContext, C: float, x_tr, y_tr):
        from sklearn.exceptions import ConvergenceWarning  # (imported where used: see metrics.py)
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = LogisticRegression(C=C, max_iter=self.max_iter)
        with warnings.catch_warnings():
            # weakly regularised grid points may stop at max_iter; their val score decides
            warnings.simplefilter("ignore", ConvergenceWarning)
            if ctx.data.task == "multi-label":
                return make_pipeline(StandardScaler(), OneVsRestClassifier(clf)).fit(x_tr, y_tr.astype(int))
            return make_pipeline(StandardScaler(), clf).fit(x_tr, y_tr)

    @staticmethod
    def _proba(ctx: EvalContext, model, x) -> np.ndarray:
        if ctx.data.task == "multi-label":
            return model.predict_proba(x)
        return full_proba(model.predict_proba(x), model[-1].classes_, ctx.data.num_classes)

    def run(self, ctx: EvalContext) -> dict[str, float]:
        x_tr, y_tr = ctx.features(self.train_split)
        C, model = self.C, None
        if C is None:
            C = 1.0
            if getattr(ctx.data, self.select_split, None) is not None:
                x_va, y_va = ctx.features(self.select_split)
                fits, scores = [], []
                for c in C_GRID:
                    t0 = time.perf_counter()
                    fits.append(self._fit(ctx, c, x_tr, y_tr))
                    # tools/planted_bugs.py (linear-C-on-train) plants a bug by replacing this exact line
                    m = classification_metrics(y_va, self._proba(ctx, fits[-1], x_va), ctx.data.task, ctx.data.positive_class)  # noqa: E501
                    scores.append(np.nan_to_num(m["auc"], nan=-1.0) + 1e-3 * m["balanced_accuracy"])
                    if ctx.log is not None:  # a line per fit: a large split takes minutes
                        ctx.log(f"  linear probe C={c:g}: {self.select_split} AUC {m['auc']:.4f}  "
                                f"BMA {m['balanced_accuracy']:.4f}  ({time.perf_counter() - t0:.1f} s)")
                best = int(np.argmax(scores))
                C, model = C_GRID[best], fits[best]  # the chosen fit is the final one: no refit
        self.chosen_C = C
        model = model if model is not None else self._fit(ctx, C, x_tr, y_tr)
        x_te, y_te = ctx.features(self.test_split)
        return classification_metrics(y_te, self._proba(ctx, model, x_te), ctx.data.task, ctx.data.positive_class)
