"""`ssl-bench export`, `ssl_bench.load_backbone` and the Python API, on real BreastMNIST runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ssl_bench
from tests.helpers import breast_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["small_stem", "timm_stem"])
def trained_run(request, module_dir):
    """A real 1-epoch BYOL run through the Python API (small-image stem, or timm's own stem)."""
    backbone = {"name": "resnet18", "small_image_stem": True, "stem_pool": True}
    if request.param == "timm_stem":
        backbone = {"name": "resnet18", "small_image_stem": False}
    cfg = breast_recipe(backbone=backbone, evaluate=[{"name": "knn", "k": 5}])
    out = module_dir / request.param / "run"
    torch.manual_seed(0)
    run = ssl_bench.run(cfg, overrides=["train.epochs=1"], out=out)
    return run


def _run_features(run_dir: Path, split: str = "test") -> np.ndarray:
    """The features the run's own evaluations use (the evaluation context `ssl-bench run` builds)."""
    from ssl_bench.components import build_components
    from ssl_bench.evaluate import EvalContext
    from ssl_bench.recipe import load_recipe
    from ssl_bench.run_loader import load_run

    trained = load_run(run_dir)
    comp = build_components(load_recipe(data={**trained.recipe, "selector": {"name": "none"}}))
    ctx = EvalContext.of_objective(trained.objective, comp.data, comp.augment, comp.view_size, trained.normalize,
                                   torch.device("cpu"))
    return ctx.features(split)[0]


@pytest.mark.slow
def test_the_api_returns_a_run_with_results_and_metrics(trained_run):
    assert trained_run.dir.is_dir() and (trained_run.dir / "results.json").is_file()
    res = trained_run.results
    assert res["method"] == "BYOL" and "knn" in res["eval"]
    assert 0.0 < res["eval"]["knn"]["auc"] < 1.0
    m = trained_run.metrics()
    assert "loss" in m.columns and (m["epoch"] == 1).any()
    assert trained_run.recipe["train"]["epochs"] == 1  # the override reached the run
    # compare: one method row, the headline metric (auc), n = 1
    table = ssl_bench.compare([trained_run.dir])
    assert list(table["method"]) == ["BYOL"] and int(table["count"].iloc[0]) == 1
    assert table["mean"].iloc[0] == pytest.approx(res["eval"]["knn"]["auc"])


@pytest.mark.slow
def test_exported_backbone_gives_the_runs_own_features_in_a_fresh_python(trained_run, tmp_path):
    out = tmp_path / "backbone.pt"
    cli = subprocess.run([sys.executable, "-m", "ssl_bench.cli", "export", str(trained_run.dir), "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode == 0, cli.stderr
    assert f"wrote {out}" in cli.stdout and "load it: ssl_bench.load_backbone" in cli.stdout
    small = trained_run.recipe["backbone"]["small_image_stem"]
    assert ("3×3 stride-1 stem" in cli.stdout) == small
    # the export is far smaller than the checkpoint and holds only plain data
    assert out.stat().st_size < 0.5 * (trained_run.dir / "checkpoints" / "last.pt").stat().st_size
    state = torch.load(out, weights_only=True)
    assert state["timm_name"] == "resnet18" and state["in_chans"] == 1 and state["feature_dim"] == 512
    assert not any(k.startswith("model.") for k in state["state_dict"])  # timm's own keys
    # a fresh interpreter: export file → features of the run's test split
    feats = tmp_path / "f.npy"
    code = (
        "import sys, numpy as np, torch, ssl_bench\n"
        "from ssl_bench.data import DATASETS\n"
        f"net = ssl_bench.load_backbone({str(out)!r})\n"
        f"data = DATASETS.build({trained_run.recipe['data']!r})\n"
        "with torch.no_grad():\n"
        "    f = net(net.prepare(data.test.images))\n"
        f"np.save({str(feats)!r}, f.numpy())\n"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert fresh.returncode == 0, fresh.stderr
    np.testing.assert_allclose(np.load(feats), _run_features(trained_run.dir), rtol=1e-4, atol=1e-4)
    # the run object's embed and load_backbone(run directory) agree with the export
    from ssl_bench.data import DATASETS

    images = DATASETS.build(trained_run.recipe["data"]).test.images[:40]
    np.testing.assert_allclose(trained_run.embed(images), np.load(feats)[:40], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_timm_stem_export_loads_into_plain_timm(trained_run, tmp_path):
    if trained_run.recipe["backbone"]["small_image_stem"]:
        pytest.skip("the small-image stem is rebuilt by hand (the how-to's snippet)")
    import timm

    out = tmp_path / "b.pt"
    trained_run.export(out)
    state = torch.load(out, weights_only=True)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=1)
    model.load_state_dict(state["state_dict"])  # strict: every key and shape matches timm's
    net = ssl_bench.load_backbone(out)
    x = torch.rand(3, 1, 28, 28)
    mean, std = torch.tensor(state["mean"]).view(1, -1, 1, 1), torch.tensor(state["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()((x - mean) / std), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_safetensors_export_carries_the_runs_pretrained_cfg_and_loads_into_timm(trained_run, tmp_path):
    """``--out X.safetensors``: timm's keys in safetensors, and beside it X.json with timm's config
    fields; ``pretrained_cfg`` is the run's mean/std and input size with an ssl-bench tag, so timm's own
    data config makes the run's view.  timm's stem: plain ``timm.create_model(…, pretrained=True,
    pretrained_cfg_overlay={file: …})`` reads it; either stem: ``load_backbone(X).model`` is the timm model."""
    import timm
    from safetensors.torch import load_file

    out = tmp_path / "backbone.safetensors"
    info = trained_run.export(out)
    cfg = json.loads((tmp_path / "backbone.json").read_text())
    assert cfg["architecture"] == "resnet18" and cfg["num_classes"] == 0 and cfg["in_chans"] == 1
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["mean"] == pytest.approx(info["mean"]) and pcfg["std"] == pytest.approx(info["std"])
    assert pcfg["input_size"] == [1, 28, 28] and pcfg["tag"].startswith("ssl-bench.") and "url" not in pcfg
    weights = load_file(str(out))
    assert "conv1.weight" in weights and not any(k.startswith("model.") for k in weights)  # timm's own keys
    ours = ssl_bench.load_backbone(out)
    data_cfg = timm.data.resolve_data_config({}, model=ours.model)
    assert data_cfg["input_size"] == (1, 28, 28) and data_cfg["mean"] == pytest.approx(tuple(info["mean"]))
    x = torch.rand(3, 1, 28, 28)
    mean, std = torch.tensor(pcfg["mean"]).view(1, -1, 1, 1), torch.tensor(pcfg["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours.model((x - mean) / std), ours(x), rtol=1e-5, atol=1e-5)
        from_dir = ssl_bench.load_backbone(trained_run.dir)
        torch.testing.assert_close(from_dir(x), ours(x), rtol=1e-5, atol=1e-5)
        assert timm.data.resolve_data_config({}, model=from_dir.model)["std"] == pytest.approx(tuple(info["std"]))
        if not cfg["ssl_bench"]["small_image_stem"]:
            model = timm.create_model("resnet18", pretrained=True, num_classes=0, in_chans=1,
                                      pretrained_cfg_overlay={"file": str(out), **pcfg}).eval()
            torch.testing.assert_close(model((x - mean) / std), ours(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ssl_bench.errors.SSLBenchError, match="already exists"):
        trained_run.export(out)  # the weights and their .json: neither is replaced without force


@pytest.mark.slow
def test_the_how_to_snippets_run_on_a_real_export(trained_run, tmp_path, monkeypatch):
    trained_run.export(tmp_path / "backbone.pt")
    trained_run.export(tmp_path / "backbone.safetensors")
    monkeypatch.chdir(tmp_path)
    text = (REPO / "docs" / "use_your_backbone.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 4
    for code in blocks:
        exec(compile(code, "use_your_backbone.md", "exec"), {})


@pytest.mark.slow
def test_export_refuses_to_overwrite_and_bad_files_are_one_line(trained_run, tmp_path):
    out = tmp_path / "b.pt"
    out.write_text("keep me")
    r = subprocess.run([sys.executable, "-m", "ssl_bench.cli", "export", str(trained_run.dir), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and out.read_text() == "keep me" and "--force" in r.stderr
    with pytest.raises(ssl_bench.errors.SSLBenchError, match="not an ssl-bench backbone export|checkpoint"):
        ssl_bench.load_backbone(out)
    json.dumps(trained_run.results)  # results stay plain JSON
