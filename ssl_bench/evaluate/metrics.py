"""Classification metrics from scikit-learn: accuracy, balanced accuracy (BMA), AUC."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score, roc_auc_score


def full_proba(proba: np.ndarray, classes_seen: np.ndarray, num_classes: int) -> np.ndarray:
    """Expand ``predict_proba`` columns (classes seen in training) to all ``num_classes``."""
    out = np.zeros((proba.shape[0], num_classes), dtype=np.float64)
    out[:, classes_seen.astype(int)] = proba
    return out


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, task: str) -> dict[str, float]:
    """Accuracy, balanced accuracy, AUC, precision and F1 for binary / multi-class / ordinal / multi-label.

    ``precision`` and ``f1`` are macro averages; binary tasks also report ``precision_pos``, the
    precision of the positive class (label 1; the ISIC 2016 figure of BYOL-TracIn).

    ``proba`` is ``[N, C]`` class probabilities (per-label probabilities for multi-label).
    AUC is one-vs-rest for multi-class, computed over the classes present in ``y_true``; for
    multi-label it is the mean per-label AUC over labels with both outcomes in ``y_true``.
    """
    if task == "multi-label":
        y = y_true.astype(int)
        pred = (proba >= 0.5).astype(int)
        present = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
        if len(present) < y.shape[1]:
            warnings.warn(f"AUC skips {y.shape[1] - len(present)} label(s) absent from the evaluation split")
        auc = float(np.mean([roc_auc_score(y[:, j], proba[:, j]) for j in present])) if present else float("nan")
        return {
            "accuracy": float((pred == y).mean()),
            "balanced_accuracy": float(np.mean([balanced_accuracy_score(y[:, j], pred[:, j]) for j in present]))
            if present
            else float("nan"),
            "auc": auc,
            "precision": float(precision_score(y, pred, average="macro", zero_division=0)),
            "f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        }
    y = y_true.reshape(-1).astype(int)
    pred = proba.argmax(1)
    labels = np.arange(proba.shape[1])
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
    }
    if proba.shape[1] == 2:
        out["precision_pos"] = float(precision_score(y, pred, pos_label=1, zero_division=0))
    present = np.unique(y)
    if len(present) < 2:
        out["auc"] = float("nan")
    elif proba.shape[1] == 2:
        out["auc"] = float(roc_auc_score(y, proba[:, 1]))
    elif len(present) == proba.shape[1]:
        out["auc"] = float(roc_auc_score(y, proba, multi_class="ovr"))
    else:  # some classes absent from this split: one-vs-rest over the present ones
        out["auc"] = float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    return out
