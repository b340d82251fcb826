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
    "finetune_medmnist": {"label_fraction": 0.2, "epochs": 1, "batch_size": 64},
    "transfer": {"data": {"name": "medmnist", "flag": "breastmnist"}, "protocol": {"name": "knn"}},
}
FAST_OPTIONS = {"tsne": {"max_iter": 250}}  # early-exaggeration phase only: a smoke test, no AUC claim


@pytest.mark.slow
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
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8],
                      [0.2, 0.2, 0.6]])
    m = classification_metrics(y, proba, "multi-class")
    assert m["accuracy"] == pytest.approx(5 / 6)
    from sklearn.metrics import f1_score, precision_score

    pred = proba.argmax(1)
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert "precision_pos" not in m
    b = classification_metrics(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
                               "binary-class")
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


@pytest.mark.slow
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


def test_knn_softmax_weights_by_hand_and_its_bounds(breast):
    """``weights: softmax``: each of the k cosine-nearest training images votes exp(cos / τ) for its
    class (InstDisc), written out here with numpy; k = 1 and k = the training split's size are accepted."""
    from ssl_bench.errors import SSLBenchError

    ctx = EvalContext(data=breast, embed=_pixels)
    m = EVALUATIONS.build({"name": "knn", "k": 5, "weights": "softmax", "temperature": 0.1}).run(ctx)
    (xtr, ytr), (xte, yte) = ctx.features("train"), ctx.features("test")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(xte) @ unit(xtr).T
    nearest = np.argsort(-cos, axis=1)[:, :5]
    votes = np.exp(np.take_along_axis(cos, nearest, 1) / 0.1)
    score = np.stack([(votes * (ytr.reshape(-1)[nearest] == c)).sum(1) for c in (0, 1)], 1)
    assert m["auc"] == pytest.approx(roc_auc_score(yte, score[:, 1] / score.sum(1)))
    for k in (0, -1):
        with pytest.raises(SSLBenchError, match="evaluate.knn.k must be ≥ 1"):
            EVALUATIONS.build({"name": "knn", "k": k})
    EVALUATIONS.build({"name": "knn", "k": 1}).check_data(breast)
    EVALUATIONS.build({"name": "knn", "k": len(breast.train)}).check_data(breast)
    with pytest.raises(SSLBenchError, match="larger than the train split"):
        EVALUATIONS.build({"name": "knn", "k": len(breast.train) + 1}).check_data(breast)


def test_probes_with_a_class_or_label_absent_from_training(retina):
    """A class absent from the training split gets probability 0 (the columns stay the dataset's
    classes: the linear probe against scikit-learn directly); a multi-label label that is constant in
    training gets probability 0 from kNN, and the other labels' AUC is unchanged."""
    import dataclasses

    from ssl_bench.data import DataSplits, ImageSet
    from ssl_bench.evaluate.metrics import full_proba
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keep = retina.train.labels != 4
    data = dataclasses.replace(retina, train=ImageSet(retina.train.images[keep], retina.train.labels[keep], None))
    ctx = EvalContext(data=data, embed=_pixels)
    m = EVALUATIONS.build({"name": "linear", "C": 1.0}).run(ctx)
    (xtr, ytr), (xte, yte) = ctx.features("train"), ctx.features("test")
    p = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(xtr, ytr).predict_proba(xte)
    p5 = np.concatenate([p, np.zeros((len(p), 1))], 1)  # class 4 never seen: probability 0
    assert m["auc"] == pytest.approx(np.mean([roc_auc_score(yte == c, p5[:, c]) for c in range(5)]))
    assert np.allclose(full_proba(p, np.arange(4), 5), p5)

    def ml(s, constant):
        y = torch.stack([s.labels >= t for t in (1, 2)], 1).float()
        return ImageSet(s.images, torch.cat([y, torch.full((len(y), 1), float(constant))], 1))

    three = DataSplits(name="R", train=ml(retina.train, 0), val=ml(retina.val, 0), test=ml(retina.test, 0),
                       task="multi-label")
    two = DataSplits(name="R", train=ImageSet(retina.train.images, three.train.labels[:, :2]),
                     test=ImageSet(retina.test.images, three.test.labels[:, :2]), task="multi-label")
    with pytest.warns(UserWarning, match="skips 1 label"):
        m3 = EVALUATIONS.build({"name": "knn", "k": 10}).run(EvalContext(data=three, embed=_pixels))
    m2 = EVALUATIONS.build({"name": "knn", "k": 10}).run(EvalContext(data=two, embed=_pixels))
    assert m3["auc"] == pytest.approx(m2["auc"])


def test_metrics_at_their_edges_against_scikit_learn():
    """A class never predicted scores precision 0 (not 1) in the macro averages and in the positive
    class's precision; multi-label: a probability of exactly 0.5 is a positive, accuracy is the mean
    over every (image, label), a label with one positive is in the AUC, and nothing warns when every
    label has both outcomes."""
    import warnings

    from sklearn.metrics import f1_score, precision_score

    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1],
                      [0.6, 0.3, 0.1]])
    m = classification_metrics(y, proba, "multi-class")  # class 2 never predicted
    pred = proba.argmax(1)
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="macro", zero_division=0))
    assert m["precision"] != pytest.approx(precision_score(y, pred, average="macro", zero_division=1))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    # a class neither present nor predicted (3 columns, labels 0 and 1 only): its F1 is 0 in the average
    m01 = classification_metrics(y[[0, 1, 4, 5]], proba[[0, 1, 4, 5]], "multi-class")
    assert m01["f1"] == pytest.approx(f1_score(y[[0, 1, 4, 5]], pred[[0, 1, 4, 5]], labels=[0, 1, 2], average="macro",
                                               zero_division=0))
    assert m01["f1"] == pytest.approx(2 / 3)
    b = classification_metrics(np.array([0, 1, 1, 0]), np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.8, 0.2]]),
                               "binary-class")
    assert b["precision_pos"] == 0.0  # nothing predicted positive

    yl = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])  # label 2: one positive
    pl = np.array([[0.5, 0.2, 0.4], [0.3, 0.8, 0.2], [0.6, 0.4, 0.3], [0.1, 0.3, 0.2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ml = classification_metrics(yl, pl, "multi-label")
    pred = (pl >= 0.5).astype(int)
    assert pred[0, 0] == 1 and ml["accuracy"] == pytest.approx((pred == yl).mean()) == pytest.approx(10 / 12)
    assert ml["auc"] == pytest.approx(np.mean([roc_auc_score(yl[:, j], pl[:, j]) for j in range(3)]))
    assert ml["precision"] == pytest.approx(precision_score(yl, pred, average="macro", zero_division=0))
    assert ml["f1"] == pytest.approx(f1_score(yl, pred, average="macro", zero_division=0))
    assert ml["precision"] != pytest.approx(precision_score(yl, pred, average="macro", zero_division=1))
    y0, p0 = np.concatenate([yl, np.zeros((4, 1), int)], 1), np.concatenate([pl, np.full((4, 1), 0.1)], 1)
    with pytest.warns(UserWarning, match="skips 1 label"):  # a label neither present nor predicted
        ml0 = classification_metrics(y0, p0, "multi-label")
    assert ml0["f1"] == pytest.approx(f1_score(y0, (p0 >= 0.5).astype(int), average="macro",
                                               zero_division=0)) == pytest.approx(ml["f1"] * 3 / 4)
