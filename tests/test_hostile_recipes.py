"""Hostile input, second round: recipes, loggers, sweeps and resumes.  Every refusal is one line,
exit code 2, with nothing written (or, for a run already claimed, the reason in its status.json)."""

import shutil
from pathlib import Path

import pytest
import torch

from ssl_bench import safeyaml
from ssl_bench.errors import SSLBenchError
from ssl_bench.sweep import plan_sweep
from tests.test_hostile_input import BREAST, cli, one_error_line, write_recipe

TINY = ["--set", "backbone.name=mobilenetv3_small_050", "--set", "backbone.small_image_stem=false",
        "--set", "backbone.stem_pool=false", "--set", "objective.hidden_dim=256", "--set", "train.batch_size=64",
        "--set", "train.epochs=1", "--set", "evaluate=[]", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(module_dir):
    """A finished one-epoch BreastMNIST run (1-channel images) with its checkpoint."""
    threads = torch.get_num_threads()
    try:
        code, out = cli("run", BREAST, *TINY, "--out", module_dir / "tiny")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, out
    return module_dir / "tiny"


# -------------------------------------------------------------------------------------------------
# Sweep folders are one per combination
# -------------------------------------------------------------------------------------------------
def test_sweep_values_that_differ_only_in_unsafe_characters_get_their_own_folders(tmp_path):
    jobs = plan_sweep(BREAST, ["method=BYOL-α,BYOL-β,a/b,a_b"], [0], [], str(tmp_path))
    folders = [j.out.parent.name for j in jobs]
    assert len(set(folders)) == 4, folders
    assert "method=a_b" in folders  # a name that is already safe keeps its plain folder (old sweeps resume)
    assert all("~" in f for f in folders if f != "method=a_b")


def test_sweep_runs_a_value_given_twice_once(tmp_path):
    jobs = plan_sweep(BREAST, ["method=X,X"], [0, 1], [], str(tmp_path))
    assert len(jobs) == 2 and len({j.out for j in jobs}) == 2


def test_sweep_refuses_folders_that_a_case_insensitive_disk_would_merge(tmp_path):
    with pytest.raises(SSLBenchError, match="case-insensitive"):
        plan_sweep(BREAST, ["method=BYOL,byol"], [0], [], str(tmp_path))


# -------------------------------------------------------------------------------------------------
# Logger options are checked with the recipe (show == run), before anything is written
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [
    ("[{name: mlflow, tracking_uri: 5}]", "log[0].tracking_uri (mlflow) must be a non-empty string"),
    ("[{name: mlflow, tracking_uri: 'gopher://x'}]", "unknown scheme 'gopher'"),
    ("[csv, csv]", "logger csv is named twice"),
    ("[{name: wandb, mode: bogus}]", "log[0].mode (wandb) must be one of online, offline, disabled"),
    ("[{name: wandb, tags: 5}]", "log[0].tags (wandb) must be a list of strings"),
])
@pytest.mark.parametrize("command", ["show", "run"])
def test_bad_logger_options_are_one_line_in_show_and_run(tmp_path, value, message, command):
    extra = ["--out", tmp_path / "never"] if command == "run" else []
    code, out = cli(command, BREAST, "--set", f"log={value}", *extra)
    one_error_line(code, out, message)
    assert not (tmp_path / "never").exists()


def test_an_unreachable_mlflow_server_is_one_line_before_the_run_starts(tmp_path):
    code, out = cli("run", BREAST, *TINY, "--set", "log=[{name: mlflow, tracking_uri: 'http://127.0.0.1:9'}]",
                    "--out", tmp_path / "never")
    one_error_line(code, out, "MLflow server at http://127.0.0.1:9 cannot be reached")
    assert not (tmp_path / "never").exists()


def test_a_logger_that_fails_to_start_marks_the_claimed_run_failed(tmp_path, monkeypatch):
    from ssl_bench import runs
    from ssl_bench.loggers import RunLoggers

    def broken(self, b, cfg):
        raise RuntimeError("backend exploded\nsecond line")

    monkeypatch.setattr(RunLoggers, "_open", broken)
    code, out = cli("run", BREAST, *TINY, "--set", "log=[csv]", "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in out, out
    assert "error: recipe key log[0]: csv could not start: RuntimeError: backend exploded" in out.splitlines()
    status = runs.read_status(tmp_path / "run")
    assert status["status"] == "failed" and "csv could not start" in status["reason"]


# -------------------------------------------------------------------------------------------------
# evaluate: bare names, as log: allows; anything else is one line
# -------------------------------------------------------------------------------------------------
def test_evaluate_takes_bare_names(tmp_path):
    code, out = cli("show", BREAST, "--set", "evaluate=[knn, linear]")
    assert code == 0, out
    assert "- name: knn" in out and "- name: linear" in out and "k: 20" in out  # defaults filled as for a block


@pytest.mark.parametrize("value", ["[5]", "[[knn]]", "[{k: 5}]"])
def test_an_evaluate_entry_that_is_no_name_is_one_line(value):
    code, out = cli("show", BREAST, "--set", f"evaluate={value}")
    one_error_line(code, out, "recipe key evaluate[0] must be a name or {name: …, options}")


# -------------------------------------------------------------------------------------------------
# Deep nesting: YAML, --set keys and values, JSON run files
# -------------------------------------------------------------------------------------------------
def test_a_deeply_nested_recipe_is_one_line(tmp_path):
    deep = write_recipe(tmp_path / "deep.yaml", f"extends: {BREAST}\nx: " + "[" * 3000 + "]" * 3000 + "\n")
    code, out = cli("show", deep)
    one_error_line(code, out, "deep.yaml line 2: nested more than", "levels deep")
    block = write_recipe(tmp_path / "block.yaml",
                         f"extends: {BREAST}\nx:\n" + "".join(" " * i + "a:\n" for i in range(1, 200)))
    code, out = cli("show", block)
    one_error_line(code, out, "block.yaml line", "nested more than")


def test_deep_set_keys_and_values_are_one_line():
    code, out = cli("show", BREAST, "--set", "train." + ".".join(["a"] * 3000) + "=1")
    one_error_line(code, out, "nested more than")
    code, out = cli("show", BREAST, "--set", "name=" + "{a: " * 3000 + "1" + "}" * 3000)
    one_error_line(code, out, "--set name", "nested more than")


def test_a_legitimate_recipe_is_not_too_deep():
    assert safeyaml.load("a: {b: [{c: {d: [1]}}]}", "x") == {"a": {"b": [{"c": {"d": [1]}}]}}


def test_json_nested_too_deeply_or_broken_is_one_line():
    with pytest.raises(SSLBenchError, match="results.json is nested too deeply"):
        safeyaml.load_json("[" * 100_000 + "]" * 100_000, "results.json")
    with pytest.raises(SSLBenchError, match="status.json is not valid JSON"):
        safeyaml.load_json("{", "status.json")


# -------------------------------------------------------------------------------------------------
# Resume and pretrained selectors: checked before the run directory is touched
# -------------------------------------------------------------------------------------------------
def _unfinished_copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    (dest / "results.json").unlink()
    return dest


@pytest.mark.parametrize("damage", ["generator", "numpy", "missing"])
def test_resume_with_a_damaged_rng_state_is_one_line_and_touches_nothing(tiny_run, tmp_path, damage):
    run = _unfinished_copy(tiny_run, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    if damage == "generator":
        state["rng"]["generators"]["augment"] = torch.zeros(3, dtype=torch.uint8)
    elif damage == "numpy":
        state["rng"]["numpy"]["keys"] = torch.zeros(7, dtype=torch.int64)
    else:
        del state["rng"]["torch"]
    torch.save(state, last)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, out = cli("run", "--resume", run)
    one_error_line(code, out, f"checkpoint {last}: its random-number state is damaged")
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # recipe.yaml too
    assert not (run / "status.json").exists()


def test_resume_with_a_bad_epoch_count_is_one_line(tiny_run, tmp_path):
    run = _unfinished_copy(tiny_run, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["epoch"] = -4
    torch.save(state, last)
    code, out = cli("run", "--resume", run)
    one_error_line(code, out, "'epoch' is -4, not a count")
    assert not (run / "status.json").exists()


def test_a_pretrained_selector_of_another_channel_count_is_refused_before_the_run(tiny_run, tmp_path):
    code, out = cli("run", BREAST, *TINY, "--set", "data.flag=retinamnist",
                    "--set", f"selector={{name: fs, model: pretrained, checkpoint: {tiny_run}}}", "--out",
                    tmp_path / "never")
    one_error_line(code, out, "selector.checkpoint", "1-channel images", "data has 3")
    assert not (tmp_path / "never").exists()


# -------------------------------------------------------------------------------------------------
# Multi-node runs say what they need, and what they wait for
# -------------------------------------------------------------------------------------------------
def test_nodes_without_a_rendezvous_address_is_one_line(tmp_path, monkeypatch):
    for var in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    code, out = cli("run", BREAST, *TINY, "--nodes", "2", "--out", tmp_path / "never")
    one_error_line(code, out, "--nodes 2: set MASTER_ADDR, MASTER_PORT, NODE_RANK")
    assert not (tmp_path / "never").exists()


def test_out_dir_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    from ssl_bench.runs import create_run_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run = create_run_dir(None, "~/runs", "r", 0)
    assert run.parent == tmp_path / "home" / "runs" / "r" and not (tmp_path / "~").exists()
    assert create_run_dir("~/chosen", "runs", "r", 0) == tmp_path / "home" / "chosen"


def test_a_producer_run_with_a_damaged_recipe_is_passed_over(tmp_path):
    """`selector.checkpoint: RECIPE.yaml` looks for that recipe's finished runs: one whose recipe.yaml has
    a train or selector block that is no mapping, or a results.json nested too deeply, is skipped."""
    from ssl_bench.producer_runs import finished_runs
    from ssl_bench.recipe import load_recipe

    cfg = load_recipe(BREAST, [f"out_dir={tmp_path}"]).cfg
    for i, (recipe, results) in enumerate([("train: 5\nselector: [x]\n", "{}"),
                                           ("name: x\n", "[" * 100_000 + "]" * 100_000)]):
        d = tmp_path / cfg["name"] / f"seed0-{i}"
        (d / "checkpoints").mkdir(parents=True)
        (d / "checkpoints" / "last.pt").write_bytes(b"x")
        (d / "recipe.yaml").write_text(recipe)
        (d / "results.json").write_text(results)
    assert finished_runs(cfg) == []
