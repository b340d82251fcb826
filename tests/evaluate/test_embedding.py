"""Map metrics (kNN k = 15, silhouette), the scatter PNG and the t-SNE baseline on real BreastMNIST."""

import numpy as np
import pandas as pd
import pytest
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
    assert m["knn_accuracy_features"] == pytest.approx((KNeighborsClassifier(15).fit(f_tr, y_tr).predict(f_te) == y_te).mean())
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


def test_scatter_adapts_to_the_number_of_points_and_draws_thumbnails(retina, tmp_path):
    small, large = point_style(500), point_style(100_000)
    assert small[0] > large[0] and small[1] > large[1] and large[0] > 0 and large[1] >= 0.2
    xy = _pca2(retina)(retina.train.images)
    labels = retina.train.labels.numpy()
    out = scatter_embedding(xy, labels, tmp_path / "map.png", retina.class_names, images=retina.train.images, thumbnails=6)
    plain = scatter_embedding(xy, labels, tmp_path / "plain.png", retina.class_names)
    assert out.stat().st_size > plain.stat().st_size > 10_000  # the thumbnails are real image content
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_tsne_baseline_of_pixels(breast, tmp_path):
    ctx = EvalContext(data=breast, embed=_pixels, out_dir=tmp_path)
    ev = EVALUATIONS.build({"name": "tsne", "input": "pixels", "max_iter": 250})
    m = ev.run(ctx)
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
