"""Evaluation a researcher can trust: a protocol that learns, metrics equal to MedMNIST's own
evaluator, the baselines every result carries, and a classifier that learned nothing flagged."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_score

from ssl_bench.evaluate import EVALUATIONS, EvalContext
from ssl_bench.evaluate.base import at_baseline
from ssl_bench.evaluate.metrics import classification_metrics
from tests.conftest import MEDMNIST_ROOT

SMALL = {"name": "resnet18", "small_image_stem": True, "stem_pool": True}


@pytest.fixture(scope="module")
def scratch_breast(breast):
    """The default fine-tuning from an untrained ResNet-18 on BreastMNIST, 6 epochs, scored on val."""
    ctx = EvalContext.from_scratch(breast, SMALL, torch.device("cpu"))
    ev = EVALUATIONS.build({"name": "finetune", "epochs": 6, "from_scratch": True, "test_split": "val"})
    return ev.run_seed(ctx, 0, test_proba=True)


@pytest.mark.slow
def test_finetuning_from_scratch_beats_the_majority_class_on_validation(scratch_breast, breast):
    """The protocol learns from random init within a few epochs: validation BMA above chance (0.5)
    and AUC well above 0.5, both classes predicted — the old default (SGD on the pre-training views)
    reached AUC 0.755 on test after 100 epochs and predicted the majority class in most study runs."""
    m = scratch_breast
    assert m["majority_accuracy"] == pytest.approx(float(np.bincount(breast.val.labels.numpy()).max()
                                                         / len(breast.val)))
    assert m["chance_balanced_accuracy"] == 0.5
    assert m["predicted_classes"] == 2 and at_baseline(m) is None
    assert m["balanced_accuracy"] > 0.56, m
    assert m["auc"] > 0.70, m


def test_test_metrics_equal_medmnists_evaluator_on_the_same_predictions(breast, retina):
    """ssl-bench's accuracy and AUC equal ``medmnist.Evaluator``'s on the same test predictions
    (binary and 5-class), whatever the predictions are."""
    from medmnist import Evaluator

    for data, flag in ((breast, "breastmnist"), (retina, "retinamnist")):
        rng = np.random.default_rng(0)
        proba = rng.dirichlet(np.ones(data.num_classes), size=len(data.test))
        ours = classification_metrics(data.test.labels.numpy(), proba, data.task, data.positive_class)
        auc, acc = Evaluator(flag, "test", root=str(MEDMNIST_ROOT)).evaluate(proba)
        assert ours["auc"] == pytest.approx(auc, abs=1e-6) and ours["accuracy"] == pytest.approx(acc, abs=1e-6)


def test_the_positive_class_comes_from_the_class_names(breast, pneumonia):
    """BreastMNIST's label 0 is "malignant": precision_pos is the malignant class's precision, not
    label 1's ("normal, benign"); PneumoniaMNIST's positive class is label 1 ("pneumonia")."""
    from ssl_bench.data import DataSplits

    assert breast.class_names[0] == "malignant" and breast.positive_class == 0
    assert pneumonia.class_names[1] == "pneumonia" and pneumonia.positive_class == 1
    names = lambda *n: DataSplits(name="x", train=breast.train, test=breast.test, task="binary-class",  # noqa: E731
                                  class_names=list(n))
    assert names("normal", "tuberculosis").positive_class == 1 and names("benign", "malignant").positive_class == 1
    assert names("no finding", "cat").positive_class == 1  # neither reads as a finding: label 1
    y = breast.test.labels.numpy()
    majority = np.tile([0.0, 1.0], (len(y), 1))  # always "normal, benign"
    m = classification_metrics(y, majority, "binary-class", breast.positive_class)
    assert m["precision_pos"] == precision_score(y, np.ones_like(y), pos_label=0, zero_division=0) == 0.0
    assert m["accuracy"] == pytest.approx(m["majority_accuracy"]) and m["predicted_classes"] == 1


def test_a_classifier_that_predicts_one_class_is_flagged(breast):
    y = breast.test.labels.numpy()
    one = classification_metrics(y, np.tile([0.2, 0.8], (len(y), 1)), "binary-class", 0)
    assert one["pred_histogram"] == [0, len(y)] and "one class" in at_baseline(one)
    good = classification_metrics(y, np.eye(2)[y] * 0.8 + 0.1, "binary-class", 0)
    assert at_baseline(good) is None and good["balanced_accuracy"] == 1.0
    # accuracy at most the majority class's and BMA at most chance, with both classes predicted: flagged too
    weak = {"accuracy": 0.70, "majority_accuracy": 0.731, "balanced_accuracy": 0.49, "chance_balanced_accuracy": 0.5,
            "predicted_classes": 2}
    assert "no better than the majority class" in at_baseline(weak)
    assert at_baseline({**weak, "balanced_accuracy": 0.6}) is None  # a minority class found: it learned something


def _write_run(root, method, seed, evals):
    d = root / f"{method}{seed}"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"recipe": "r", "method": method, "dataset": "BreastMNIST", "seed": seed,
                                                "eval": evals}))
    return d


def test_compare_marks_a_cell_at_the_majority_baseline_and_never_bolds_it(tmp_path):
    from ssl_bench.compare import compare

    base = {"majority_accuracy": 0.731, "chance_balanced_accuracy": 0.5}
    for s in (0, 1):  # "Majority" predicts one class: the highest accuracy, no better than the majority class
        _write_run(tmp_path, "Majority", s,
                   {"finetune@1": {"accuracy": 0.731, "balanced_accuracy": 0.5, "predicted_classes": 1, **base}})
        _write_run(tmp_path, "BYOL", s, {"finetune@1": {"accuracy": 0.80 + 0.01 * s, "balanced_accuracy": 0.66,
                                                        "predicted_classes": 2, **base}})
    # the highest mean of the column, but every run predicted one class: flagged, and not marked best
    _write_run(tmp_path, "Collapsed", 0,
               {"finetune@1": {"accuracy": 0.9, "balanced_accuracy": 0.5, "predicted_classes": 1, **base}})
    table, text, _ = compare([str(tmp_path)], metric="accuracy", fmt="markdown")
    assert table.loc["Collapsed", "BreastMNIST · finetune@1"] == "0.900‡ n=1"
    assert table.loc["Majority", "BreastMNIST · finetune@1"] == "0.731(.000)‡ n=2"
    assert table.loc["BYOL", "BreastMNIST · finetune@1"].startswith("**0.805")  # the best of those that learned
    assert "‡ no better than a constant prediction" in text
    table, _, _ = compare([str(tmp_path)], metric="balanced_accuracy", fmt="markdown")
    assert ("‡" in table.loc["Majority", "BreastMNIST · finetune@1"]
            and "‡" not in table.loc["BYOL", "BreastMNIST · finetune@1"])
