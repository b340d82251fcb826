"""Transfer: an encoder pre-trained on one real dataset evaluated on another (gray ↔ RGB)."""

import json

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate import EVALUATIONS
from ssl_bench.evaluate.transfer import adapt_channels, adapt_dataset
from tests.helpers import eval_context


def test_channel_adaptation_on_real_images(breast, retina):
    gray = breast.test.images[:32]
    rgb = adapt_channels(gray, 3)
    assert rgb.shape == (32, 3, 28, 28) and rgb.dtype == torch.uint8
    assert all(torch.equal(rgb[:, c], gray[:, 0]) for c in range(3))
    colour = retina.test.images[:32]
    luma = adapt_channels(colour, 1)
    ref = TF.rgb_to_grayscale(colour.float(), num_output_channels=1).round().to(torch.uint8)
    assert (luma.int() - ref.int()).abs().max() <= 1  # same BT.601 weights; rounding may differ by 1
    with pytest.raises(SSLBenchError, match="cannot adapt 2-channel"):
        adapt_channels(torch.zeros(1, 2, 4, 4, dtype=torch.uint8), 3)
    small = adapt_dataset(retina, 1, size=16)
    assert small.train.images.shape[1:] == (1, 16, 16) and len(small.test) == len(retina.test)
    assert torch.equal(small.train.labels, retina.train.labels)


def _source_ctx(data):
    """The context `ssl-bench run` builds after pre-training on ``data`` (a seeded, untrained network)."""
    return eval_context(data, backbone={"name": "resnet18", "small_image_stem": True, "stem_pool": True}, seed=3,
                        view_size=28)


@pytest.mark.slow
@pytest.mark.parametrize("source, target", [("retina", "breastmnist"), ("breast", "retinamnist")])
def test_transfer_runs_between_grayscale_and_rgb(source, target, request):
    src = request.getfixturevalue(source)
    ev = EVALUATIONS.build(
        {"name": "transfer", "data": {"name": "medmnist", "flag": target}, "protocol": {"name": "linear", "C": 0.1}}
    )
    assert ev.key == f"transfer:{ev.target.name}/linear"
    m = ev.run(_source_ctx(src))
    assert m["target_dataset"] == ev.target.name
    assert 0.5 < m["auc"] <= 1.0  # random conv features of real images carry signal on B's test split
    ft = EVALUATIONS.build(
        {"name": "transfer", "data": {"name": "medmnist", "flag": target},
         "protocol": {"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32}}
    )
    assert ft.key == f"transfer:{ft.target.name}/finetune@0.1"
    r = ft.run(_source_ctx(src))
    assert len(r["per_seed"]) == 1 and r["auc"] == r["per_seed"][0]["auc"] and r["target_dataset"] == ft.target.name


def test_transfer_bad_blocks_fail_when_the_recipe_is_loaded():
    """``ssl-bench show`` and ``run`` refuse a bad inner protocol or dataset B block before anything is
    built, naming its key; B's files are only looked for at build (``missing: skip``)."""
    from ssl_bench.recipe import load_recipe
    from tests.helpers import breast_recipe

    for block, message in (
        ({"protocol": {"name": "lnear"}},
         r"unknown evaluation 'lnear' \(recipe key evaluate\[0\].protocol.name\) — did you mean 'linear'"),
        ({"protocol": {"name": "knn", "kk": 3}}, r"unknown recipe key evaluate\[0\].protocol.kk for evaluation 'knn'"),
        ({"protocol": {"name": "transfer"}}, r"evaluate\[0\].protocol.name cannot be 'transfer'"),
        ({"data": {"name": "medmnist", "flag": "pneumonia"}}, r"'pneumonia' \(recipe key evaluate\[0\].data.flag\)"),
    ):
        ev = {"name": "transfer", "data": {"name": "medmnist", "flag": "breastmnist"}, **block}
        with pytest.raises(SSLBenchError, match=message):
            load_recipe(data=breast_recipe(evaluate=[ev]))
    load_recipe(data=breast_recipe(evaluate=[{"name": "transfer", "data": {"name": "isic", "root": "/nonexistent"},
                                              "missing": "skip"}]))


def test_transfer_bad_blocks_fail_at_build_time():
    with pytest.raises(SSLBenchError, match=r"'breastmnsit' \(recipe key evaluate\[2\].data.flag\)"):
        EVALUATIONS.build({"name": "transfer", "data": {"name": "medmnist", "flag": "breastmnsit"}}, key="evaluate[2]")
    with pytest.raises(SSLBenchError, match=r"'lnear' \(recipe key evaluation.protocol.name\)"):
        EVALUATIONS.build({"name": "transfer", "data": {"name": "medmnist", "flag": "breastmnist"},
                           "protocol": {"name": "lnear"}})


@pytest.mark.slow
def test_run_with_transfer_writes_keyed_results_and_headline(tmp_path):
    """ssl-bench run: RetinaMNIST (RGB) → BreastMNIST (grayscale), Random encoder (epochs 0) to stay fast."""
    from click.testing import CliRunner

    from ssl_bench.cli import main

    out = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "run", "recipes/medmnist/transfer_retina_to_breast.yaml", "--quiet", "--out", str(out),
        "--set", "train.epochs=0", "--set",
        "evaluate=[{name: transfer, data: {name: medmnist, flag: breastmnist}, protocol: {name: linear}}]",
    ])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["headline_metric"] == "auc" and results["dataset"] == "RetinaMNIST"
    assert set(results["eval"]) == {"transfer:BreastMNIST/linear"}
    assert "headline auc: transfer:BreastMNIST/linear" in res.output


def test_transfer_to_a_dataset_that_is_not_there(tmp_path, breast):
    block = {"name": "isic", "root": str(tmp_path / "ISIC_2016"), "layout": "isic2016"}
    with pytest.raises(SSLBenchError, match="ISIC_2016"):
        EVALUATIONS.build({"name": "transfer", "data": block})
    ev = EVALUATIONS.build({"name": "transfer", "data": block, "missing": "skip"})
    assert ev.key == "transfer:isic/finetune@1"
    with pytest.warns(UserWarning, match="transfer skipped"):
        res = ev.run(_source_ctx(breast))
    assert set(res) == {"skipped"} and "ISIC_2016" in res["skipped"]


def test_resample_and_luma_are_exact_where_they_can_be(retina):
    """Black stays 0 and white 255 through the luma and the resample; the resample is 255 × the
    evaluation view, rounded (every image, across its chunks of 1024); images already at the size
    (square) are returned as they are, non-square ones are resampled to size × size."""
    from ssl_bench.augment import center_view
    from ssl_bench.evaluate.transfer import resize_uint8

    colour = torch.cat([retina.train.images, retina.test.images])[:1100]
    luma = adapt_channels(colour, 1)
    ref = TF.rgb_to_grayscale(colour.float(), num_output_channels=1).round().to(torch.uint8)
    assert luma.shape == (1100, 1, 28, 28) and ((luma.int() - ref.int()).abs() <= 1).all()  # every image
    black = (colour == 0).all(1, keepdim=True)
    assert black.sum() > 1000 and (luma[black] == 0).all()  # the fundus images' black surround
    assert (adapt_channels(torch.full((2, 3, 4, 4), 255, dtype=torch.uint8), 1) == 255).all()
    small = resize_uint8(colour, 20)
    expected = center_view(colour, 20) * 255
    assert small.shape == (1100, 3, 20, 20) and (small.float() - expected).abs().max() <= 0.5 + 1e-4
    for value in (0, 255):
        assert (resize_uint8(torch.full((2, 3, 28, 28), value, dtype=torch.uint8), 20) == value).all()
    assert resize_uint8(colour, 28) is colour
    wide = colour[:4, :, :, :24]
    assert (resize_uint8(wide, 24).shape == (4, 3, 24, 24)
            and resize_uint8(colour[:4, :, :24, :], 24).shape == (4, 3, 24, 24))
    for c, to in ((3, 2), (4, 1), (2, 3)):
        with pytest.raises(SSLBenchError, match=f"cannot adapt {c}-channel images to an encoder with {to} input"):
            adapt_channels(torch.zeros(1, c, 4, 4, dtype=torch.uint8), to)


@pytest.mark.slow
def test_transfer_checks_dataset_b_and_needs_a_trained_encoder(breast, retina):
    """The inner protocol's data check runs on dataset B (not A) at build time; a skipped B has nothing
    to check; a context without the trained encoder is refused; a plugin encoder without ``in_chans``
    is fed A's channels; the inner protocol's recipe defaults are resolved (fine-tuning's augment)."""
    from ssl_bench.evaluate import EvalContext
    from ssl_bench.evaluate.transfer import Transfer

    knn = EVALUATIONS.build({"name": "transfer", "data": {"name": "medmnist", "flag": "breastmnist"},
                             "protocol": {"name": "knn", "k": 600}})
    with pytest.raises(SSLBenchError, match=r"evaluate.knn.k \(600\) is larger than the train split \(546"):
        knn.check_data(retina)  # A (RetinaMNIST) has 1,080 training images, B 546
    skip = EVALUATIONS.build({"name": "transfer", "data": {"name": "isic", "root": "/nonexistent/ISIC"},
                              "missing": "skip"})
    skip.check_data(retina)
    ok = EVALUATIONS.build({"name": "transfer", "data": {"name": "medmnist", "flag": "breastmnist"},
                            "protocol": {"name": "knn", "k": 5}})
    import dataclasses

    for missing in ("encoder", "augment", "view_size"):  # each of them alone
        with pytest.raises(SSLBenchError, match="needs the trained encoder"):
            ok.run(dataclasses.replace(_source_ctx(retina), **{missing: None}))

    class Plugin(torch.nn.Module):  # no in_chans attribute
        def forward(self, x):
            return x.flatten(1)[:, :64]

    src = _source_ctx(retina)
    ctx = EvalContext(data=retina, embed=src.embed, encoder=lambda random=False: Plugin(), augment=src.augment,
                      view_size=28)
    assert ok.run(ctx)["target_dataset"] == "BreastMNIST"
    augment = {"name": "byol", "size": 28, "blur": [1.0, 0.1]}
    resolved = Transfer.resolve({"name": "transfer", "protocol": {"name": "finetune"}}, {"augment": augment})
    assert resolved["protocol"]["augment"] == {"name": "flip"}  # B's own views, never A's pre-training set
