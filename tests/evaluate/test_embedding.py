"""Map metrics (kNN k = 15, silhouette), the scatter PNG and the t-SNE baseline on real BreastMNIST."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier

from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS, EvalContext
from ssl_bench.scatter import point_style, scatter_embedding


def _pca2(data):
    """A real 2-D map: PCA of the training pixels, applied to any images (parametric, like t-SimCNE)."""
    pca = PCA(2, random_state=0).fit(data.train.images.flatten(1).float().numpy() / 255)
    return lambda imgs: pca.transform(imgs.flatten(1).float().numpy() / 255)


def _pixels(imgs):
    return imgs.flatten(1).float().numpy() / 255


@pytest.mark.slow
def test_knn_and_silhouette_equal_sklearn_on_the_same_arrays(breast, tmp_path):
    ctx = EvalContext(data=breast, embed=_pixels, project=_pca2(breast), out_dir=tmp_path)
    ev = EVALUATIONS.build({"name": "embedding"})
    m = ev.run(ctx)
    z_tr, y_tr = ctx.projections("train")
    z_te, y_te = ctx.projections("test")
    assert z_tr.shape == (546, 2) and z_te.shape == (156, 2)
    knn = KNeighborsClassifier(15).fit(z_tr, y_tr)
    assert m["accuracy"] == pytest.approx((knn.predict(z_te) == y_te).mean())
    z, y = np.concatenate([z_tr, z_te]), np.concatenate([y_tr, y_te])
    assert m["silhouette"] == pytest.approx(silhouette_score(z, y))
    f_tr, f_te = _pixels(breast.train.images), _pixels(breast.test.images)
    assert m["knn_accuracy_features"] == pytest.approx(
        (KNeighborsClassifier(15).fit(f_tr, y_tr).predict(f_te) == y_te).mean())
    assert m["dim"] == 2
    # a seeded subsample above silhouette_samples: scikit-learn's own sampling, reproducible
    sub = EVALUATIONS.build({"name": "embedding", "silhouette_samples": 300, "seed": 3, "plot": False})
    sub_m = sub.run(EvalContext(data=breast, embed=_pixels, project=_pca2(breast)))
    assert sub_m["silhouette"] == pytest.approx(silhouette_score(z, y, sample_size=300, random_state=3))
    # files in the run directory: every embedded image once, and the scatter plot
    csv = pd.read_csv(tmp_path / "embedding.csv")
    assert len(csv) == 702 and list(csv.columns) == ["split", "index", "label", "x", "y"]
    np.testing.assert_allclose(csv[csv.split == "test"][["x", "y"]].to_numpy(), z_te, rtol=1e-6, atol=1e-6)
    assert (tmp_path / "embedding.png").stat().st_size > 10_000


def test_map_metrics_refuse_multilabel_tasks(retina):
    from ssl_bench.evaluate.embedding import map_metrics

    z = np.zeros((4, 2))
    with pytest.raises(SSLBenchError, match="multi-label"):
        map_metrics(z, np.zeros((4, 3)), z, np.zeros((4, 3)), "multi-label", 3)


@pytest.mark.slow
def test_scatter_adapts_to_the_number_of_points_and_draws_thumbnails(retina, tmp_path):
    small, large = point_style(500), point_style(100_000)
    assert small[0] > large[0] and small[1] > large[1] and large[0] > 0 and large[1] >= 0.2
    xy = _pca2(retina)(retina.train.images)
    labels = retina.train.labels.numpy()
    out = scatter_embedding(xy, labels, tmp_path / "map.png", retina.class_names, images=retina.train.images,
                            thumbnails=6)
    plain = scatter_embedding(xy, labels, tmp_path / "plain.png", retina.class_names)
    assert out.stat().st_size > plain.stat().st_size > 10_000  # the thumbnails are real image content
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.slow
def test_tsne_baseline_of_pixels(breast, tmp_path):
    from tests.evaluate.test_evaluate import _pixels as projected

    ctx = EvalContext(data=breast, embed=projected, out_dir=tmp_path)  # features unlike the pixels
    ev = EVALUATIONS.build({"name": "tsne", "input": "pixels", "max_iter": 250})
    m = ev.run(ctx)
    assert m["knn_accuracy_pixels"] == pytest.approx(
        (KNeighborsClassifier(15).fit(_pixels(breast.train.images), breast.train.labels)
         .predict(_pixels(breast.test.images))
         == breast.test.labels.numpy()).mean()
    )
    assert ev.key == "tsne@pixels" and ev.xy.shape == (702, 2) and np.isfinite(ev.xy).all()
    y = np.concatenate([breast.train.labels.numpy(), breast.test.labels.numpy()])
    assert m["silhouette"] == pytest.approx(silhouette_score(ev.xy, y))
    knn = KNeighborsClassifier(15).fit(ev.xy[:546], y[:546])
    assert m["accuracy"] == pytest.approx((knn.predict(ev.xy[546:]) == y[546:]).mean())
    assert (tmp_path / "tsne_pixels.png").is_file()
    with pytest.raises(SSLBenchError, match="evaluate.tsne"):
        EVALUATIONS.build({"name": "tsne", "perplexity": 0})
    with pytest.raises(SSLBenchError, match="head output"):
        EVALUATIONS.build({"name": "embedding"}).run(EvalContext(data=breast, embed=_pixels))


def _capture_scatter(monkeypatch):
    """Record the arguments of every scatter plot the protocols draw (and still draw it)."""
    import ssl_bench.scatter

    calls, real = [], ssl_bench.scatter.scatter_embedding

    def spy(xy, labels, out, class_names=(), title=None, images=None, thumbnails=0, seed=0, splits=None):
        calls.append({"n": len(xy), "title": title, "images": images, "splits": splits})
        return real(xy, labels, out, class_names, title, images, thumbnails, seed, splits)

    monkeypatch.setattr(ssl_bench.scatter, "scatter_embedding", spy)
    return calls


@pytest.mark.slow
def test_map_files_and_plots_follow_the_protocol(breast, tmp_path, monkeypatch):
    """The split protocol plots train + test with their own images (thumbnails) and split names; the
    poster protocol plots its 90 / 10 points, without thumbnails (they are not the split images),
    writes every split to embedding.csv; ``plot: false`` and maps beyond 2-D draw no PNG."""
    calls = _capture_scatter(monkeypatch)
    ctx = EvalContext(data=breast, embed=_pixels, project=_pca2(breast), out_dir=tmp_path / "split")
    (tmp_path / "split").mkdir()
    EVALUATIONS.build({"name": "embedding", "thumbnails": 4}).run(ctx)
    [c] = calls
    assert torch.equal(c["images"], torch.cat([breast.train.images, breast.test.images]))
    assert c["splits"] == ["train"] * 546 + ["test"] * 156 and "702 images (546 train, 156 test)" in c["title"]
    EVALUATIONS.build({"name": "embedding"}).run(ctx)
    assert calls[1]["images"] is None  # no thumbnails: no copy of the images

    calls.clear()
    poster = EvalContext(data=breast, embed=_pixels, project=_pca2(breast), out_dir=tmp_path / "poster")
    (tmp_path / "poster").mkdir()
    EVALUATIONS.build({"name": "embedding", "protocol": "poster", "thumbnails": 4}).run(poster)
    [c] = calls
    assert c["images"] is None and c["splits"] == ["kNN reference"] * 702 + ["kNN query"] * 78
    assert ("780 images (702 kNN reference, 78 kNN query)" in c["title"]
            and (tmp_path / "poster" / "embedding.png").is_file())
    csv = pd.read_csv(tmp_path / "poster" / "embedding.csv")
    assert csv.groupby("split").size().to_dict() == {"test": 156, "train": 546, "val": 78}

    for protocol in ("split", "poster"):
        out = tmp_path / f"quiet_{protocol}"
        out.mkdir()
        ev = EVALUATIONS.build({"name": "embedding", "protocol": protocol, "plot": False})
        ev.run(EvalContext(data=breast, embed=_pixels, project=_pca2(breast), out_dir=out))
        assert (out / "embedding.csv").is_file() and not (out / "embedding.png").exists()
        assert ev.files["csv"] == out / "embedding.csv"
        out3 = tmp_path / f"three_{protocol}"
        out3.mkdir()
        three = PCA(3, random_state=0).fit(_pixels(breast.train.images))
        ev = EVALUATIONS.build({"name": "embedding", "protocol": protocol})
        m = ev.run(EvalContext(data=breast, embed=_pixels, project=lambda im: three.transform(_pixels(im)),
                               out_dir=out3))
        assert m["dim"] == 3 and not (out3 / "embedding.png").exists()
        assert list(pd.read_csv(out3 / "embedding.csv").columns) == ["split", "index", "label", "z0", "z1", "z2"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # the last 1,000 images lack a class
def test_embedding_frame_of_unlabelled_images_and_the_documented_defaults(ham):
    """Images without labels get label -1; ``map_metrics`` and ``knn_accuracy`` default to the t-SimCNE
    protocol (k = 15, silhouette on a seeded sample of 10,000 points, seed 0) on real HAM10000 maps."""
    from ssl_bench.evaluate.embedding import embedding_frame, knn_accuracy, map_metrics

    df = embedding_frame({"test": (np.zeros((3, 2)), np.array([]))})
    assert df["label"].tolist() == [-1, -1, -1]
    # ssl-bench embed of multi-label data
    multi = embedding_frame({"test": (np.zeros((2, 2)), np.array([[1, 0, 1], [0, 1, 1]]))})
    assert multi["label"].tolist() == [1, 0]  # the first label's value
    images = torch.cat([ham.train.images, ham.val.images, ham.test.images])[:10_001]
    labels = torch.cat([ham.train.labels, ham.val.labels, ham.test.labels])[:10_001].numpy()
    xy = PCA(2, random_state=0).fit_transform(_pixels(images))
    tr, te = slice(0, 9_001), slice(9_001, None)  # 10,001 points: one more than the silhouette sample
    m = map_metrics(xy[tr], labels[tr], xy[te], labels[te], "multi-class", 7)
    assert m["silhouette"] == pytest.approx(silhouette_score(xy, labels, sample_size=10_000, random_state=0))
    assert m["silhouette"] != pytest.approx(silhouette_score(xy, labels, sample_size=10_000, random_state=1))
    knn = KNeighborsClassifier(15).fit(xy[tr], labels[tr])
    assert m["accuracy"] == pytest.approx((knn.predict(xy[te]) == labels[te]).mean())
    assert knn_accuracy(xy[tr], labels[tr], xy[te], labels[te]) == m["accuracy"]
    with pytest.raises(SSLBenchError, match="k must be ≥ 1"):
        EVALUATIONS.build({"name": "embedding", "k": 0})
    with pytest.raises(SSLBenchError, match="silhouette_samples must be ≥ 2"):
        EVALUATIONS.build({"name": "embedding", "silhouette_samples": 1})
    EVALUATIONS.build({"name": "embedding", "k": 1, "silhouette_samples": 2})  # the smallest accepted


@pytest.mark.slow
def test_tsne_defaults_and_small_inputs_against_scikit_learn(breast):
    """``tsne_2d`` is PCA to 50 dimensions then scikit-learn's t-SNE with perplexity 30, 1,000
    iterations, PCA init and seed 0; with few points the perplexity is lowered to (N − 1) / 3."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    from ssl_bench.evaluate.tsne import tsne_2d

    x = _pixels(breast.train.images[:120]).astype(np.float32)
    # one OpenMP thread: 0.5 s; two while another job holds one of the 2 cores: 45 s (measured)
    with threadpool_limits(1, user_api="openmp"):
        ref = TSNE(2, perplexity=30.0, init="pca", max_iter=1000, random_state=0).fit_transform(
            PCA(50, random_state=0).fit_transform(x))
        np.testing.assert_allclose(tsne_2d(x), ref, rtol=1e-5, atol=1e-5)
        few = x[:40]
        ref = TSNE(2, perplexity=13.0, init="pca", max_iter=250, random_state=0).fit_transform(few)  # 40 ≤ 50: no PCA
        np.testing.assert_allclose(tsne_2d(few, max_iter=250), ref, rtol=1e-5, atol=1e-5)
    for bad in ({"perplexity": 0}, {"pca_dim": 1}, {"max_iter": 249}, {"k": 0}):
        with pytest.raises(SSLBenchError, match="recipe keys evaluate.tsne"):
            EVALUATIONS.build({"name": "tsne", **bad})
    # the smallest accepted
    EVALUATIONS.build({"name": "tsne", "perplexity": 0.5, "pca_dim": 2, "max_iter": 250, "k": 1})
