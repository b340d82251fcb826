"""`compare`'s choices on synthetic run directories: which metric it reports, which runs it reads,
the paper's fine-tuning-seed spread, column names, the best mark, and the Python API."""

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest
import yaml

import ssl_bench
from ssl_bench.compare import FINETUNE_MARK, compare, load_runs, table
from ssl_bench.errors import SSLBenchError
from ssl_bench.runs import mark_failed


def run(root: Path, method: str, seed: int, evals: dict, headline: str | None = "auc", **recipe_extra) -> Path:
    d = root / method / f"seed{seed}"
    d.mkdir(parents=True)
    recipe = {"name": method.lower(), "method": method, "seed": seed, **recipe_extra}
    if headline:
        recipe["headline_metric"] = headline
    (d / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (d / "results.json").write_text(json.dumps({"method": method, "dataset": "HAM10000", "seed": seed, "eval": evals}))
    return d


def two_metrics(auc: float, bma: float) -> dict:
    return {"linear": {"auc": auc, "balanced_accuracy": bma}}


# -- the metric -------------------------------------------------------------------------------------
def test_the_recipes_headline_metric_is_reported_and_auc_when_none_is_named(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for s, (auc, bma) in enumerate([(0.9, 0.3), (0.8, 0.4)]):
        run(a, "BYOL", s, two_metrics(auc, bma), headline="balanced_accuracy")
        run(b, "BYOL", s, two_metrics(auc, bma), headline=None)
    named = table([a])
    assert named["mean"].iloc[0] == pytest.approx(0.35)  # the BMA values, not the AUC ones
    assert compare([str(a)], fmt="markdown")[1].count("0.350") == 1
    assert table([b])["mean"].iloc[0] == pytest.approx(0.85)  # no headline named: AUC
    assert table([a], metric="auc")["mean"].iloc[0] == pytest.approx(0.85)  # an explicit metric wins


def test_runs_naming_different_headline_metrics_need_an_explicit_metric(tmp_path):
    run(tmp_path, "BYOL", 0, two_metrics(0.9, 0.3), headline="balanced_accuracy")
    run(tmp_path, "FS", 0, two_metrics(0.8, 0.4), headline="auc")
    with pytest.raises(SSLBenchError, match="different headline metrics.*--metric"):
        compare([str(tmp_path)])
    assert len(compare([str(tmp_path)], metric="auc")[0]) == 2


def test_a_missing_metric_names_the_metrics_found(tmp_path):
    run(tmp_path, "BYOL", 0, two_metrics(0.9, 0.3))
    with pytest.raises(SSLBenchError, match=r"metric 'f1' \(metrics found: auc, balanced_accuracy\)"):
        compare([str(tmp_path)], metric="f1")
    bare = tmp_path / "bare"
    run(bare, "BYOL", 0, {"finetune": {"per_seed": [{"x": 1}], "label_fraction": 1.0}})  # only internal rows
    with pytest.raises(SSLBenchError, match=r"metrics found: none"):
        compare([str(bare)], metric="auc")


# -- which runs -----------------------------------------------------------------------------------
def test_globs_results_files_symlinks_and_failed_runs(tmp_path):
    root = tmp_path / "runs"
    for s in range(2):
        run(root, "BYOL", s, two_metrics(0.8 + s / 10, 0.3))
        run(root, "FS", s, two_metrics(0.6, 0.3))
    assert set(load_runs([str(root / "B*")]).frame["method"]) == {"BYOL"}  # a glob pattern
    one = load_runs([str(root / "FS" / "seed0" / "results.json")])  # a results file names its run
    assert list(one.frame["run"].unique()) == [str((root / "FS" / "seed0").resolve())]
    elsewhere = run(tmp_path / "other", "Random", 0, two_metrics(0.5, 0.1))
    (root / "linked").symlink_to(elsewhere.parent, target_is_directory=True)
    assert set(load_runs([str(root)]).frame["method"]) == {"BYOL", "FS", "Random"}  # links are followed
    mark_failed(root / "FS" / "seed1", "diverged")
    unfinished = root / "FS" / "seed2"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text("method: FS\n")
    mark_failed(unfinished, "killed")
    loaded = load_runs([str(root)])
    assert loaded.frame["run"].nunique() == 4  # FS seed1 left out
    assert {Path(r).name for r, _ in loaded.failed} == {"seed1", "seed2"}
    assert loaded.skipped == []  # a failed unfinished run is listed as failed only, not as unfinished


def test_on_the_fly_and_pretrained_runs_of_one_method_are_never_averaged(tmp_path):
    run(tmp_path / "a", "BYOL-TracIn", 0, two_metrics(0.8, 0.3), selector={"model": "online"})
    run(tmp_path / "a", "BYOL-TracIn", 1, two_metrics(0.7, 0.3), selector={"model": "online"})
    assert ",2,pretraining,0," in compare([str(tmp_path / "a")], fmt="csv")[1].splitlines()[1]  # one model: averaged
    run(tmp_path / "b", "BYOL-TracIn", 0, two_metrics(0.8, 0.3), selector={"model": "online"})
    run(tmp_path / "b", "BYOL-TracIn", 1, two_metrics(0.7, 0.3), selector={"model": "pretrained"})
    with pytest.raises(SSLBenchError, match="on-the-fly|pretrained"):
        compare([str(tmp_path / "b")], allow_mixed=True)


@pytest.mark.parametrize("n_keys", [6, 7])
def test_a_mixing_error_lists_at_most_six_keys(tmp_path, n_keys):
    base = {f"k{i}": 0 for i in range(n_keys)}
    run(tmp_path, "BYOL", 0, two_metrics(0.8, 0.3), **base)
    run(tmp_path, "BYOL", 1, two_metrics(0.7, 0.3), **{k: 1 for k in base})
    with pytest.raises(SSLBenchError) as e:
        compare([str(tmp_path)])
    assert "k5" in str(e.value) and "k6" not in str(e.value)
    assert ("…" in str(e.value)) == (n_keys > 6)


def test_other_files_of_a_run_are_not_runs_and_unreadable_results_are_named(tmp_path):
    d = run(tmp_path, "BYOL", 0, two_metrics(0.8, 0.3))
    with pytest.raises(SSLBenchError, match="no finished runs"):
        compare([str(d / "recipe.yaml")])  # only a results.json file stands for its run
    bad = tmp_path / "bad" / "seed0"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text("{}")
    with pytest.raises(SSLBenchError, match=rf"1 unreadable: {bad.resolve()}: has no 'method'"):
        compare([str(bad)])


# -- the paper's ± over fine-tuning seeds -----------------------------------------------------------
def finetune(values: list[float]) -> dict:
    out = {"auc": statistics.mean(values), "per_seed": [{"auc": v} for v in values], "label_fraction": 0.1}
    if len(values) > 1:
        out["auc_std"] = statistics.stdev(values)
    return {"finetune": out}


def test_one_pretraining_run_shows_the_std_over_its_finetuning_seeds(tmp_path):
    run(tmp_path, "BYOL", 0, finetune([0.70, 0.74, 0.81]))
    run(tmp_path, "FS", 0, finetune([0.60, 0.64]))
    run(tmp_path, "Random", 0, finetune([0.55]))
    for s, v in enumerate([0.50, 0.52, 0.60]):  # several pre-training runs: their own std
        run(tmp_path, "MICLe", s, finetune([v, v + 0.02]))
    stats = table([tmp_path]).set_index("method")
    assert stats.loc["BYOL", "std"] == pytest.approx(statistics.stdev([0.70, 0.74, 0.81]))
    micle = [statistics.mean([v, v + 0.02]) for v in (0.50, 0.52, 0.60)]
    assert stats.loc["MICLe", "std"] == pytest.approx(statistics.stdev(micle))
    tab, text, _ = compare([str(tmp_path)], fmt="markdown")
    col = "HAM10000 · finetune @0.1"  # label fraction appended to a protocol that does not name it
    assert tab.loc["BYOL", col] == f"**0.750(.056){FINETUNE_MARK}** n=1"  # the best mean, marked
    assert tab.loc["FS", col] == f"0.620(.028){FINETUNE_MARK} n=1"  # two fine-tuning seeds are a spread
    assert FINETUNE_MARK not in tab.loc["Random", col]  # one fine-tuning seed is not
    assert FINETUNE_MARK not in tab.loc["MICLe", col] and tab.loc["MICLe", col].endswith("n=3")
    assert text.rstrip().endswith("over pre-training seeds (n).") and "2/3 fine-tuning seeds" in text
    assert FINETUNE_MARK not in compare([str(tmp_path / "MICLe")], fmt="markdown")[1]  # no such cell: no note
    csv = {r.split(",")[0]: r.split(",")[-4:-2] for r in compare([str(tmp_path)], fmt="csv")[1].splitlines()[1:]}
    assert csv == {"BYOL": ["finetune", "3"], "FS": ["finetune", "2"], "Random": ["pretraining", "0"],
                   "MICLe": ["pretraining", "0"]}


def test_a_protocol_that_names_its_fraction_gets_no_suffix(tmp_path):
    run(tmp_path, "BYOL", 0, {"finetune@0.1": {"auc": 0.7, "label_fraction": 0.1}, "linear": {"auc": 0.6}})
    assert sorted(table([tmp_path])["column"]) == ["HAM10000 · finetune@0.1", "HAM10000 · linear"]


def test_a_column_with_one_method_has_no_best_mark(tmp_path):
    run(tmp_path, "BYOL", 0, {"linear": {"auc": 0.7}, "knn": {"auc": 0.6}})
    run(tmp_path, "FS", 0, {"linear": {"auc": 0.8}})
    tab = compare([str(tmp_path)], fmt="markdown")[0]
    assert tab.loc["BYOL", "HAM10000 · knn"] == "0.600 n=1"
    assert tab.loc["FS", "HAM10000 · linear"] == "**0.800** n=1" and tab.loc["FS", "HAM10000 · knn"] == "–"


# -- the Python API -------------------------------------------------------------------------------
def test_the_python_api_returns_the_statistics_and_the_long_frame(tmp_path):
    vals = [0.70, 0.71, 0.78]
    for s, v in enumerate(vals):
        run(tmp_path, "BYOL", s, two_metrics(v, 0.3))
    for stats in (table([tmp_path]), ssl_bench.compare([tmp_path]), ssl_bench.compare.table([str(tmp_path)])):
        assert list(stats[["method", "column"]].iloc[0]) == ["BYOL", "HAM10000 · linear"]
        assert stats["mean"].iloc[0] == pytest.approx(statistics.mean(vals))
        assert stats["std"].iloc[0] == pytest.approx(statistics.stdev(vals))
        assert stats["count"].iloc[0] == 3
    for long in (table([tmp_path], long=True), ssl_bench.compare([tmp_path], long=True)):
        assert len(long) == 6 and set(long["metric"]) == {"auc", "balanced_accuracy"}  # 3 runs × 2 metrics
    empty = tmp_path / "empty"
    empty.mkdir()
    assert table([empty]).empty and list(table([empty]).columns) == ["method", "column", "mean", "std", "count"]


# -- counting seeds ---------------------------------------------------------------------------------
def test_repeated_runs_of_one_seed_count_once(tmp_path):
    """Three runs of seed 0 (the same command repeated: runs are never overwritten) and one of seed 1
    are two seeds: mean over (0.76, 0.78), n = 2 — not 0.765(.014) n=4 — and the table says so."""
    for i in range(3):
        run(tmp_path / f"rep{i}", "BYOL", 0, {"linear": {"auc": 0.76}})
    run(tmp_path, "BYOL", 1, {"linear": {"auc": 0.78}})
    stats = table([tmp_path])
    assert stats["count"].iloc[0] == 2 and stats["mean"].iloc[0] == pytest.approx(0.77)
    assert stats["std"].iloc[0] == pytest.approx(statistics.stdev([0.76, 0.78]))
    tab, text, _ = compare([str(tmp_path)], fmt="markdown")
    assert tab.loc["BYOL", "HAM10000 · linear"] == "0.770(.014) n=2"
    assert "repeated runs of one seed counted once" in text and "BYOL · HAM10000 · linear (2)" in text


def test_the_python_api_refuses_mixed_runs_as_the_cli_does(tmp_path):
    """`ssl_bench.compare(paths)` averaged 10-epoch and 2-epoch runs into one cell; now it refuses them
    as `ssl-bench compare` does (allow_mixed=True averages anyway)."""
    run(tmp_path, "BYOL", 0, {"linear": {"auc": 0.8}}, train={"epochs": 10})
    run(tmp_path, "BYOL", 1, {"linear": {"auc": 0.7}}, train={"epochs": 2})
    with pytest.raises(SSLBenchError, match="differ in train.epochs"):
        ssl_bench.compare([tmp_path])
    with pytest.raises(SSLBenchError, match="differ in train.epochs"):
        table([tmp_path])
    assert ssl_bench.compare([tmp_path], allow_mixed=True)["count"].iloc[0] == 2


# -- paired differences (--versus) ---------------------------------------------------------------------
def test_versus_pairs_by_seed_with_a_t_interval(tmp_path):
    # differences by seed: +0.10, +0.12, +0.08 (FS − BYOL); seed 3 has only FS: left out of the pairs
    byol = {0: 0.30, 1: 0.50, 2: 0.40}
    fs = {0: 0.40, 1: 0.62, 2: 0.48, 3: 0.90}
    for s, v in byol.items():
        run(tmp_path, "BYOL", s, two_metrics(0.5, v), headline="balanced_accuracy")
    for s, v in fs.items():
        run(tmp_path, "FS", s, two_metrics(0.5, v), headline="balanced_accuracy")
    t, text, _ = compare([str(tmp_path)], fmt="markdown", versus="BYOL")
    d = [fs[s] - byol[s] for s in byol]
    half = 4.302652729911275 * statistics.stdev(d) / 3 ** 0.5  # t(0.975, 2) from a table
    lo, hi = statistics.mean(d) - half, statistics.mean(d) + half
    assert lo > 0  # consistent over seeds although the seeds' own spread (0.1) is larger: resolved
    assert f"+0.100 [{lo:+.3f}, {hi:+.3f}]* n=3" in text
    assert "paired difference vs BYOL" in text
    # the unpaired means would differ by (0.6 - 0.4) = 0.2 with FS's unpaired seed 3 included
    assert t.attrs["versus"].loc["FS"].iloc[0].startswith("+0.100")
    csv = compare([str(tmp_path)], fmt="csv", versus="BYOL")[1]
    assert "diff_lo" in csv.splitlines()[0] and ",True" in csv


def test_versus_an_unresolved_difference_and_an_unknown_method(tmp_path):
    for s, (a, b) in enumerate([(0.30, 0.35), (0.50, 0.45), (0.40, 0.41)]):
        run(tmp_path, "BYOL", s, two_metrics(0.5, a), headline="balanced_accuracy")
        run(tmp_path, "FS", s, two_metrics(0.5, b), headline="balanced_accuracy")
    text = compare([str(tmp_path)], fmt="markdown", versus="BYOL")[1]
    row = [line for line in text.splitlines() if line.startswith("| FS |")][-1]
    assert "]*" not in row and "n=3" in row  # the interval holds 0
    with pytest.raises(SSLBenchError, match=r"--versus: no run of method 'BYOLL'.*methods: BYOL, FS"):
        compare([str(tmp_path)], versus="BYOLL")


def test_re_evaluations_of_the_last_network_replace_and_of_a_kept_epoch_add_a_column(tmp_path):
    d = run(tmp_path, "BYOL", 0, two_metrics(0.6, 0.30), headline="balanced_accuracy")
    res = json.loads((d / "results.json").read_text())
    (d / "results.json").write_text(json.dumps({**res, "epochs": 10}))

    def evaluate(stamp: str, bma: float, **extra):
        (d / f"results-evaluate-{stamp}.json").write_text(json.dumps(
            {"method": "BYOL", "dataset": "HAM10000", "seed": 0, "eval": two_metrics(0.7, bma), **extra}))

    evaluate("20261201-000001", 0.31)  # the run's own network again (no epoch named): the newer value wins
    evaluate("20261201-000002", 0.32, evaluated_epoch=10)  # its last epoch named: the same network
    evaluate("20261201-000003", 0.21, evaluated_epoch=4)  # a kept network: a column of its own
    t = table([tmp_path]).set_index("column")["mean"]
    assert t.to_dict() == {"HAM10000 · linear": pytest.approx(0.32), "HAM10000 · linear (epoch 4)": pytest.approx(0.21)}


def test_versus_edge_cases_two_seeds_one_seed_equal_differences_and_nan(tmp_path):
    from scipy import stats as st

    from ssl_bench.compare import load_runs, paired_differences

    vals = {"BYOL": [0.30, 0.50, 0.40], "FS": [0.35, 0.52, 0.41], "Same": [0.35, 0.55, 0.45],
            "Tie": [0.30, 0.50, 0.40], "Two": [0.31, 0.55, None], "One": [0.45, None, None],
            "Hole": [0.31, float("nan"), 0.42]}
    for method, values in vals.items():
        for s, v in enumerate(values):
            if v is not None:
                run(tmp_path, method, s, two_metrics(0.5, v), headline="balanced_accuracy")
    d = paired_differences(load_runs([str(tmp_path)]).frame, "bma", "BYOL").set_index("method")
    assert d.loc["FS", "p_value"] == pytest.approx(st.ttest_rel(vals["FS"], vals["BYOL"]).pvalue)
    assert d.loc["Same", "p_value"] == 0.0 and d.loc["Same", "resolved"]  # +0.05 on every seed: no scatter
    assert d.loc["Tie", "p_value"] == 1.0 and not d.loc["Tie", "resolved"]  # identical on every seed
    assert d.loc["Two", "n_pairs"] == 2 and d.loc["Two", "diff_lo"] < d.loc["Two", "diff_hi"]  # 2 pairs: an interval
    one = d.loc["One"]
    assert one["n_pairs"] == 1 and one["diff"] == pytest.approx(0.15) and pd.isna(one["diff_lo"])
    assert pd.isna(one["p_value"]) and not one["resolved"]  # one pair: a difference, no interval, no test
    assert pd.isna(d.loc["Hole", "diff"])  # a seed without a finite value: nan, never the mean of the others
    _, text, _ = compare([str(tmp_path)], fmt="markdown", versus="BYOL")
    assert "[95% t-interval]" in text
    row = lambda name: [line for line in text.splitlines() if line.startswith(f"| {name} |")][-1]  # noqa: E731
    assert row("Hole") == "| Hole | nan |" and row("One") == "| One | +0.150 n=1 |"
    latex = compare([str(tmp_path)], fmt="latex", versus="BYOL")[1]
    assert latex.count(r"\begin{tabular}") == 2 and "% paired difference vs BYOL" in latex


def test_seeds_are_integers_below_two_to_the_63_and_long_values_are_cut_in_messages(tmp_path):
    from ssl_bench.compare import load_runs

    for name, seed in (("top", 2**63 - 1), ("over", 2**63), ("wide", 10**23), ("wider", 10**24)):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"method": "M", "dataset": "D", "seed": seed, "eval": {}}))
    loaded = load_runs([str(tmp_path)])
    why = {Path(run).name: reason for run, reason in loaded.unreadable}
    assert "top" not in why  # the largest seed a run can have
    assert why["over"].endswith(f"its 'seed' is not an integer in [0, 2**63): {2**63}")  # 19 digits: shown whole
    assert why["wide"].endswith(": " + "1" + "0" * 23)  # 24 characters: still whole
    assert why["wider"].endswith(": 100000000000…(25 digits)")  # longer: its first 12 and its length


def test_the_repeated_runs_note_names_four_cells_and_counts_the_rest(tmp_path):
    for m in ("A", "B", "C", "D", "E", "F"):
        for rep in range(2 if m != "F" else 1):  # F ran once: not a repeated cell
            run(tmp_path / f"rep{rep}", m, 0, {"linear": {"auc": 0.7}})
    text = compare([str(tmp_path)], fmt="markdown")[1]
    note = next(line for line in text.splitlines() if line.startswith("repeated runs"))
    assert note.endswith("A · HAM10000 · linear (1); B · HAM10000 · linear (1); C · HAM10000 · linear (1); "
                         "D · HAM10000 · linear (1) and 1 more")


def test_one_finetuning_seed_is_not_a_spread(tmp_path):
    run(tmp_path, "BYOL", 0, {"finetune": {"auc": 0.7, "auc_std": 0.0, "per_seed": [{"auc": 0.7}],
                                           "label_fraction": 0.1}})
    stats = table([tmp_path])
    assert stats["spread"].iloc[0] == "pretraining" and stats["n_finetune"].iloc[0] == 0


def test_the_baseline_mark_has_a_tolerance_of_a_thousandth_and_only_where_higher_is_better(tmp_path):
    base = {"majority_accuracy": 0.70, "chance_balanced_accuracy": 0.5, "predicted_classes": 2}
    for method, bma in (("AtChance", 0.5005), ("JustAbove", 0.502), ("Clear", 0.6)):
        run(tmp_path, method, 0, {"linear": {"balanced_accuracy": bma, "auc": 0.5004 if method == "AtChance" else 0.7,
                                             "f1": 0.3, **base}}, headline="balanced_accuracy")
    tab = compare([str(tmp_path)], fmt="markdown")[0]["HAM10000 · linear"]
    assert tab["AtChance"].endswith("‡ n=1") and "‡" not in tab["JustAbove"] and tab["Clear"] == "**0.600** n=1"
    auc = compare([str(tmp_path)], metric="auc", fmt="markdown")[0]["HAM10000 · linear"]
    assert auc["AtChance"].endswith("‡ n=1") and "‡" not in auc["Clear"]  # AUC's baseline: 0.5
    f1 = compare([str(tmp_path)], metric="f1", fmt="markdown")[0]["HAM10000 · linear"]
    assert not any("‡" in c for c in f1)  # no recorded baseline for F1: never marked
    low = compare([str(tmp_path)], fmt="markdown", lower_is_better=True)
    assert not any("‡" in c for c in low[0]["HAM10000 · linear"]) and "‡" not in low[1]  # a loss has no floor
    assert low[0]["HAM10000 · linear"]["AtChance"].startswith("**")  # the lowest is the best there


def test_the_repeated_runs_note_with_exactly_four_cells_has_no_more(tmp_path):
    for m in ("A", "B", "C", "D"):
        for rep in range(2):
            run(tmp_path / f"rep{rep}", m, 0, {"linear": {"auc": 0.7}})
    note = next(line for line in compare([str(tmp_path)], fmt="markdown")[1].splitlines()
                if line.startswith("repeated runs"))
    assert note.endswith("D · HAM10000 · linear (1)")


def test_seeds_re_evaluated_with_different_protocols_are_not_averaged(tmp_path):
    def seed_run(root, seed, ft_epochs):
        d = run(root, "BYOL", seed, {"linear": {"auc": 0.7}}, evaluate=[{"name": "linear"}])
        res = json.loads((d / "results.json").read_text())
        (d / "results.json").write_text(json.dumps({**res, "eval_blocks": {"linear": {"name": "linear"}}}))
        (d / "results-evaluate-20261207-000000.json").write_text(json.dumps({
            "method": "BYOL", "dataset": "HAM10000", "seed": seed, "eval": {"finetune@1": {"auc": 0.8}},
            "eval_blocks": {"finetune@1": {"name": "finetune", "label_fraction": 1.0, "epochs": ft_epochs}}}))

    same, other = tmp_path / "same", tmp_path / "other"
    for s in (0, 1):
        seed_run(same, s, 5)
        seed_run(other, s, 5 if s == 0 else 20)
    assert set(table([same])["column"]) == {"HAM10000 · linear", "HAM10000 · finetune@1"}
    with pytest.raises(SSLBenchError, match=r"runs of BYOL on HAM10000 differ in evaluate; "):
        table([other])  # the protocols behind finetune@1 differ between the seeds: not one experiment


def test_a_cell_holding_nan_has_no_mean_and_no_std_in_csv(tmp_path):
    run(tmp_path, "BYOL", 0, {"linear": {"auc": 0.7}})
    run(tmp_path, "BYOL", 1, {"linear": {"auc": 0.8}})
    d = run(tmp_path, "BYOL", 2, {"linear": {"auc": 0.9}})
    (d / "results.json").write_text((d / "results.json").read_text().replace("0.9", "NaN"))
    row = compare([str(tmp_path)], fmt="csv")[1].splitlines()[1].split(",")
    assert row[:5] == ["BYOL", "HAM10000 · linear", "", "", "3"]  # mean and std empty (NaN), 3 seeds
