"""`ssl-bench sweep` + `ssl-bench compare` on real short BreastMNIST runs."""

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.compare import compare, fmt_cell, load_runs
from ssl_bench.errors import SSLBenchError

REPO = Path(__file__).resolve().parents[1]
BREAST = str(REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml")
FAST = ["--set", "train.epochs=1", "--set", "backbone.small_image_stem=false", "--set", "objective.hidden_dim=512",
        "--set", "evaluate=[{name: knn, k: 10}]"]


def test_fmt_cell_is_the_papers_style():
    assert fmt_cell(0.40812, 0.0071, 5) == "0.408(.007)"
    assert fmt_cell(0.5, float("nan"), 1) == "0.500"
    assert fmt_cell(0.91, 1.234, 3) == "0.910(1.234)"
    assert fmt_cell(float("nan"), 0.1, 2) == "–"


@pytest.fixture(scope="module")
def swept(module_dir):
    root = module_dir / "sweep"
    root.mkdir()
    args = ["sweep", BREAST, "--grid", "selector.name=none,oracle", "--seeds", "0,1", *FAST, "--out-root", str(root),
            "--quiet"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "sweep: 4 ran, 0 already finished, 0 failed" in res.output
    return root, args


def _copy(swept, tmp_path):
    """A private copy of the swept runs (tests never change the shared fixture: any order works)."""
    import shutil

    root, args = swept
    mine = tmp_path / "sweep"
    shutil.copytree(root, mine)
    return mine, [str(mine) if a == str(root) else a for a in args]


@pytest.mark.slow
@pytest.mark.e2e
def test_sweep_skips_finished_and_reruns_interrupted(swept, tmp_path):
    root, args = _copy(swept, tmp_path)
    runs = sorted(p.parent for p in root.rglob("results.json"))
    assert [p.relative_to(root).as_posix() for p in runs] == [
        "byol_breastmnist/selector.name=none/seed0", "byol_breastmnist/selector.name=none/seed1",
        "byol_breastmnist/selector.name=oracle/seed0", "byol_breastmnist/selector.name=oracle/seed1",
    ]
    assert json.loads((runs[3] / "results.json").read_text())["seed"] == 1
    # interrupted after its last checkpoint (results.json never written): resumed, same results
    before = json.loads((runs[2] / "results.json").read_text())
    (runs[2] / "results.json").unlink()
    # interrupted before its first checkpoint: kept aside, run again
    lost = runs[1] / "results.json"
    import shutil

    shutil.rmtree(runs[1] / "checkpoints")
    lost.unlink()
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "sweep: 2 ran, 2 already finished, 0 failed" in res.output
    assert "selector.name=oracle seed=0: interrupted earlier; resuming from its checkpoint" in res.output
    after = json.loads((runs[2] / "results.json").read_text())
    assert after["eval"] == before["eval"] and after["seed"] == before["seed"]
    assert lost.is_file()
    assert len(list(runs[1].parent.glob("seed1.incomplete-*"))) == 1  # the interrupted run is kept, not deleted
    dry = CliRunner().invoke(main, [*args, "--dry-run"], catch_exceptions=False)
    assert dry.output.count("# done: ssl-bench run") == 4


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_means_and_stds_match_the_results_files(swept, tmp_path):
    root, _ = _copy(swept, tmp_path)
    unfinished = root / "byol_breastmnist" / "selector.name=none" / "seed0.incomplete-20260101-000000"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text(
        (root / "byol_breastmnist" / "selector.name=none" / "seed0" / "recipe.yaml").read_text())
    table, csv_text, loaded = compare([str(root)], metric="auc", fmt="csv")
    assert set(table.index) == {"BYOL", "BYOL-Sup"} and list(table.columns) == ["BreastMNIST · knn"]
    assert loaded.skipped == [str(unfinished.resolve())]  # an unfinished run (no results.json) is listed, not averaged
    for method, sel in (("BYOL", "none"), ("BYOL-Sup", "oracle")):
        vals = [json.loads((root / "byol_breastmnist" / f"selector.name={sel}" / f"seed{s}" / "results.json")
                           .read_text())["eval"]["knn"]["auc"] for s in (0, 1)]
        cell = table.loc[method, "BreastMNIST · knn"].replace("**", "")
        assert cell == f"{fmt_cell(statistics.mean(vals), statistics.stdev(vals), 2)} n=2"
        assert f"{method},BreastMNIST · knn," in csv_text
    marked, _, _ = compare([str(root)], metric="auc", fmt="markdown")
    assert marked.loc[:, "BreastMNIST · knn"].str.startswith("**").sum() == 1  # one best cell
    res = CliRunner().invoke(main, ["compare", str(root), "--format", "markdown", "--out", str(tmp_path / "t.md")])
    assert res.exit_code == 0 and (tmp_path / "t.md").read_text().startswith("| method | BreastMNIST · knn |")
    assert "seed0.incomplete" in res.output  # said on stderr, mixed into CliRunner output


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_refuses_to_mix_different_recipes(swept, tmp_path):
    root, _ = swept
    other = tmp_path / "lr"
    res = CliRunner().invoke(main, ["run", BREAST, *FAST, "--set", "train.lr=0.01", "--out", str(other), "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0
    with pytest.raises(SSLBenchError, match=r"runs of BYOL on BreastMNIST differ in train\.lr"):
        compare([str(root), str(other)])
    table, _, _ = compare([str(root), str(other)], allow_mixed=True)
    assert table.loc["BYOL"].iloc[0].endswith("n=3")
    res = CliRunner().invoke(main, ["compare", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no run directory or file matches" in res.output


def test_load_runs_lists_foreign_json_as_unreadable(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"hello": 1}))
    loaded = load_runs([str(tmp_path)])
    assert loaded.frame.empty and loaded.unreadable[0][1] == "has no 'method' (not an ssl-bench results file)"
    with pytest.raises(SSLBenchError, match="no finished runs .* unreadable: .*not an ssl-bench results file"):
        compare([str(tmp_path)])


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_plots_selector_precision(swept, tmp_path):
    root, _ = swept
    res = CliRunner().invoke(main, ["compare", str(root), "--plot", str(tmp_path / "plots")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    png = tmp_path / "plots" / "selector_precision.png"
    assert f"plot: {png}" in res.output
    from PIL import Image

    assert Image.open(png).size[0] > 400
    assert not (tmp_path / "plots" / "label_fraction_auc.png").exists()  # no fine-tuning runs here


def test_selector_precision_plot_adds_a_panel_fitted_to_the_selectors_below_the_oracle(tmp_path):
    """Oracle-like selectors (same label by construction) sit at 1.0; a second panel fits the y axis
    to the others, which differ by a few points (one panel when there is no such selector)."""
    from PIL import Image

    from ssl_bench.plots import plot_selector_precision

    runs = {}
    for name, values in (("oracle", [1.0, 1.0, 1.0]), ("fs", [0.55, 0.56, 0.57]), ("tracin", [0.54, 0.53, 0.53])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e + 1, "selector_precision": v, "selector_chance": 0.47}) + "\n"
            for e, v in enumerate(values)))
        runs[str(tmp_path / name)] = name
    both = Image.open(plot_selector_precision(runs, tmp_path / "both.png")).size[0]
    del runs[str(tmp_path / "oracle")]
    one = Image.open(plot_selector_precision(runs, tmp_path / "one.png")).size[0]
    assert both > 1.6 * one


def test_label_fraction_plot_from_a_frame(tmp_path):
    import pandas as pd

    from ssl_bench.plots import plot_label_fractions

    rows = [
        {"method": m, "dataset": "BreastMNIST", "metric": "auc", "label_fraction": f, "value": v + 0.01 * s,
         "protocol": f"finetune@{f:g}"}
        for m, base in (("BYOL", 0.7), ("BYOL-TracIn", 0.72))
        for f, v in ((0.1, base), (0.5, base + 0.05), (1.0, base + 0.08)) for s in range(3)
    ]
    out = plot_label_fractions(pd.DataFrame(rows), "auc", tmp_path / "lf.png")
    assert out is not None and out.is_file()


def test_label_fraction_panels_keep_transfer_evaluations_apart():
    """A HAM10000 run fine-tuned on HAM10000 (10 % and all labels) and transferred to BreastMNIST
    (all labels): the transfer's 1.0 is a point of its own panel, not pooled with HAM10000's."""
    import pandas as pd

    from ssl_bench.plots import label_fraction_table

    rows = [
        {"method": "BYOL", "dataset": "HAM10000", "metric": "auc", "label_fraction": f, "value": v, "protocol": p}
        for p, f, v in (("finetune@0.1", 0.1, 0.66), ("finetune@1", 1.0, 0.78),
                        ("transfer:BreastMNIST/finetune@1", 1.0, 0.61))
    ] + [{"method": "BYOL", "dataset": "HAM10000", "metric": "auc", "label_fraction": None, "value": 0.82,
          "protocol": "linear"}]
    got = label_fraction_table(pd.DataFrame(rows), "auc")
    assert got[["panel", "label_fraction", "mean"]].values.tolist() == [
        ["HAM10000", 0.1, 0.66], ["HAM10000", 1.0, 0.78], ["HAM10000 → BreastMNIST", 1.0, 0.61]]


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_uses_the_recipes_headline_metric_and_aliases(swept, tmp_path):
    root, _ = swept
    res = json.loads(next(root.rglob("results.json")).read_text())
    assert res["headline_metric"] == "auc"
    default, _, _ = compare([str(root)], fmt="csv")
    by_auc, _, _ = compare([str(root)], metric="auc", fmt="csv")
    assert default.equals(by_auc)
    bma, _, _ = compare([str(root)], metric="bma", fmt="csv")
    balanced, _, _ = compare([str(root)], metric="balanced_accuracy", fmt="csv")
    assert bma.equals(balanced) and not bma.equals(by_auc)
    # a run whose recipe names another headline metric cannot be tabulated without --metric
    other = tmp_path / "bma"
    r = CliRunner().invoke(main, ["run", BREAST, *FAST, "--set", "headline_metric=balanced_accuracy", "--out",
                                  str(other), "--quiet"])
    assert r.exit_code == 0 and "headline balanced_accuracy: knn" in r.output
    with pytest.raises(SSLBenchError, match="different headline metrics"):
        compare([str(root), str(other)], allow_mixed=True)
