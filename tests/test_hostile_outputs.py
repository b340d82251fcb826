"""Hostile input, second round: the inspection and output commands (positives, embed, compare, export,
load_backbone).  Nothing a run owns is ever written, an existing output only with --force, every file
through a temporary file and a rename; bad options and files are one line, exit 2, before any work."""

import errno
import hashlib
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

import ssl_bench
from ssl_bench.errors import SSLBenchError
from tests.test_hostile_input import BREAST, _fake_run, cli, one_error_line

# the smallest run positives, embed and export work on: an untrained network (train.epochs=0 saves the
# encoder as the run's checkpoint), a small timm ResNet, batches of 32 (31 candidates per anchor)
SMALL = ["train.epochs=0", "evaluate=[]", "train.batch_size=32", "backbone.name=resnet10t", "objective.hidden_dim=64",
         "objective.projection_dim=32", "train.precision=32-true", "train.threads=2"]


@pytest.fixture(scope="module")
def run0(module_dir) -> Path:
    out = module_dir / "run"
    code, output = cli("run", BREAST, *[x for s in SMALL for x in ("--set", s)], "--out", out, "--quiet")
    assert code == 0, output
    return out


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden temporary files included) → its SHA-256."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# -------------------------------------------------------------------------------------------------
# 1. Output files: never a run's own, an existing one only with --force, written atomically
# -------------------------------------------------------------------------------------------------
def test_positives_never_writes_into_a_runs_own_files(run0, tmp_path):
    before = _snapshot(run0)
    for force in ([], ["--force"]):  # --out RUN/results.png would write its report to RUN/results.json
        code, out = cli("positives", run0, "--selector", "fs", "--k", "1", "--out", run0 / "results.png", *force)
        one_error_line(code, out, f"{run0 / 'results.json'} already exists and is a file of run {run0}",
                       "--force never")
    code, out = cli("positives", run0, "--selector", "fs", "--out", run0 / "checkpoints" / "g.png", "--force")
    one_error_line(code, out, "a file of run", "(checkpoints)")
    code, out = cli("positives", run0, "--selector", "fs", "--out", tmp_path / "report.json")
    one_error_line(code, out, "--out", "must end in .png")
    assert _snapshot(run0) == before


@pytest.mark.slow
def test_positives_refuses_existing_outputs_without_force_and_replaces_them_with_it(run0, tmp_path):
    (tmp_path / "g.png").write_text("keep me")
    (tmp_path / "h.json").write_text("keep me")  # the report beside a new figure
    for name in ("g.png", "h.png"):
        code, out = cli("positives", run0, "--selector", "fs", "--out", tmp_path / name)
        one_error_line(code, out, "already exists", "--force")
    assert (tmp_path / "g.png").read_text() == (tmp_path / "h.json").read_text() == "keep me"
    code, out = cli("positives", run0, "--selector", "fs", "--k", "2", "--gallery", "2", "--out", tmp_path / "h.png",
                    "--force")
    assert code == 0, out
    rep = json.loads((tmp_path / "h.json").read_text())
    assert rep["k"] == 2 and set(rep["selectors"]["fs"]) == {"precision_top1", "precision_top2", "coverage_top1"}
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "h.json", "h.png"]  # no temporary file left


def test_export_never_replaces_a_runs_checkpoint(run0, tmp_path):
    before = _snapshot(run0)
    for target in (run0 / "checkpoints" / "last.pt", run0 / "checkpoints" / "other.pt", run0 / "results.json"):
        code, out = cli("export", run0, "--force", "--out", target)
        one_error_line(code, out, f"--out {target}", f"a file of run {run0}")
    ckpt = tmp_path / "ckpt.pt"  # a checkpoint file outside any run directory, exported onto itself
    ckpt.write_bytes((run0 / "checkpoints" / "last.pt").read_bytes())
    code, out = cli("export", ckpt, "--force", "--out", ckpt)
    one_error_line(code, out, "is the checkpoint being exported")
    assert _snapshot(run0) == before


def test_embed_never_writes_into_a_run_and_checks_its_outputs_first(run0, tmp_path):
    before = _snapshot(run0)
    code, out = cli("embed", run0, "--out", run0 / "checkpoints" / "e.npy", "--force")
    one_error_line(code, out, "a file of run", "(checkpoints)")
    code, out = cli("embed", run0, "--out", tmp_path / "e.csv", "--png", run0 / "loss.png", "--force")
    one_error_line(code, out, "--png", "a file of run", "(loss.png)")
    code, out = cli("embed", run0, "--out", tmp_path / "e.csv", "--png", tmp_path / "e.csv")
    one_error_line(code, out, "--png", "must end in .png")
    (tmp_path / "e.png").write_text("keep me")
    code, out = cli("embed", run0, "--out", tmp_path / "e.csv", "--png", tmp_path / "e.png")
    one_error_line(code, out, "--png", "already exists")
    assert _snapshot(run0) == before and sorted(p.name for p in tmp_path.iterdir()) == ["e.png"]


def _runs_with_selector_precision(root: Path) -> Path:
    for seed in (0, 1):
        run = _fake_run(root, seed=seed)
        lines = [{"epoch": e, "selector_precision": 0.6 + 0.1 * e, "selector_chance": 0.5} for e in (1, 2)]
        damaged = "{damaged\n[1, 2]\n" + "[" * 50000 + "\n"
        (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n" + damaged)
    return root


def test_compare_plot_refuses_existing_figures_and_run_folders(tmp_path):
    root = _runs_with_selector_precision(tmp_path / "runs")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "selector_precision.png").write_text("keep me")
    code, out = cli("compare", root, "--plot", plots)
    one_error_line(code, out, f"--plot {plots / 'selector_precision.png'} already exists", "--force")
    assert (plots / "selector_precision.png").read_text() == "keep me"
    run = root / "BYOL-0"
    code, out = cli("compare", root, "--plot", run / "checkpoints", "--force")
    one_error_line(code, out, "--plot", f"a file of run {run}", "(checkpoints)")
    code, out = cli("compare", root, "--plot", plots, "--force")  # damaged metrics.jsonl lines are passed over
    assert code == 0, out
    assert (plots / "selector_precision.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in plots.iterdir()) == ["selector_precision.png"]


def test_a_figure_the_disk_cannot_take_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch):
    """Disk full while saving a figure: half a PNG is written, then ENOSPC."""
    from matplotlib.figure import Figure

    def full_disk(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    root = _runs_with_selector_precision(tmp_path / "runs")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "selector_precision.png").write_text("the previous figure")
    monkeypatch.setattr(Figure, "savefig", full_disk)
    code, out = cli("compare", root, "--plot", plots, "--force", "--format", "csv")
    errors = "\n".join(ln for ln in out.splitlines() if ln.startswith("error"))
    one_error_line(code, errors, f"cannot write {plots / 'selector_precision.png'}: No space left on device",
                   "is intact")
    assert "BYOL,D · knn" in out  # the table was printed before
    assert (plots / "selector_precision.png").read_text() == "the previous figure"
    assert sorted(p.name for p in plots.iterdir()) == ["selector_precision.png"]  # no temporary file left


# -------------------------------------------------------------------------------------------------
# 5., 14., 15. Options checked before any work
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--k", "5000"], "--k 5000 is too large: a selector picks among the 31 other images of a batch"),
    (["--k", "32"], "--k 32 is too large"),
    (["--k", "0"], "--k must be a whole number of at least 1, got 0"),
    (["--gallery", "0"], "--gallery must be a whole number of at least 1, got 0"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--selector", "tracin:normalize=true,normalize=false"], "option 'normalize' is given twice"),
])
def test_positives_options_are_checked_before_the_analysis(run0, tmp_path, args, message):
    code, out = cli("positives", run0, "--selector", "fs", *args, "--out", tmp_path / "g.png")
    one_error_line(code, out, message)
    assert not any(tmp_path.iterdir())


def test_embed_device_is_checked_first(run0, tmp_path):
    code, out = cli("embed", run0, "--device", "bogus", "--out", tmp_path / "e.csv")
    one_error_line(code, out, "--device 'bogus' is not a device")
    with pytest.raises(SSLBenchError, match="--device 'cuda:7'|--device is 'cuda:7'"):
        from ssl_bench.embed import select_option_device

        select_option_device("cuda:7")
    assert not any(tmp_path.iterdir())


# -------------------------------------------------------------------------------------------------
# 6. One YAML loader: embed --data, positives --selector options, finished producer runs
# -------------------------------------------------------------------------------------------------
SMALL_BOMB = "".join(  # 9**6 = 531,441 values from 200 bytes: more than the safe loader allows
    ["name: medmnist\nflag: breastmnist\na: &a [x, x, x, x, x, x, x, x, x]\n"]
    + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcde", "bcdef")]
)


@pytest.mark.parametrize("text, message", [
    ("name: medmnist\nflag: breastmnist\nflag: pneumoniamnist\n", "line 3: key 'flag' is given twice in one mapping"),
    (SMALL_BOMB, "its anchors and aliases expand to more than"),
])
def test_embed_data_files_go_through_the_safe_loader(run0, tmp_path, text, message):
    data = tmp_path / "data.yaml"
    data.write_text(text)
    code, out = cli("embed", run0, "--data", data, "--out", tmp_path / "e.csv")
    one_error_line(code, out, f"--data {data}", message)
    inline = "{name: medmnist, flag: breastmnist, flag: pneumoniamnist}"
    code, out = cli("embed", run0, "--data", inline, "--out", tmp_path / "e.csv")
    one_error_line(code, out, "--data", "key 'flag' is given twice")
    assert not (tmp_path / "e.csv").exists()


def test_a_producer_run_with_a_key_given_twice_is_passed_over(tmp_path):
    from ssl_bench.producer_runs import finished_runs

    run = tmp_path / "r" / "seed0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    (run / "results.json").write_text("{}")
    (run / "recipe.yaml").write_text("name: r\na: 2\na: 1\n")
    assert finished_runs({"name": "r", "out_dir": str(tmp_path), "a": 1}) == []
    (run / "recipe.yaml").write_text("name: r\na: 1\n")
    assert finished_runs({"name": "r", "out_dir": str(tmp_path), "a": 1}) == [run]


# -------------------------------------------------------------------------------------------------
# 7. compare: a malformed run is listed as unreadable, a non-finite value is shown, never averaged
# -------------------------------------------------------------------------------------------------
def _results(run: Path, **changes) -> None:
    res = json.loads((run / "results.json").read_text())
    res.update(changes)
    (run / "results.json").write_text(json.dumps(res))


def _recipe(run: Path, line: str) -> None:
    (run / "recipe.yaml").write_text(f"name: r\nseed: 2\n{line}\n")


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("damage, reason", [
    (lambda r: _results(r, eval={"knn": [1, 2]}), "eval.knn is not a mapping of metric values"),
    (lambda r: _results(r, method=["BYOL"]), "its 'method' is not a string"),
    (lambda r: _results(r, dataset={"name": "D"}), "its 'dataset' is not a string"),
    (lambda r: _results(r, seed=10**400), "its 'seed' is not an integer in [0, 2**63)"),
    (lambda r: _results(r, eval={"knn": {"auc": 0.7, "label_fraction": "half"}}),
     "eval.knn.label_fraction is not a finite number"),
    (lambda r: (r / "results.json").write_text('{"method": "BYOL", "dataset": "D", "seed": 2, "eval": ' + DEEP + "}"),
     "nests too deeply"),
    (lambda r: _recipe(r, "selector: none"), "its selector is not a mapping"),
    (lambda r: _recipe(r, "headline_metric: [auc]"), "its headline_metric is not a string"),
    (lambda r: _recipe(r, "selector: {model: [a]}"), "selector.model is not a string"),
    (lambda r: _recipe(r, "when: 2024-01-01"), "holds a value that is not plain data"),
    (lambda r: _recipe(r, "a: " + "[" * 5000 + "]" * 5000), "nest"),  # the YAML loader's own limit, or compare's
])
def test_compare_lists_a_malformed_run_as_unreadable(tmp_path, damage, reason):
    root = tmp_path / "runs"
    _fake_run(root, seed=0, auc=0.7)
    _fake_run(root, seed=1, auc=0.8)
    bad = _fake_run(root, seed=2, auc=0.1)
    damage(bad)
    code, out = cli("compare", root, "--format", "markdown")
    assert code == 0 and "| BYOL | 0.750(.071) n=2 |" in out, out
    assert f"unreadable run, left out: {bad.resolve()} (" in out and reason in out, out
    code, _ = cli("compare", root, "--format", "markdown", "--strict")
    assert code == 1


def test_compare_shows_non_finite_values_and_never_averages_them(tmp_path):
    root = tmp_path / "runs"
    for method, odd in (("NaN", "NaN"), ("Inf", "Infinity"), ("Null", "null"), ("Huge", "1" + "0" * 400)):
        for seed, auc in ((0, "0.7"), (1, odd)):
            run = _fake_run(root, method=method, seed=seed)
            knn = f'{{"auc": {auc}, "accuracy": 0.5}}'  # NaN, Infinity, a 401-digit integer as JSON text
            head = f'"method": "{method}", "dataset": "D", "seed": {seed}'
            (run / "results.json").write_text(f'{{{head}, "eval": {{"knn": {knn}}}}}')
    _fake_run(root, method="Fine", seed=0, auc=0.6)
    code, out = cli("compare", root, "--format", "markdown")
    assert code == 0, out
    for method in ("NaN", "Inf", "Null", "Huge"):
        assert f"| {method} | nan n=2 |" in out, out
        assert f"not a finite number, its cell shows nan: {(root / f'{method}-1').resolve()} eval.knn.auc = " in out
    assert "| Fine | **0.600** n=1 |" in out  # a finite cell is still marked best
    assert "= inf" in out and "= nan" in out and "= null" in out and "digits)" in out
    stats = ssl_bench.compare([root]).set_index("method")
    assert math.isnan(stats.loc["Inf", "mean"]) and stats.loc["Inf", "count"] == 2  # NaN, not inf; both seeds counted
    code, out = cli("compare", root, "--format", "markdown", "--metric", "accuracy")  # those runs' other metrics
    assert "| Inf | **0.500(.000)** n=2 |" in out and "not a finite number" not in out


# -------------------------------------------------------------------------------------------------
# 12. load_backbone: an export file is checked before timm is asked for anything
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(run0, module_dir) -> Path:
    out = module_dir / "backbone.pt"
    code, output = cli("export", run0, "--out", out)
    assert code == 0, output
    return out


def _state_dict_with_a_wrong_shape(state: dict) -> dict:
    key = next(k for k, v in state["state_dict"].items() if v.ndim == 4)
    return {**state["state_dict"], key: torch.zeros(1, 1, 1, 1)}


@pytest.mark.parametrize("change, message", [
    (lambda s: {"timm_name": "hf-hub:timm/resnet18.a1_in1k"},
     "timm_name 'hf-hub:timm/resnet18.a1_in1k' is not a model of timm's local list"),
    (lambda s: {"timm_name": "no_such_net"}, "timm_name 'no_such_net' is not a model"),
    (lambda s: {"timm_kwargs": {"checkpoint_path": "/etc/passwd"}}, "'checkpoint_path' is not one an export may carry"),
    (lambda s: {"timm_kwargs": {"pretrained_cfg_overlay": {"hf_hub_id": "x/y"}}},
     "'pretrained_cfg_overlay' is not one"),
    (lambda s: {"timm_kwargs": {"drop_rate": {"a": 1}}}, "'drop_rate' must be a number, string or list"),
    (lambda s: {"timm_kwargs": {"global_pool": "nonsense"}}, "does not rebuild timm 'resnet10t'"),
    (lambda s: {"in_chans": "3"}, "in_chans must be a whole number"),
    (lambda s: {"std": [0.0]}, "std must be 1 finite numbers"),
    (lambda s: {"state_dict": _state_dict_with_a_wrong_shape(s)},
     "does not rebuild timm 'resnet10t': RuntimeError: size mismatch"),
])
def test_load_backbone_checks_the_export_file(exported, tmp_path, monkeypatch, change, message):
    from timm.models import _factory

    touched = []

    def hub(*args, **kwargs):
        touched.append(("hub", args))
        raise OSError("the hub was contacted")

    monkeypatch.setattr(_factory, "load_model_config_from_hf", hub)
    monkeypatch.setattr(_factory, "load_checkpoint", lambda *args, **kwargs: touched.append(("file", args)))
    state = torch.load(exported, weights_only=True)
    bad = tmp_path / "bad.pt"
    torch.save({**state, **change(state)}, bad)
    with pytest.raises(SSLBenchError, match=re.escape(f"backbone export {bad}")) as e:
        ssl_bench.load_backbone(bad)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert touched == []  # timm neither asked the hub nor read another file
    net = ssl_bench.load_backbone(exported)  # the file as written loads
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, net.feature_dim)
