"""`ssl-bench evaluate RUN`: evaluations on a finished run's checkpoint, without training, never
overwriting; `compare` reads the new results beside the run's own."""

import json

import pytest
import yaml
from click.testing import CliRunner

from ssl_bench.cli import main
from tests.test_cli import BREAST, FAST


def _cli(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def old_run(module_dir):
    """A finished run as an ssl-bench before `evaluate` wrote it: its recipe.yaml holds the old
    fine-tuning protocol's resolved block (SGD, lr 0.01, the pre-training views; no `optimizer`) and
    its results.json no `eval_blocks`."""
    out = module_dir / "old"
    res = _cli(["run", BREAST, "--set", "train.epochs=1", "--set", "backbone.small_image_stem=false", *FAST,
                "--set", "evaluate=[{name: knn}]", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    recipe["evaluate"] = [
        {"name": "knn", "k": 20},
        {"name": "finetune", "label_fraction": 0.1, "epochs": 2, "lr": 0.01, "batch_size": 128, "weight_decay": 0.0001,
         "seeds": 1,
         "from_scratch": False, "select_split": "val", "select_metric": "auc", "test_split": "test",
         "augment": {"name": "byol", "size": None, "blur": 0.0, "solarize": 0.0}},
    ]
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    results = json.loads((out / "results.json").read_text())
    results.pop("eval_blocks")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return out


@pytest.mark.slow
@pytest.mark.e2e
def test_evaluate_a_run_made_before_the_command_existed(old_run):
    before = {p.name: p.read_bytes() for p in old_run.iterdir() if p.is_file()}
    res = _cli(["evaluate", str(old_run)])
    assert res.exit_code == 0, res.output
    assert "written by an earlier ssl-bench" in res.output and "lr, weight_decay, augment dropped" in res.output
    assert "finetune@0.1 seed 0 epoch 2/2" in res.output  # a line per fine-tuning epoch
    files = sorted(old_run.glob("results-evaluate-*.json"))
    assert len(files) == 1
    new = json.loads(files[0].read_text())
    assert set(new["eval"]) == {"knn", "finetune@0.1"} and new["evaluated_epoch"] == 1
    block = new["eval_blocks"]["finetune@0.1"]
    assert (block["optimizer"] == "adam" and block["lr"] == 1e-3 and block["augment"] == {"name": "flip"}
            and block["epochs"] == 2)
    ft = new["eval"]["finetune@0.1"]
    assert {"majority_accuracy", "chance_balanced_accuracy", "pred_histogram", "chosen_epoch"} <= set(ft)
    assert [h["epoch"] for h in ft["per_seed"][0]["val_history"]] == [1, 2]
    # nothing else touched
    assert {p.name: p.read_bytes() for p in old_run.iterdir() if p.is_file() and p not in files} == before

    # another evaluation: another file; compare reads both, the newest value of each protocol
    res = _cli(["evaluate", str(old_run), "--set", "evaluate=[{name: linear}, {name: knn, k: 5}]"])
    assert res.exit_code == 0, res.output
    assert len(list(old_run.glob("results-evaluate-*.json"))) == 2
    from ssl_bench.compare import load_runs

    loaded = load_runs([str(old_run)])
    assert set(loaded.frame["protocol"]) == {"knn", "linear", "finetune@0.1"}
    newest_knn = json.loads(sorted(old_run.glob("results-evaluate-*.json"))[-1].read_text())["eval"]["knn"]["auc"]
    got = loaded.frame[(loaded.frame["protocol"] == "knn") & (loaded.frame["metric"] == "auc")]["value"]
    assert list(got) == [pytest.approx(newest_knn)] and loaded.reevaluated == [str(old_run.resolve())]
    res = _cli(["compare", str(old_run), "--metric", "auc"])
    assert res.exit_code == 0 and "re-evaluated with ssl-bench evaluate" in res.output


@pytest.mark.slow
@pytest.mark.e2e
def test_evaluate_a_kept_epoch_of_a_run_named_by_a_relative_path(tmp_path, monkeypatch):
    """What benchmarks/study2.py runs: `ssl-bench evaluate runs/…/seed0 --epoch 8` from the repository
    (a relative run directory once failed after the evaluations, writing nothing)."""
    out = tmp_path / "runs" / "kept"
    res = _cli(["run", BREAST, "--set", "train.epochs=2", "--set", "train.save_epochs=[1]", *FAST,
                "--set", "evaluate=[]", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path)
    res = _cli(["evaluate", "runs/kept", "--epoch", "1", "--set", "evaluate=[{name: knn, k: 5}]"])
    assert res.exit_code == 0, res.output
    (written,) = out.glob("results-evaluate-*.json")
    new = json.loads(written.read_text())
    assert new["evaluated_epoch"] == 1 and new["checkpoint"] == "checkpoints/epoch0001.pt"
    from ssl_bench.compare import table

    assert "BreastMNIST · knn (epoch 1)" in set(table([out])["column"])


@pytest.mark.slow
@pytest.mark.e2e
def test_evaluate_refuses_what_it_cannot_do_before_writing(old_run, tmp_path):
    n = len(list(old_run.glob("results-evaluate-*.json")))
    res = _cli(["evaluate", str(old_run), "--set", "train.epochs=5"])
    assert res.exit_code == 2 and "changes only the evaluate block" in res.output and "train.epochs" in res.output
    res = _cli(["evaluate", str(old_run), "--set", "evaluate=[{name: finetun}]"])
    assert res.exit_code == 2 and "did you mean 'finetune'" in res.output
    res = _cli(["evaluate", str(old_run), "--epoch", "7"])
    assert res.exit_code == 2 and "epoch0007.pt" in res.output
    res = _cli(["evaluate", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text((old_run / "recipe.yaml").read_text())
    res = _cli(["evaluate", str(unfinished)])
    assert res.exit_code == 2 and "has not finished" in res.output
    assert len(list(old_run.glob("results-evaluate-*.json"))) == n


@pytest.mark.slow
@pytest.mark.e2e
def test_a_notebook_run_puts_back_the_process_settings_and_reports_the_images_it_trained(tmp_path):
    """``ssl_bench.run`` sets torch's threads (``train.threads``) and glibc's malloc for the run, and
    puts them back when it ends; results.json's ``images_per_s`` is what metrics.jsonl logged (a batch
    larger than the 546-image split trains 546 images a step, not batch_size)."""
    import torch

    import ssl_bench

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    run = ssl_bench.run(BREAST, overrides=["train.epochs=1", f"train.threads={want}", "train.batch_size=1024",
                                           "train.drop_last=false", "backbone.small_image_stem=false",
                                           "objective.hidden_dim=256", "evaluate=[]"],
                        out=tmp_path / "run")
    assert torch.get_num_threads() == before
    logged = run.metrics().iloc[0]
    assert logged["images"] == 546
    assert run.results["train"]["images_per_s"] == pytest.approx(logged["images_per_s"])
    assert (run.results["precision"] in ("bf16-mixed", "32-true")
            and run.results["provenance"]["versions"]["lightning-fabric"])
