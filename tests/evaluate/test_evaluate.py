import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ssl_bench.evaluate import EVALUATIONS, EvalContext
from ssl_bench.evaluate.metrics import classification_metrics


def _pixels(images: torch.Tensor) -> np.ndarray:
    """32 fixed random projections of the raw pixels: a cheap, real, deterministic feature."""
    x = images.flatten(1).float() / 255.0
    proj = torch.randn(x.shape[1], 32, generator=torch.Generator().manual_seed(0))
    return (x @ proj).numpy()


TRAINING_PROTOCOL_OPTIONS = {
    "finetune": {"label_fraction": 0.2, "epochs": 1, "batch_size": 64},
    "transfer": {"data": {"name": "medmnist", "flag": "breastmnist"}, "protocol": {"name": "knn"}},
}
FAST_OPTIONS = {"tsne": {"max_iter": 250}}  # early-exaggeration phase only: a smoke test, no AUC claim


@pytest.mark.parametrize("name", EVALUATIONS.names())
def test_every_evaluation_on_real_data(name, breast, retina):
    from tests.evaluate.test_finetune import _ctx

    for data in (breast, retina):
        ev = EVALUATIONS.build({"name": name, **TRAINING_PROTOCOL_OPTIONS.get(name, {}), **FAST_OPTIONS.get(name, {})})
        ctx = _ctx(data)
        ctx.embed = ctx.project = _pixels  # project: the head output (map protocols)
        m = ev.run(ctx)
        assert {"accuracy", "balanced_accuracy", "auc"} <= set(m)
        assert m["balanced_accuracy"] > 0 and m["auc"] != 0.5  # not a constant predictor
        if name not in TRAINING_PROTOCOL_OPTIONS and name not in FAST_OPTIONS:
            # raw pixels carry real signal on both datasets: better than chance, not perfect
            assert 0.55 < m["auc"] < 0.99, m


def test_knn_on_pixels_equals_sklearn_directly(breast):
    from sklearn.neighbors import KNeighborsClassifier

    ctx = EvalContext(data=breast, embed=_pixels)
    m = EVALUATIONS.build({"name": "knn", "k": 5}).run(ctx)
    xtr, ytr = ctx.features("train")
    xte, yte = ctx.features("test")
    knn = KNeighborsClassifier(5, metric="cosine").fit(xtr, ytr)
    assert m["accuracy"] == pytest.approx((knn.predict(xte) == yte).mean())
    assert m["auc"] == pytest.approx(roc_auc_score(yte, knn.predict_proba(xte)[:, 1]))


def test_metrics_multiclass_with_absent_class_and_multilabel():
    y = np.array([0, 1, 1, 0, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    m = classification_metrics(y, proba, "multi-class")
    assert m["accuracy"] == pytest.approx(5 / 6)
    from sklearn.metrics import f1_score, precision_score

    pred = proba.argmax(1)
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert "precision_pos" not in m
    b = classification_metrics(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]), "binary-class")
    assert b["precision_pos"] == pytest.approx(0.5) and b["accuracy"] == pytest.approx(0.5)
    assert m["auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    # class 2 absent from y: AUC averages one-vs-rest over present classes instead of failing
    m2 = classification_metrics(y[:4], proba[:4], "multi-class")
    assert m2["auc"] == pytest.approx(np.mean([roc_auc_score(y[:4] == c, proba[:4, c]) for c in (0, 1)]))
    yl = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    pl = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.2], [0.6, 0.4, 0.3], [0.1, 0.3, 0.2]])
    with pytest.warns(UserWarning, match="skips 1 label"):
        ml = classification_metrics(yl, pl, "multi-label")
    assert ml["auc"] == pytest.approx(np.mean([roc_auc_score(yl[:, j], pl[:, j]) for j in (0, 1)]))


def test_context_of_a_trained_objective_gives_its_encoder_and_the_recipe_views(breast):
    """``encoder()`` is a copy of the pre-trained backbone (its features are the context's own),
    ``encoder(random=True)`` an untrained one; ``view_of(block)`` is view 1 of that augmentation set,
    normalised as in pre-training, at the evaluation size unless the block names its own."""
    from ssl_bench.augment import AUGMENTATIONS
    from ssl_bench.data.normalize import Normalize
    from ssl_bench.evaluate.base import extract_features
    from tests.helpers import eval_context

    ctx = eval_context(breast, view_size=24)
    imgs, cpu = breast.test.images[:16], torch.device("cpu")
    np.testing.assert_array_equal(extract_features(ctx.encoder(), imgs, ctx.eval_view, cpu), ctx.embed(imgs))
    assert not np.allclose(extract_features(ctx.encoder(random=True), imgs, ctx.eval_view, cpu), ctx.embed(imgs))
    x, norm = breast.train.images[:8], Normalize.fit(breast.train.images)
    block = {"name": "byol", "rotation": 0}
    view = ctx.view_of(block)(x, torch.Generator().manual_seed(0))
    expected = norm(AUGMENTATIONS.build({**block, "size": 24}).view1(x, torch.Generator().manual_seed(0)))
    assert view.shape == (8, 1, 24, 24)
    torch.testing.assert_close(view, expected)
    assert ctx.view_of({**block, "size": 16})(x, torch.Generator().manual_seed(0)).shape == (8, 1, 16, 16)
