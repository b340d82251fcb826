"""How evaluation picks its model, checked against independent references (scikit-learn, statistics).

The linear probe's C is the arg-max of the validation AUC of scikit-learn fits made here; fine-tuning
keeps the epoch with the best validation score and reports the test metrics of that epoch's model;
the ``*_std`` of several fine-tuning seeds is the sample standard deviation.
"""

import copy
import statistics

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssl_bench.data import DataSplits
from ssl_bench.evaluate import EVALUATIONS, EvalContext
from ssl_bench.evaluate.finetune import FineTune
from ssl_bench.evaluate.linear import LinearProbe
from tests.evaluate.test_evaluate import _pixels
from tests.evaluate.test_finetune import _ctx


def _sklearn_fit(x, y, C):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(x, y)


DOCUMENTED_C_GRID = (0.01, 0.1, 1.0, 10.0)  # the linear probe's docstring and docs/recipes.md


class SpyProbe(LinearProbe):
    """LinearProbe that records the C of every fit it makes."""

    def _fit(self, ctx, C, x_tr, y_tr):
        self.fitted = getattr(self, "fitted", []) + [C]
        return super()._fit(ctx, C, x_tr, y_tr)


def test_linear_probe_picks_C_by_validation_auc(breast):
    ctx = EvalContext(data=breast, embed=_pixels)
    probe = SpyProbe()
    got = probe.run(ctx)
    assert probe.fitted == list(DOCUMENTED_C_GRID)  # the grid searched, one fit each, no refit
    (xtr, ytr), (xva, yva), (xte, yte) = (ctx.features(s) for s in ("train", "val", "test"))
    fits = {C: _sklearn_fit(xtr, ytr, C) for C in DOCUMENTED_C_GRID}
    val_auc = {C: roc_auc_score(yva, f.predict_proba(xva)[:, 1]) for C, f in fits.items()}
    train_auc = {C: roc_auc_score(ytr, f.predict_proba(xtr)[:, 1]) for C, f in fits.items()}
    best = max(val_auc, key=val_auc.get)
    # on these features the training split prefers another C: choosing on train would be caught here
    assert max(train_auc, key=train_auc.get) != best
    assert probe.chosen_C == best and probe.chosen == {"C": best}  # what results.json's eval_chosen reports
    assert got["auc"] == pytest.approx(roc_auc_score(yte, fits[best].predict_proba(xte)[:, 1]))


def _mean_of(rows: slice, cols: slice):
    """A one-number feature: the mean intensity of an image region (real, deterministic)."""
    return lambda imgs: imgs[..., rows, cols].flatten(1).float().mean(1, keepdim=True).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("dataset, region",
                         [("breast", (slice(10, 18), slice(10, 18))), ("retina", (slice(None), slice(None)))])
def test_linear_probe_ranks_C_by_val_auc_and_breaks_ties_by_balanced_accuracy(dataset, region, request):
    """On one feature every C ranks the images alike: BreastMNIST's val AUC ties at every C and the
    balanced accuracy decides; on RetinaMNIST the val AUC is best at C = 0.01 while the balanced
    accuracy is higher at the other C: the AUC decides (BMA only breaks ties)."""
    data = request.getfixturevalue(dataset)
    ctx = EvalContext(data=data, embed=_mean_of(*region))
    probe = EVALUATIONS.build({"name": "linear"})
    probe.run(ctx)
    (xtr, ytr), (xva, yva) = ctx.features("train"), ctx.features("val")
    auc, bma = {}, {}
    for C in DOCUMENTED_C_GRID:
        p = _sklearn_fit(xtr, ytr, C).predict_proba(xva)
        auc[C] = roc_auc_score(yva, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(yva, p, multi_class="ovr")
        bma[C] = balanced_accuracy_score(yva, p.argmax(1))
    if dataset == "breast":
        assert len(set(auc.values())) == 1 and len(set(bma.values())) > 1
    else:
        assert max(auc, key=auc.get) != max(bma, key=bma.get)
    assert probe.chosen_C == max(DOCUMENTED_C_GRID, key=lambda C: (auc[C], bma[C]))


def test_linear_probe_without_a_validation_split_uses_C_1(breast):
    data = DataSplits(name="B", train=breast.train, test=breast.test, task=breast.task, class_names=breast.class_names)
    ctx = EvalContext(data=data, embed=_pixels)
    probe = EVALUATIONS.build({"name": "linear"})
    got = probe.run(ctx)
    xtr, ytr = ctx.features("train")
    xte, yte = ctx.features("test")
    assert probe.chosen_C == 1.0
    assert got["auc"] == pytest.approx(roc_auc_score(yte, _sklearn_fit(xtr, ytr, 1.0).predict_proba(xte)[:, 1]))


def test_a_protocol_without_model_selection_reports_nothing_chosen(breast):
    """kNN has no hyper-parameter chosen on val: ``chosen`` is an empty dict (the run's log line and
    ``eval_chosen`` in results.json iterate over it and leave the protocol out)."""
    knn = EVALUATIONS.build({"name": "knn", "k": 5})
    knn.run(EvalContext(data=breast, embed=_pixels))
    assert knn.chosen == {}


def _fingerprint(model: torch.nn.Module) -> tuple[float, ...]:
    return tuple(float(p.detach().double().sum()) for p in model.head.parameters())


# the SGD protocol these selection tests were written on (its trajectories have val and test disagree)
SGD = dict(optimizer="sgd", schedule="cosine", weight_decay=1e-4, class_weight="none", precision="32-true",
           augment={"name": "byol", "size": 28})
REPORTED = ("accuracy", "balanced_accuracy", "auc", "precision", "f1", "precision_pos")


class SpyFineTune(FineTune):
    """FineTune whose evaluations are recorded (split, a fingerprint of the model, the metrics)."""

    def __init__(self, **kw):
        super().__init__(**{**SGD, **kw})
        self.calls: list[tuple[str, tuple, dict]] = []

    def _evaluate(self, ctx, model, split, *args, **kw):
        m = super()._evaluate(ctx, model, split, *args, **kw)
        self.calls.append((split, _fingerprint(model), copy.deepcopy(m)))
        return m


@pytest.mark.slow
def test_finetune_keeps_the_epoch_best_on_validation_and_reports_its_test_metrics(breast):
    ft = SpyFineTune(label_fraction=0.1, epochs=4, batch_size=16, lr=0.05, select_metric="auc")
    got = ft.run_seed(_ctx(breast), 0)
    during, final = ft.calls[:-1], ft.calls[-1]
    assert [c[0] for c in during] == ["val"] * 4  # one model-selection evaluation per epoch, on val only
    scores = [c[2]["auc"] for c in during]
    best = int(np.argmax(scores))
    assert len(set(scores)) > 1  # the epochs differ: which one is kept matters
    assert final[0] == "test"
    assert final[1] == during[best][1]  # the model evaluated on test is the one of the best validation epoch
    # and its test metrics are what is reported
    assert {k: got[k] for k in REPORTED} == {k: final[2][k] for k in REPORTED}
    assert got["chosen_epoch"] == best + 1  # recorded, with every epoch's validation scores
    assert [h["auc"] for h in got["val_history"]] == scores and [h["epoch"] for h in got["val_history"]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_finetune_selection_differs_from_selecting_on_test(breast):
    """The scores of the epochs on val and on test disagree about the best epoch for this seed, so a
    protocol that chose on test would report another model (the test above would then fail)."""
    ft = SpyFineTune(label_fraction=0.1, epochs=4, batch_size=16, lr=0.05, select_metric="auc")
    ctx = _ctx(breast)
    ft.run_seed(ctx, 0)
    fingerprints = [c[1] for c in ft.calls[:-1]]
    val_scores = [c[2]["auc"] for c in ft.calls[:-1]]
    # re-run the same seed and record each epoch's test score instead
    probe = SpyFineTune(label_fraction=0.1, epochs=4, batch_size=16, lr=0.05, select_metric="auc", select_split="test")
    probe.run_seed(ctx, 0)
    assert [c[1] for c in probe.calls[:-1]] == fingerprints  # same training trajectory (seeded)
    test_scores = [c[2]["auc"] for c in probe.calls[:-1]]
    assert int(np.argmax(val_scores)) != int(np.argmax(test_scores))


@pytest.mark.slow
def test_finetune_std_is_the_sample_std_over_seeds(breast):
    res = EVALUATIONS.build({"name": "finetune", "label_fraction": 0.2, "epochs": 2, "batch_size": 32, "lr": 0.05,
                             "seeds": 3}).run(_ctx(breast))
    assert len(res["per_seed"]) == 3
    for k in ("auc", "accuracy", "balanced_accuracy"):
        vals = [m[k] for m in res["per_seed"]]
        assert res[k] == pytest.approx(statistics.mean(vals))
        assert res[f"{k}_std"] == pytest.approx(statistics.stdev(vals))
        assert statistics.stdev(vals) != pytest.approx(statistics.pstdev(vals))


@pytest.mark.slow
def test_finetune_from_scratch_starts_from_an_untrained_encoder(breast):
    asked = []
    ctx = _ctx(breast)
    make = ctx.encoder

    def encoder(random: bool = False):
        asked.append(random)
        return make(random)

    ctx.encoder = encoder
    ev = EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32,
                            "from_scratch": True})
    ev.run(ctx)
    assert asked == [True] and ev.key == "finetune_scratch@0.1"
    EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32}).run(ctx)
    assert asked == [True, False]


@pytest.mark.slow
def test_finetune_without_a_defined_validation_score_keeps_the_last_epoch(breast):
    """A validation split of one class has no AUC (NaN) at any epoch: there is nothing to select on,
    so fine-tuning keeps the last epoch (the model as trained) and says so, instead of failing."""
    from dataclasses import replace

    from ssl_bench.data import ImageSet

    benign = torch.nonzero(breast.val.labels == 1).flatten()
    one_class = replace(breast, val=ImageSet(breast.val.images[benign], breast.val.labels[benign], None))
    ft = SpyFineTune(label_fraction=0.1, epochs=3, batch_size=16, lr=0.05, select_metric="auc")
    with pytest.warns(UserWarning, match="validation auc is undefined at every epoch.*keeping the last epoch"):
        got = ft.run_seed(_ctx(one_class), 0)
    during, final = ft.calls[:-1], ft.calls[-1]
    assert all(np.isnan(c[2]["auc"]) for c in during) and len({c[1] for c in during}) == 3
    assert final[1] == during[-1][1] and {k: got[k] for k in REPORTED} == {k: final[2][k] for k in REPORTED}
    assert got["chosen_epoch"] == 3


@pytest.mark.slow
def test_finetune_learning_rate_schedules_over_its_steps(breast, monkeypatch):
    """multistep (the default, MedMNIST's): lr until 50 % of the T = ⌊n / batch⌋ · epochs optimizer
    steps, × 0.1 until 75 %, × 0.01 after, with Adam and no weight decay; cosine (with SGD): lr_s =
    lr · (1 + cos(π s / T)) / 2 (55 labelled images, batch 32: one step per epoch; the last partial
    batch is dropped)."""
    import math

    lrs, settings = [], []

    def recording(base):
        class Recording(base):
            def __init__(self, params, **kw):
                super().__init__(params, **kw)
                settings.append((base.__name__, {k: self.defaults.get(k) for k in ("momentum", "weight_decay")}))

            def step(self, closure=None):
                lrs.append(self.param_groups[0]["lr"])
                return super().step(closure)

        return Recording

    monkeypatch.setattr(torch.optim, "SGD", recording(torch.optim.SGD))
    monkeypatch.setattr(torch.optim, "Adam", recording(torch.optim.Adam))
    # 109 images: 3 steps an epoch
    FineTune(label_fraction=0.2, epochs=4, batch_size=32, lr=0.05).run_seed(_ctx(breast), 0)
    assert lrs == pytest.approx([0.05] * 6 + [0.005] * 3 + [0.0005] * 3)
    assert settings == [("Adam", {"momentum": None, "weight_decay": 0.0})]
    lrs.clear()
    FineTune(label_fraction=0.1, epochs=3, batch_size=32, lr=0.05, optimizer="sgd", schedule="cosine",
             weight_decay=1e-4).run_seed(_ctx(breast), 0)
    total = (55 // 32) * 3
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * s / total)) / 2 for s in range(total)])
    assert settings[-1] == ("SGD", {"momentum": 0.9, "weight_decay": 1e-4})
    lrs.clear()
    # batches of two are trained on (BatchNorm needs two): 5 labelled images (1 % of each class), batch 2
    FineTune(label_fraction=0.01, epochs=1, batch_size=2, lr=0.05).run_seed(_ctx(breast), 0)
    assert len(lrs) == 2


@pytest.mark.slow
def test_finetune_ties_on_validation_keep_the_earlier_epoch(breast):
    """Epochs that score alike on val (here every epoch: the scores are replaced by one value) keep the
    earliest of them, as documented."""

    class Tied(SpyFineTune):
        def _evaluate(self, ctx, model, split, *args, **kw):
            m = super()._evaluate(ctx, model, split, *args, **kw)
            return {**m, "auc": 0.75} if split == "val" else m

    ft = Tied(label_fraction=0.1, epochs=3, batch_size=16, lr=0.05, select_metric="auc")
    ft.run_seed(_ctx(breast), 0)
    during, final = ft.calls[:-1], ft.calls[-1]
    assert len({c[1] for c in during}) == 3 and final[1] == during[0][1]
