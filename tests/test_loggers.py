"""Loggers (csv, tensorboard, wandb offline, mlflow file store), loss.png, the kNN monitor and the
reproducibility record, on a real 2-epoch BreastMNIST run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ssl_bench.errors import SSLBenchError
from ssl_bench.recipe import load_recipe
from tests.helpers import breast_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def logged_run(module_dir):
    root = module_dir / "logged"
    root.mkdir()
    recipe = root / "r.yaml"
    cfg = breast_recipe(evaluate=[{"name": "knn", "k": 5}])
    cfg["train"] = {**cfg["train"], "epochs": 2, "knn_every": 1}
    cfg["log"] = ["csv", "tensorboard", {"name": "wandb", "mode": "offline", "project": "t"}, {"name": "mlflow"}]
    recipe.write_text(yaml.safe_dump(cfg))
    out = root / "run"
    r = subprocess.run([sys.executable, "-m", "ssl_bench.cli", "run", str(recipe), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, cwd=root,
                       env={**__import__("os").environ, "WANDB_SILENT": "true"})
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


@pytest.mark.slow
def test_every_step_reaches_csv_and_tensorboard(logged_run):
    out, stdout = logged_run
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in steps] == [1, 2]
    n = len(steps[0]["loss"])
    assert n == 546 // 32 and len(steps[1]["lr"]) == n  # 17 steps per epoch (drop_last)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the epoch mean of metrics.jsonl is the mean of that epoch's step losses
    assert metrics[0]["loss"] == pytest.approx(sum(steps[0]["loss"]) / n, rel=1e-5)
    rows = list(csv.DictReader((out / "logs" / "csv" / "metrics.csv").open()))
    step_rows = [r for r in rows if r.get("train/loss_step")]
    assert len(step_rows) == 2 * n
    assert float(step_rows[n]["train/loss_step"]) == pytest.approx(steps[1]["loss"][0], rel=1e-5)
    # TensorBoard event files, read back
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "logs" / "tensorboard"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert {"train/loss_step", "train/lr", "train/loss_epoch", "val/knn_accuracy"} <= set(tags)
    loss = [e.value for e in ea.Scalars("train/loss_step")]
    assert loss == pytest.approx(steps[0]["loss"] + steps[1]["loss"], rel=1e-5)
    assert [e.step for e in ea.Scalars("train/loss_epoch")] == [n, 2 * n]
    # steps count from 1: an epoch's scalars sit on its own last step, not on the next epoch's first
    assert [e.step for e in ea.Scalars("train/loss_step")] == list(range(1, 2 * n + 1))
    assert "logging to:" in stdout


@pytest.mark.slow
def test_final_evaluation_metrics_reach_every_logger(logged_run, monkeypatch):
    out, _ = logged_run
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    res = json.loads((out / "results.json").read_text())
    acc, auc = res["eval"]["knn"]["accuracy"], res["eval"]["knn"]["auc"]
    rows = list(csv.DictReader((out / "logs" / "csv" / "metrics.csv").open()))
    final = [r for r in rows if r.get("eval/knn/accuracy")]
    assert len(final) == 1 and float(final[0]["eval/knn/accuracy"]) == pytest.approx(acc)
    assert int(final[0]["step"]) == res["train"]["steps"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(out / "logs" / "tensorboard"))
    ea.Reload()
    assert [e.value for e in ea.Scalars("hp_metric")] == pytest.approx([auc])  # the headline metric, not -1
    assert ea.Scalars("eval/knn/balanced_accuracy")[0].value == pytest.approx(res["eval"]["knn"]["balanced_accuracy"])
    import mlflow

    mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
    run_id = mlflow.search_runs([mlflow.get_experiment_by_name("ssl-bench").experiment_id])["run_id"].iloc[0]
    assert mlflow.tracking.MlflowClient().get_run(run_id).data.metrics["eval/knn/accuracy"] == pytest.approx(acc)


@pytest.mark.slow
def test_knn_monitor_and_loss_png(logged_run):
    out, stdout = logged_run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 < m["knn_val_accuracy"] <= 1.0 for m in metrics)  # on the 78 validation images
    assert all(abs(m["knn_val_accuracy"] * 78 - round(m["knn_val_accuracy"] * 78)) < 1e-6 for m in metrics)
    png = out / "loss.png"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 500 and im.size[1] > 300
    assert "figures: loss.png" in stdout and "val kNN acc" in stdout


@pytest.mark.slow
def test_wandb_offline_and_mlflow_file_store(logged_run, monkeypatch):
    out, _ = logged_run
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
    exp = mlflow.get_experiment_by_name("ssl-bench")
    runs = mlflow.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs["status"].iloc[0] == "FINISHED"
    client = mlflow.tracking.MlflowClient()
    hist = client.get_metric_history(runs["run_id"].iloc[0], "train/loss_step")
    assert len(hist) == 2 * (546 // 32)


@pytest.mark.slow
def test_results_and_recipe_record_versions_commit_and_command(logged_run):
    out, _ = logged_run
    res = json.loads((out / "results.json").read_text())
    prov = res["provenance"]
    for pkg in ("ssl-bench", "torch", "timm", "lightly"):
        assert prov["versions"][pkg], pkg
    assert prov["command"][1:3] == ["run", prov["command"][2]] and "--out" in prov["command"]
    assert prov["device"] == "cpu" and prov["device_name"]
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert prov["code_git"]["commit"] == git
    head = (out / "recipe.yaml").read_text().splitlines()[:3]
    assert head[0].startswith("# written by ssl-bench: python") and "torch" in head[0]
    assert (head[1] == f"# git commit {git}" + (" (with uncommitted changes)" if prov["code_git"]["dirty"] else "")
            or head[1].startswith("# command"))
    assert load_recipe(out / "recipe.yaml").cfg["log"][0] == "csv"  # still a valid recipe


def test_bad_log_entries_are_one_line():
    with pytest.raises(SSLBenchError, match=r"log\[0\]: unknown logger 'tensorbord' — did you mean 'tensorboard'"):
        load_recipe(data=breast_recipe(log=["tensorbord"]))
    with pytest.raises(SSLBenchError, match=r"log\[0\]: logger csv takes no option 'project'"):
        load_recipe(data=breast_recipe(log=[{"name": "csv", "project": "x"}]))
    with pytest.raises(SSLBenchError, match="recipe key log must be a list"):
        load_recipe(data=breast_recipe(log="csv"))


def _steps_file(run_dir: Path, epochs: int = 4, n: int = 5) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    from ssl_bench.loggers import append_steps

    for e in range(1, epochs + 1):
        append_steps(run_dir, e, (e - 1) * n, [1.0 / e] * n, [0.1] * n)


def test_loss_png_on_a_full_disk_is_a_warning_and_leaves_no_file(tmp_path, monkeypatch):
    import errno

    import matplotlib.figure

    from ssl_bench.loggers import plot_loss

    _steps_file(tmp_path)

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    said = []
    assert plot_loss(tmp_path, log=said.append) is None
    assert said == [f"warning: {tmp_path / 'loss.png'} was not written (No space left on device); "
                    f"the run's results are unaffected"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steps.jsonl"]


def test_loss_png_marks_the_stage_boundaries(tmp_path, monkeypatch):
    import matplotlib.axes

    from ssl_bench.loggers import plot_loss

    _steps_file(tmp_path)
    lines = []
    real = matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline",
                        lambda self, x, *a, **k: lines.append(x) or real(self, x, *a, **k))
    assert plot_loss(tmp_path, boundaries=((10, "stage 2"), (15, "stage 3"))) == tmp_path / "loss.png"
    assert lines == [10.5, 15.5]
