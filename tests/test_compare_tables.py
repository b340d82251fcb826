"""`compare` on synthetic run directories with known numbers: mean, sample std, n, best mark, formats."""

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.compare import compare, fmt_cell, load_runs

# three seeds each, chosen so that mean ≠ median and the sample std (ddof 1) ≠ the population std
VALUES = {
    "BYOL": [0.70, 0.71, 0.78],
    "BYOL-TracIn": [0.74, 0.75, 0.83],
    "Random": [0.50, 0.52, 0.60],
}
LINEAR = {"BYOL": [0.60, 0.62, 0.70], "BYOL-TracIn": [0.61, 0.61, 0.64], "Random": [0.40, 0.41, 0.49]}


def write_run(root: Path, method: str, seed: int, evals: dict, recipe_extra: dict | None = None,
              headline: str = "auc") -> Path:
    d = root / method / f"seed{seed}"
    d.mkdir(parents=True)
    recipe = {"name": method.lower(), "method": method, "seed": seed, "out_dir": "runs", "train": {"lr": 0.1},
              "headline_metric": headline, **(recipe_extra or {})}
    (d / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    res = {"recipe": recipe["name"], "method": method, "dataset": "HAM10000", "seed": seed, "eval": evals,
           "headline_metric": headline}
    (d / "results.json").write_text(json.dumps(res))
    return d


@pytest.fixture
def runs_root(tmp_path):
    for method, vals in VALUES.items():
        for seed, v in enumerate(vals):
            write_run(tmp_path, method, seed,
                      {"finetune@0.1": {"auc": v, "label_fraction": 0.1}, "linear": {"auc": LINEAR[method][seed]}})
    return tmp_path


def test_cells_are_mean_and_sample_std_over_seeds(runs_root):
    table, _, loaded = compare([str(runs_root)], metric="auc", fmt="markdown")
    assert loaded.frame["run"].nunique() == 9
    for method, vals in VALUES.items():
        cell = table.loc[method, "HAM10000 · finetune@0.1"].replace("**", "")
        mean, std = statistics.mean(vals), statistics.stdev(vals)  # ddof 1
        assert cell == f"{fmt_cell(mean, std, 3)} n=3"
        assert statistics.median(vals) != pytest.approx(mean)  # the table would differ if it showed the median
        assert statistics.pstdev(vals) != pytest.approx(std)  # … or the population std
    # the exact digits of one cell, computed by hand: mean 0.73, stdev sqrt(((-.03)²+(-.02)²+.05²)/2) = 0.0436
    assert table.loc["BYOL", "HAM10000 · finetune@0.1"] == "0.730(.044) n=3"


def test_csv_has_the_unrounded_statistics(runs_root):
    _, text, _ = compare([str(runs_root)], metric="auc", fmt="csv")
    rows = [r.split(",") for r in text.strip().splitlines()]
    head, body = rows[0], rows[1:]
    assert head == ["method", "column", "mean", "std", "n_seeds", "spread", "n_finetune", "repeated_runs",
                    "at_baseline"]
    got = {(r[0], r[1]): (float(r[2]), float(r[3]), int(r[4])) for r in body}
    for method, vals in VALUES.items():
        mean, std, n = got[(method, "HAM10000 · finetune@0.1")]
        assert mean == pytest.approx(statistics.mean(vals)) and std == pytest.approx(statistics.stdev(vals)) and n == 3


def test_best_mean_per_column_is_marked_once_and_lower_is_better_flips_it(runs_root):
    table, _, _ = compare([str(runs_root)], metric="auc", fmt="markdown")
    for col, best in (("HAM10000 · finetune@0.1", "BYOL-TracIn"), ("HAM10000 · linear", "BYOL")):
        marked = [m for m in table.index if table.loc[m, col].startswith("**")]
        assert marked == [best], (col, marked)
    low, _, _ = compare([str(runs_root)], metric="auc", fmt="markdown", lower_is_better=True)
    assert [m for m in low.index if low.loc[m, "HAM10000 · linear"].startswith("**")] == ["Random"]
    res = CliRunner().invoke(main, ["compare", str(runs_root), "--metric", "auc", "--format", "markdown",
                                    "--lower-is-better"])
    assert res.exit_code == 0 and "**0.433(.049)** n=3" in res.output  # Random's linear cell


def test_latex_table(runs_root):
    _, tex, _ = compare([str(runs_root)], metric="auc", fmt="latex")
    lines = tex.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lcc}" and lines[-1] == r"\end{tabular}"
    assert r"Method & HAM10000 · finetune@0.1 & HAM10000 · linear \\" in lines
    row = next(ln for ln in lines if ln.startswith("BYOL-TracIn &"))
    assert r"\textbf{0.773(.049)} {\scriptsize n=3}" in row  # best fine-tune cell in bold, n small
    assert row.endswith(r"0.620(.017) {\scriptsize n=3} \\")
    assert sum(ln.count(r"\textbf") for ln in lines) == 2  # one best cell per column


def test_markdown_table_layout(runs_root):
    _, md, _ = compare([str(runs_root)], metric="auc", fmt="markdown")
    lines = md.strip().splitlines()
    assert lines[0] == "| method | HAM10000 · finetune@0.1 | HAM10000 · linear |"
    assert lines[1] == "|---|---|---|"
    assert lines[2:] == [
        "| BYOL | 0.730(.044) n=3 | **0.640(.053)** n=3 |",
        "| BYOL-TracIn | **0.773(.049)** n=3 | 0.620(.017) n=3 |",
        "| Random | 0.540(.053) n=3 | 0.433(.049) n=3 |",
    ]


def test_a_single_seed_has_no_std_and_unequal_seed_counts_are_shown(tmp_path):
    write_run(tmp_path, "BYOL", 0, {"knn": {"auc": 0.7}})
    write_run(tmp_path, "FS", 0, {"knn": {"auc": 0.6}})
    write_run(tmp_path, "FS", 1, {"knn": {"auc": 0.9}})
    table, _, _ = compare([str(tmp_path)], metric="auc", fmt="markdown")
    assert table.loc["BYOL", "HAM10000 · knn"] == "0.700 n=1"
    assert (table.loc["FS", "HAM10000 · knn"] == f"**{fmt_cell(0.75, math.sqrt(0.045), 2)}** n=2"
            == "**0.750(.212)** n=2")


def test_runs_whose_recipes_differ_are_not_averaged(tmp_path):
    write_run(tmp_path, "BYOL", 0, {"knn": {"auc": 0.7}})
    write_run(tmp_path, "BYOL", 1, {"knn": {"auc": 0.8}}, recipe_extra={"train": {"lr": 0.05}})
    from ssl_bench.errors import SSLBenchError

    with pytest.raises(SSLBenchError, match=r"runs of BYOL on HAM10000 differ in train\.lr"):
        compare([str(tmp_path)], metric="auc")
    table, _, _ = compare([str(tmp_path)], metric="auc", allow_mixed=True)
    assert table.loc["BYOL", "HAM10000 · knn"].endswith("n=2")


def test_frame_has_one_row_per_run_protocol_and_metric(runs_root):
    frame = load_runs([str(runs_root)]).frame
    assert len(frame) == 9 * 2  # 9 runs × (finetune@0.1 auc, linear auc); label_fraction is not a metric
    assert set(frame["metric"]) == {"auc"} and frame["label_fraction"].dropna().unique().tolist() == [0.1]


def test_columns_compare_their_numbers_as_numbers():
    """The committed round-2 files have kept-epoch columns: epoch 8 comes before 16, not after 32."""
    study = Path(__file__).resolve().parents[1] / "docs" / "results" / "round2" / "study"
    res = CliRunner().invoke(main, ["compare", str(study), "--metric", "balanced_accuracy", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    header = [c.strip() for c in res.stdout.splitlines()[0].strip("|").split("|")][1:]
    epochs = [int(c.split("(epoch ")[1].rstrip(")")) for c in header if c.startswith("HAM10000 · linear (epoch")]
    assert len(epochs) >= 2 and epochs == sorted(epochs), header
    assert header.index("HAM10000 · finetune@0.1") < header.index("HAM10000 · finetune@1"), header
    assert header.index("HAM10000 · finetune@1 (epoch 8)") < header.index("HAM10000 · finetune@1 (epoch 16)")
