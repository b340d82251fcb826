"""End to end: `ssl-bench run` on real BreastMNIST, as a user types it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench.cli import main

REPO = Path(__file__).resolve().parents[1]
BREAST = str(REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml")
ORACLE = str(REPO / "recipes" / "medmnist" / "byol_oracle_breastmnist.yaml")
FAST = ["--set", "objective.hidden_dim=1024"]


def _run(args, tmp_path):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res


@pytest.mark.slow
@pytest.mark.e2e
def test_byol_two_epochs_writes_a_complete_run_directory(tmp_path):
    out = tmp_path / "run"
    res = _run(["run", BREAST, "--set", "train.epochs=2", "--out", str(out), "--quiet"], tmp_path)
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"recipe.yaml", "metrics.jsonl", "steps.jsonl", "loss.png",
                                               "results.json", "checkpoints"}
    assert (out / "checkpoints" / "last.pt").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in lines)
    results = json.loads((out / "results.json").read_text())
    assert results["recipe"] == "byol_breastmnist" and results["method"] == "BYOL"
    assert results["dataset"] == "BreastMNIST" and results["seed"] == 0
    assert set(results["eval"]) == {"linear", "knn"}
    assert results["eval"]["linear"]["auc"] > 0.60, results["eval"]
    import yaml

    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["lr"] == 0.1  # resolved, overrides applied
    # never overwrite: the same --out again is refused and the run is untouched
    before = (out / "results.json").read_bytes()
    res = _run(["run", BREAST, "--set", "train.epochs=1", "--out", str(out), "--quiet"], tmp_path)
    assert res.exit_code == 2 and "already exists and is not empty" in res.output
    assert (out / "results.json").read_bytes() == before


@pytest.mark.slow
@pytest.mark.e2e
def test_oracle_logs_selector_precision_one_and_is_deterministic(tmp_path):
    args = ["run", ORACLE, "--set", "train.epochs=1", "--set", "backbone.small_image_stem=false", *FAST, "--quiet"]
    runs = []
    for name in ("a", "b"):
        res = _run([*args, "--out", str(tmp_path / name)], tmp_path)
        assert res.exit_code == 0, res.output
        runs.append([json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    rec = runs[0][0]
    assert rec["selector_precision"] == 1.0
    assert rec["selector_chance"] == pytest.approx((147 / 546) ** 2 + (399 / 546) ** 2)
    assert rec["selector_coverage"] == 1.0
    assert runs[0][0]["loss"] == runs[1][0]["loss"]  # same seed on CPU → same loss, bit for bit
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["method"] == "BYOL-Sup"


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epohcs=2", "unknown recipe key train.epohcs for train — did you mean 'epochs'?"),
        ("selector.name=orcle", "unknown selector 'orcle' (recipe key selector.name) — did you mean 'oracle'"),
        ("train.batch_size=big", "recipe key train.batch_size must be int, got str 'big'"),
        ("data.flag=breastmnst", "unknown MedMNIST flag 'breastmnst' (recipe key data.flag)"),
    ],
)
def test_malformed_recipe_exits_with_one_line(tmp_path, override, message):
    out = tmp_path / "never"
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_bench.cli", "run", BREAST, "--set", override, "--out", str(out)],
        capture_output=True, text=True, env={**os.environ}, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_list_and_show(tmp_path):
    res = _run(["list"], tmp_path)
    assert res.exit_code == 0
    for word in ("datasets", "medmnist", "augmentations", "byol", "objectives", "simclr", "selectors", "oracle",
                 "evaluations", "knn"):
        assert word in res.output
    res = _run(["list", "backbones", "resnet18*"], tmp_path)
    assert "resnet18d" in res.output and "resnet50" not in res.output
    res = _run(["list", "selectr"], tmp_path)
    assert res.exit_code == 2 and "did you mean 'selectors'" in res.output
    res = _run(["show", ORACLE], tmp_path)
    assert res.exit_code == 0 and "name: oracle" in res.output and "momentum_base: 0.99" in res.output


@pytest.mark.slow
@pytest.mark.e2e
def test_plugin_selector_from_the_registries_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "plug"
    res = _run(
        ["run", BREAST, "--set", "plugins=[registries/random_positive.py]", "--set", "selector.name=random",
         "--set", "train.epochs=1", "--set", "backbone.small_image_stem=false", *FAST, "--out", str(out), "--quiet"],
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["selector_coverage"] == 1.0
    # random partners: precision near the chance rate (0.61), far from the oracle's 1.0
    assert abs(rec["selector_precision"] - rec["selector_chance"]) < 0.15
    assert json.loads((out / "results.json").read_text())["method"] == "BYOL-random"


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("selector", ["fs", "tracin", "tracin_train_views", "fnc", "nn", "ft"])
def test_model_selectors_pretrain_on_real_data_and_log_precision(selector, tmp_path):
    name, extra = (selector, []) if selector != "tracin_train_views" else ("tracin", ["--set", "selector.views=train"])
    out = tmp_path / selector
    res = _run(
        ["run", BREAST, "--set", f"selector.name={name}", *extra, "--set", "train.epochs=1",
         "--set", "backbone.small_image_stem=false", *FAST, "--out", str(out), "--quiet"],
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    if selector == "ft":  # virtual positives from the pair itself: nothing chosen, nothing to score
        assert rec["selector_precision"] is None and rec["loss"] > 0
        return
    # above nothing-in-common, below an oracle's 1.0 (a self-match or a label leak would give 1.0)
    assert 0.3 < rec["selector_precision"] < 1.0
    if selector != "fnc":  # FNC keeps only candidates above its threshold
        assert rec["selector_coverage"] == pytest.approx(1.0 if selector != "nn" else 3 / 4)  # nn: empty bank at step 1
    assert json.loads((out / "results.json").read_text())["train"]["selector_precision"] == rec["selector_precision"]


@pytest.fixture(scope="module")
def byol_run(module_dir):
    """One short real BYOL run on BreastMNIST, shared by the tests that need a trained checkpoint."""
    out = module_dir / "byol" / "run"
    res = _run(["run", BREAST, "--set", "train.epochs=1", "--set", "backbone.small_image_stem=false", *FAST,
                "--out", str(out), "--quiet"], None)
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.slow
@pytest.mark.e2e
def test_tracin_pretrained_from_an_earlier_run(tmp_path, byol_run):
    common = ["--set", "train.epochs=1", "--set", "backbone.small_image_stem=false", *FAST, "--quiet"]
    out = tmp_path / "tracin_pre"
    res = _run(["run", BREAST, *common, "--set", "selector.name=tracin", "--set", "selector.model=pretrained",
                "--set", f"selector.checkpoint={byol_run}", "--out", str(out)], tmp_path)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "results.json").read_text())["method"] == "BYOL-TracIn-pretrained"
    res = _run(["run", BREAST, *common, "--set", "selector.name=tracin", "--set", "selector.model=pretrained",
                "--out", str(tmp_path / "no")], tmp_path)
    assert res.exit_code == 2 and "selector.checkpoint is required" in res.output
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_positives_report_and_gallery(tmp_path, byol_run):
    png = tmp_path / "pos.png"
    res = _run(["positives", str(byol_run), "--selector", "tracin", "--selector", "fs", "--selector", "oracle",
                "--gallery", "3", "--out", str(png)], tmp_path)
    assert res.exit_code == 0, res.output
    rep = json.loads(png.with_suffix(".json").read_text())
    assert rep["images"] == 512 and rep["batch_size"] == 128  # 4 full batches of BreastMNIST's 546
    assert rep["selectors"]["oracle"]["precision_top1"] == 1.0
    for name in ("tracin", "fs"):
        assert 0.0 < rep["selectors"][name]["precision_top1"] < 1.0
        assert rep["selectors"][name]["coverage_top1"] == 1.0
    from PIL import Image

    assert Image.open(png).size[0] > 600  # 1 anchor + 3 selectors × 3 positives per row
    assert "precision top-1" in res.output


@pytest.mark.slow
@pytest.mark.e2e
def test_micle_on_real_lesion_groups(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the HAM10000 recipes find ../shared/data relative to the repository
    from tests.conftest import HAM_ZIP

    monkeypatch.setenv("SSL_BENCH_HAM10000_ROOT", str(HAM_ZIP))
    out = tmp_path / "micle"
    res = _run(["run", str(REPO / "recipes" / "ham10000" / "byol_micle_ham28.yaml"), "--set", "train.epochs=1",
                "--set", "backbone.small_image_stem=false", *FAST, "--set", "evaluate=[{name: knn}]", "--out", str(out),
                "--quiet"], tmp_path)
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # a lesion's images share the diagnosis, so MICLe's partners always have the anchor's label
    # only anchors whose lesion has another image get an extra positive (1,956 of 7,470 lesions do)
    assert rec["selector_precision"] == 1.0 and 0.2 < rec["selector_coverage"] < 0.6
    assert rec["selector_chance"] < 0.5
    assert json.loads((out / "results.json").read_text())["method"] == "BYOL-MICLe"


@pytest.mark.slow
@pytest.mark.e2e
def test_positives_of_a_kept_epoch_with_selector_options_and_precision_at_1_3_10(tmp_path):
    out = tmp_path / "kept"
    res = _run(["run", BREAST, "--set", "train.epochs=2", "--set", "train.save_epochs=[1]", "--set",
                "backbone.stem_pool=true",
                *FAST, "--out", str(out), "--quiet"], tmp_path)
    assert res.exit_code == 0, res.output
    png = tmp_path / "p.png"
    res = _run(["positives", str(out), "--epoch", "1", "--k", "10", "--selector", "tracin", "--selector",
                "tracin:normalize=true",
                "--selector", "oracle", "--gallery", "2", "--out", str(png)], tmp_path)
    assert res.exit_code == 0, res.output
    rep = json.loads(png.with_suffix(".json").read_text())
    assert rep["epoch"] == 1 and rep["k"] == 10
    assert set(rep["selectors"]) == {"tracin", "tracin:normalize=true", "oracle"}
    for name, r in rep["selectors"].items():
        assert {"precision_top1", "precision_top3", "precision_top10"} <= set(r)
    assert all(rep["selectors"]["oracle"][f"precision_top{j}"] == 1.0 for j in (1, 3, 10))
    raw, cos = rep["selectors"]["tracin"], rep["selectors"]["tracin:normalize=true"]
    assert 0.0 < raw["precision_top10"] < 1.0 and 0.0 < cos["precision_top10"] < 1.0
    assert "network of epoch" in res.output and "precision" in res.output
    res = _run(["positives", str(out), "--epoch", "2", "--selector", "fs"], tmp_path)
    assert res.exit_code == 2 and "kept no network of that epoch (epoch0002.pt; kept: epoch0001.pt)" in res.output
    res = _run(["positives", str(out), "--selector", "tracin:normalize"], tmp_path)
    assert res.exit_code == 2 and "options are KEY=VALUE after a colon" in res.output
