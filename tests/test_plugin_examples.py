"""The tutorial plug-ins of docs/write_an_objective.md, write_a_dataset.md and write_an_evaluation.md
work as the guides say, on real data."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_bench.data import DATASETS
from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS, EvalContext
from ssl_bench.recipe import load_recipe
from ssl_bench.registry import load_plugin_file
from tests.data.layouts import pneumonia_xrays, save_png
from tests.evaluate.test_evaluate import _pixels
from tests.helpers import breast_recipe, real_batch, real_step

REGISTRIES = Path(__file__).resolve().parents[1] / "registries"


def test_barlow_twins_objective_trains_and_refuses_tracin(breast):
    load_plugin_file(REGISTRIES / "barlow_twins.py")
    cfg = breast_recipe(objective={"name": "barlow_twins", "hidden_dim": 256, "projection_dim": 256})
    step, _ = real_step(cfg)
    before = {k: p.detach().clone() for k, p in step.objective.named_parameters()}
    res = step(real_batch(breast, 32), lr=0.05, step=0)
    assert torch.isfinite(res.loss) and res.extra is None
    moved = [k for k, p in step.objective.named_parameters() if not torch.equal(before[k], p)]
    assert any(k.startswith("backbone.") for k in moved) and any(k.startswith("projector.") for k in moved)
    with pytest.raises(SSLBenchError, match=r"selector 'tracin' needs the objective's .*prediction p .* objective "
                                            r"'barlow_twins' does not provide"):
        load_recipe(data={**cfg, "selector": {"name": "tracin"}})


def test_filename_labels_dataset_reads_real_xrays(tmp_path):
    load_plugin_file(REGISTRIES / "filename_labels.py")
    images, labels = pneumonia_xrays(40)
    for i, (img, y) in enumerate(zip(images, labels)):
        save_png(img, tmp_path / "xrays" / f"case{i:03d}_{['normal', 'pneumonia'][y]}.png")
    d = DATASETS.build({"name": "filename_labels", "root": str(tmp_path / "xrays"), "size": 28,
                        "cache_dir": str(tmp_path / "c")})
    assert d.class_names == ["normal", "pneumonia"] and d.task == "binary-class"
    assert len(d.train) + len(d.val) + len(d.test) == 40 and d.train.images.shape[1:] == (3, 28, 28)
    for split in ("train", "val", "test"):  # every label is the one in the file name
        names = [f.rsplit("_", 1)[-1][:-4] for f in d.files[split]]
        assert [d.class_names[int(y)] for y in d.split(split).labels] == names
    again = DATASETS.build({"name": "filename_labels", "root": str(tmp_path / "xrays"), "size": 28,
                            "cache_dir": str(tmp_path / "c")})
    assert d.files == again.files  # seeded split
    with pytest.raises(SSLBenchError, match="image folder not found"):
        DATASETS.build({"name": "filename_labels", "root": str(tmp_path / "none")})


def test_centroid_evaluation_equals_a_direct_computation(breast):
    load_plugin_file(REGISTRIES / "centroid.py")
    ctx = EvalContext(data=breast, embed=_pixels)
    m = EVALUATIONS.build({"name": "centroid", "temperature": 0.1}).run(ctx)
    (x_tr, y_tr), (x_te, y_te) = ctx.features("train"), ctx.features("test")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    centroids = np.stack([unit(x_tr)[y_tr == c].mean(0) for c in (0, 1)])
    pred = (unit(x_te) @ unit(centroids).T).argmax(1)
    assert m["accuracy"] == pytest.approx((pred == y_te.ravel()).mean())
    assert m["auc"] > 0.55  # random pixel projections carry signal on BreastMNIST
