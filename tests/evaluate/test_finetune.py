"""Semi-supervised fine-tuning on real BreastMNIST / RetinaMNIST."""

import numpy as np
import pytest
import torch

from ssl_bench.data import DataSplits, ImageSet
from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS, EvalContext
from ssl_bench.evaluate.finetune import stratified_subset
from tests.helpers import eval_context


def test_stratified_subset_is_exactly_ten_percent_of_each_class(breast, retina):
    idx = stratified_subset(breast.train.labels, 0.1, seed=0)
    counts = torch.bincount(breast.train.labels[idx]).tolist()
    assert counts == [round(0.1 * 147), round(0.1 * 399)]  # 15 malignant, 40 benign
    assert len(set(idx.tolist())) == len(idx)
    r = stratified_subset(retina.train.labels, 0.1, seed=0)
    assert torch.bincount(retina.train.labels[r], minlength=5).tolist() == [49, 13, 21, 19, 7]  # every grade present
    assert not torch.equal(r, stratified_subset(retina.train.labels, 0.1, seed=1))  # another subset per seed
    assert torch.equal(r, stratified_subset(retina.train.labels, 0.1, seed=0))
    assert len(stratified_subset(retina.train.labels, 1.0, seed=0)) == len(retina.train)


def _ctx(data):
    """The evaluation context `ssl-bench run` builds, around a seeded (untrained) BYOL ResNet-18."""
    return eval_context(data)


@pytest.mark.slow
def test_finetune_is_seeded_and_deterministic(breast):
    ft = EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 2, "batch_size": 32})
    ctx = _ctx(breast)
    a, b, c = ft.run_seed(ctx, 0), ft.run_seed(ctx, 0), ft.run_seed(ctx, 1)
    assert a == b  # same seed on CPU: bit-identical metrics
    assert a != c  # another label subset and head
    assert set(a) == {"accuracy", "balanced_accuracy", "auc", "precision", "f1", "precision_pos", "positive_class",
                      "majority_accuracy",
                      "chance_balanced_accuracy", "pred_histogram", "predicted_classes", "chosen_epoch", "val_history"}
    assert a["positive_class"] == 0  # BreastMNIST: label 0 is "malignant"
    assert sum(a["pred_histogram"]) == len(breast.test) and len(a["val_history"]) == 2
    res = EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32,
                             "seeds": 2}).run(ctx)
    assert len(res["per_seed"]) == 2 and res["per_seed"][0] != res["per_seed"][1]
    assert res["auc"] == pytest.approx(np.mean([m["auc"] for m in res["per_seed"]]))
    assert ft.key == "finetune@0.1"


@pytest.mark.slow
def test_multilabel_toy_from_real_images_reports_per_label_auc(retina):
    """DR grades as 3 cumulative binary labels (grade ≥ 1, ≥ 2, ≥ 3): a real multi-label task."""

    def ml(s):
        y = torch.stack([s.labels >= t for t in (1, 2, 3)], 1).float()
        return ImageSet(s.images, y)

    data = DataSplits(name="Retina-ML", train=ml(retina.train), val=ml(retina.val), test=ml(retina.test),
                      task="multi-label", class_names=["≥1", "≥2", "≥3"])
    pixels = lambda im: (im.flatten(1).float() / 255  # noqa: E731
                         @ torch.randn(im[0].numel(), 32, generator=torch.Generator().manual_seed(0))).numpy()
    ctx = EvalContext(data=data, embed=pixels)
    for name in ("linear", "knn"):
        m = EVALUATIONS.build({"name": name}).run(ctx)
        assert 0.5 < m["auc"] < 1.0, (name, m)
    ctx = _ctx(data)
    from ssl_bench.evaluate import extract_features
    from ssl_bench.evaluate.finetune import FineTune

    class Kept(FineTune):  # keeps the model whose test metrics are reported
        def _evaluate(self, ctx, model, split, *args, **kw):
            self.model = model
            return super()._evaluate(ctx, model, split, *args, **kw)

    ft = Kept(label_fraction=0.2, epochs=1, batch_size=64, precision="32-true")
    m = ft.run(ctx)
    # independently: sigmoid of the kept model's logits on the test images, AUC per label, averaged
    from sklearn.metrics import roc_auc_score

    logits = extract_features(ft.model, data.test.images, ctx.eval_view, torch.device("cpu"))
    proba, y = 1 / (1 + np.exp(-logits)), data.test.labels.numpy()
    assert proba.shape == y.shape == (len(data.test), 3)
    assert m["auc"] == pytest.approx(np.mean([roc_auc_score(y[:, j], proba[:, j]) for j in range(3)]), abs=1e-4)


def test_stratified_subset_of_multilabel_rows_and_of_rare_classes(retina, breast):
    """Multi-label rows are stratified by their whole label vector (RetinaMNIST grades as cumulative
    labels: 4 distinct vectors, grades 3 and 4 share one); a class too small for the fraction keeps one image."""
    y = torch.stack([retina.train.labels >= t for t in (1, 2, 3)], 1).float()
    idx = stratified_subset(y, 0.1, seed=0)
    vectors, counts = torch.unique(y, dim=0, return_counts=True)
    chosen = {tuple(v.tolist()): int((y[idx] == v).all(1).sum()) for v in vectors}
    assert chosen == {tuple(v.tolist()): round(0.1 * int(n)) for v, n in zip(vectors, counts)} and len(chosen) == 4
    assert torch.bincount(breast.train.labels[stratified_subset(breast.train.labels, 0.01, seed=0)]).tolist() == [1, 4]


@pytest.mark.slow
def test_finetune_trains_on_its_augment_block_never_the_pretraining_view(breast):
    """Fine-tuning trains on its own views — ``augment``, else horizontal flips (``finetune``) or none
    (``finetune_medmnist``) — never the context's pre-training view (BYOL's crops and colour jitter at
    28 px kept a from-scratch ResNet-18 at chance).  ``*_std`` is there only when there are several seeds."""
    import dataclasses
    import statistics

    def refuse(x, g):
        raise AssertionError("fine-tuning trained on the pre-training view")

    ctx = dataclasses.replace(_ctx(breast), train_view=refuse)
    res = EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32,
                             "augment": {"name": "none"}}).run(ctx)
    assert res["augment"] == {"name": "none"} and not any(k.endswith("_std") for k in res)
    res = EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32,
                             "seeds": 2}).run(ctx)
    assert res["augment"] == {"name": "flip"}
    assert res["auc_std"] == pytest.approx(statistics.stdev([m["auc"] for m in res["per_seed"]]))
    assert res["pred_histogram"] == [sum(v) for v in zip(*(m["pred_histogram"] for m in res["per_seed"]))]
    assert EVALUATIONS.build({"name": "finetune_medmnist"}).views() == {"name": "none"}
    with pytest.raises(SSLBenchError, match="evaluate.finetune.augment must name an augmentation set"):
        EVALUATIONS.build({"name": "finetune", "augment": {"rotation": 0}})
    for bad in (0.0, 1.01, -0.5):
        with pytest.raises(SSLBenchError, match=r"evaluate.finetune.label_fraction must be in \(0, 1\]"):
            EVALUATIONS.build({"name": "finetune", "label_fraction": bad})
    with pytest.raises(SSLBenchError, match=r"evaluate.finetune.milestones are fractions"):
        EVALUATIONS.build({"name": "finetune", "milestones": [0.5, 1.5]})


def test_flip_views_flip_the_whole_image_and_nothing_else(breast):
    """``flip``: each image is itself or its mirror (no crop, no colour change), about half of each."""
    from ssl_bench.augment import AUGMENTATIONS

    x = breast.train.images[:256]
    out = AUGMENTATIONS.build({"name": "flip"}).view1(x, torch.Generator().manual_seed(0))
    ref = x.float() / 255
    same = (out - ref).abs().flatten(1).amax(1) < 1e-6
    mirrored = (out - ref.flip(-1)).abs().flatten(1).amax(1) < 1e-6
    assert bool((same | mirrored).all()) and 0.35 < float(mirrored.float().mean()) < 0.65
    both = AUGMENTATIONS.build({"name": "flip", "hflip": 0.0, "vflip": 1.0}).view1(x, torch.Generator().manual_seed(0))
    assert torch.allclose(both, ref.flip(-2), atol=1e-6)


def test_balanced_class_weights_are_scikit_learns(breast, retina):
    from sklearn.utils.class_weight import compute_class_weight

    from ssl_bench.evaluate.finetune import class_weights

    for data in (breast, retina):
        y = data.train.labels
        ours = class_weights(y, data.num_classes)
        ref = compute_class_weight("balanced", classes=np.arange(data.num_classes), y=y.numpy())
        assert np.allclose(ours.numpy(), ref)
    assert class_weights(torch.tensor([0, 0, 2]), 3).tolist() == pytest.approx([0.75, 0.0, 1.5])  # an absent class: 0


@pytest.mark.slow
def test_the_weighted_loss_is_used_when_balanced(breast, monkeypatch):
    """``class_weight: balanced`` passes n / (C·n_c) of the fine-tuning labels to the cross-entropy;
    ``none`` passes none."""
    import ssl_bench.evaluate.finetune as ftm

    seen = []
    real = ftm.F.cross_entropy
    monkeypatch.setattr(ftm.F, "cross_entropy",
                        lambda logits, y, weight=None: seen.append(weight) or real(logits, y, weight=weight))
    ctx = _ctx(breast)
    EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32}).run_seed(ctx, 0)
    assert seen[0].tolist() == pytest.approx([55 / (2 * 15), 55 / (2 * 40)])  # 15 malignant, 40 benign
    seen.clear()
    EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32,
                       "class_weight": "none"}).run_seed(ctx, 0)
    assert seen == [None]
