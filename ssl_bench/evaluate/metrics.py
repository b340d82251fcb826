"""Classification metrics from scikit-learn: accuracy, balanced accuracy (BMA), AUC — and the
baselines that say whether a classifier learned anything (majority-class accuracy, chance BMA, the
histogram of its predictions)."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["full_proba", "classification_metrics"]

# the keys of classification_metrics that describe the split and the predictions, not the classifier's
# quality: compare shows them beside a metric (a cell no better than the majority class is marked)
BASELINE_KEYS = ("majority_accuracy", "chance_balanced_accuracy", "predicted_classes")


def full_proba(proba: np.ndarray, classes_seen: np.ndarray, num_classes: int) -> np.ndarray:
    """Expand ``predict_proba`` columns (classes seen in training) to all ``num_classes``."""
    out = np.zeros((proba.shape[0], num_classes), dtype=np.float64)
    out[:, classes_seen.astype(int)] = proba
    return out


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, task: str, positive: int = 1) -> dict:
    """Accuracy, balanced accuracy, AUC, precision and F1 for binary / multi-class / ordinal / multi-label.

    ``precision`` and ``f1`` are macro averages; binary tasks also report ``precision_pos``, the
    precision of the positive class ``positive`` (the dataset's, :attr:`DataSplits.positive_class`:
    BreastMNIST's "malignant" is label 0; the ISIC 2016 figure of BYOL-TracIn) and ``positive_class``.

    What a classifier must beat is recorded beside the metrics: ``majority_accuracy`` (the accuracy
    of always predicting the split's most frequent class), ``chance_balanced_accuracy`` (the BMA of
    any constant prediction: 1 / the number of classes present; 0.5 per label for multi-label),
    ``pred_histogram`` (how many images were predicted as each class) and ``predicted_classes``
    (how many classes were predicted at all: 1 = the classifier collapsed onto one class).

    ``proba`` is ``[N, C]`` class probabilities (per-label probabilities for multi-label).
    AUC is one-vs-rest for multi-class, computed over the classes present in ``y_true``; for
    multi-label it is the mean per-label AUC over labels with both outcomes in ``y_true``.
    """
    # scikit-learn (1 s to import) is imported where it is used, so that checking a recipe does not need it
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score, roc_auc_score

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
            # per label: the accuracy of always predicting its more frequent outcome, averaged
            "majority_accuracy": float(np.mean(np.maximum(y.mean(0), 1 - y.mean(0)))) if len(y) else float("nan"),
            "chance_balanced_accuracy": 0.5,
            "pred_histogram": [int(v) for v in pred.sum(0)],  # images predicted positive, per label
            "predicted_classes": int((pred.sum(0) > 0).sum()),
        }
    y = y_true.reshape(-1).astype(int)
    pred = proba.argmax(1)
    labels = np.arange(proba.shape[1])
    present = np.unique(y)
    counts = np.bincount(y, minlength=proba.shape[1])
    histogram = np.bincount(pred, minlength=proba.shape[1])
    out = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
    }
    if proba.shape[1] == 2:
        out["precision_pos"] = float(precision_score(y, pred, pos_label=positive, zero_division=0))
        out["positive_class"] = int(positive)
    if len(present) < 2:
        out["auc"] = float("nan")
    elif proba.shape[1] == 2:
        out["auc"] = float(roc_auc_score(y, proba[:, 1]))
    elif len(present) == proba.shape[1]:
        out["auc"] = float(roc_auc_score(y, proba, multi_class="ovr"))
    else:  # some classes absent from this split: one-vs-rest over the present ones
        out["auc"] = float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    out["majority_accuracy"] = float(counts.max() / len(y)) if len(y) else float("nan")
    out["chance_balanced_accuracy"] = 1.0 / len(present) if len(present) else float("nan")
    out["pred_histogram"] = [int(v) for v in histogram]
    out["predicted_classes"] = int((histogram > 0).sum())
    return out
