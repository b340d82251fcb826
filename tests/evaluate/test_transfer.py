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
    return eval_context(data, backbone={"name": "resnet18", "small_image_stem": True, "stem_pool": True}, seed=3, view_size=28)


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


def test_transfer_bad_blocks_fail_at_build_time():
    with pytest.raises(SSLBenchError, match="evaluate.transfer.data"):
        EVALUATIONS.build({"name": "transfer", "data": {"name": "medmnist", "flag": "breastmnsit"}})
    with pytest.raises(SSLBenchError, match="evaluate.transfer.protocol"):
        EVALUATIONS.build({"name": "transfer", "data": {"name": "medmnist", "flag": "breastmnist"}, "protocol": {"name": "lnear"}})


def test_run_with_transfer_writes_keyed_results_and_headline(tmp_path):
    """ssl-bench run: RetinaMNIST (RGB) → BreastMNIST (grayscale), Random encoder (epochs 0) to stay fast."""
    from click.testing import CliRunner

    from ssl_bench.cli import main

    out = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "run", "recipes/medmnist/transfer_retina_to_breast.yaml", "--quiet", "--out", str(out),
        "--set", "train.epochs=0", "--set", "evaluate=[{name: transfer, data: {name: medmnist, flag: breastmnist}, protocol: {name: linear}}]",
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
