"""Turn run directories into the paper's tables: mean(std) over seeds per method × dataset × protocol.

>>> from ssl_bench.compare import load_runs, summarize
>>> df = load_runs(["runs/"])            # one row per run × protocol × metric
>>> table = summarize(df, metric="auc")  # methods × (dataset, protocol), "0.796(.012)" cells

Runs are found by their ``results.json`` (a directory is searched recursively; shell-style globs
are expanded).  A directory without ``results.json`` is an unfinished run, one whose
``status.json`` says it failed (e.g. a NaN loss) is a failed run: both are skipped and reported.  Runs grouped into one
cell must come from the same resolved recipe except for the
seed (and the keys a sweep varied): otherwise :func:`check_mixing` says which keys differ.
"""

from __future__ import annotations

import glob
import sys
import types
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from ssl_bench import safeyaml
from ssl_bench.errors import SSLBenchError
from ssl_bench.runs import (PLACEMENT_KEYS, RECIPE_FILE, RESULTS_FILE, eval_results_files, finite_float, flatten_recipe,
                            read_status)

__all__ = [
    "load_runs", "fmt_cell", "METRIC_ALIASES", "headline_metric", "FINETUNE_MARK", "summarize", "pivot",
    "compare", "table", "paired_differences",
]

# keys that may differ between the seeds of one cell without making them different experiments
# (a pretrained row's checkpoint: each seed scores with the producer run of its own seed)
IGNORED_KEYS = {"seed", "name", "out_dir", "selector.checkpoint"} | PLACEMENT_KEYS


@dataclass
class LoadedRuns:
    frame: pd.DataFrame
    recipes: dict[str, dict] = field(default_factory=dict)  # run dir → resolved recipe
    skipped: list[str] = field(default_factory=list)  # run dirs without results.json
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run dir, reason) of runs marked failed
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): left out of the table
    reevaluated: list[str] = field(default_factory=list)  # run dirs with `ssl-bench evaluate` results files
    # (run dir, protocol, metric, value as written) of metric values that are not finite numbers
    nonfinite: list[tuple[str, str, str, str]] = field(default_factory=list)


def _find_run_dirs(paths: Iterable[str]) -> tuple[list[Path], list[Path]]:
    finished, unfinished = [], []
    for pattern in paths:
        matches = [Path(p) for p in glob.glob(str(pattern))] or [Path(pattern)]
        for m in matches:
            if not m.exists():
                raise SSLBenchError(f"no run directory or file matches '{pattern}'")
            if m.is_file() and m.name == RESULTS_FILE:
                m = m.parent
            if (m / RESULTS_FILE).is_file():
                finished.append(m)
            elif (m / RECIPE_FILE).is_file():
                unfinished.append(m)
            else:  # a folder of runs (symlinked run directories followed, each real folder once)
                found = _walk(m)
                finished += [p for p in found if (p / RESULTS_FILE).is_file()]
                unfinished += [p for p in found if (p / RECIPE_FILE).is_file() and not (p / RESULTS_FILE).exists()]
    dedup = lambda xs: list(dict.fromkeys(x.resolve() for x in xs))  # noqa: E731
    return dedup(finished), dedup(unfinished)


def _walk(root: Path) -> list[Path]:
    """Every folder under ``root`` (symlinks to folders followed; a folder reached twice, or a link
    cycle, is visited once), sorted."""
    seen, out = set(), []
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        out.append(Path(dirpath))
    return sorted(out)


def load_runs(paths: Iterable[str]) -> LoadedRuns:
    """Read every finished run under ``paths`` into a long DataFrame (one row per metric value);
    runs marked failed are left out and listed in ``failed``, runs whose files are damaged or of the
    wrong shape in ``unreadable``.  A metric that is not a finite number (NaN, written as null, inf, a
    number no float holds) is a NaN row, named in ``nonfinite``: its cell shows nan, never a mean of the others."""
    finished, unfinished = _find_run_dirs(paths)
    failed = [
        (str(r), st.get("reason", "")) for r in finished + unfinished
        if (st := read_status(r)).get("status") == "failed"
    ]
    failed_dirs = {f for f, _ in failed}
    finished = [r for r in finished if str(r) not in failed_dirs]
    unfinished = [r for r in unfinished if str(r) not in failed_dirs]
    rows, recipes, unreadable, reevaluated, nonfinite = [], {}, [], [], []
    for run in finished:
        try:  # one bad file leaves its run out (listed), not the table
            run_rows, recipe, later, odd = _read_run(run)
        except (OSError, ValueError, SSLBenchError) as e:
            unreadable.append((str(run), str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        rows += run_rows
        nonfinite += odd
        if recipe is not None:
            recipes[str(run)] = recipe
        if later:
            reevaluated.append(str(run))
    columns = ["run", "recipe", "method", "dataset", "seed", "protocol", "label_fraction", "metric", "value", "variant"]
    return LoadedRuns(pd.DataFrame(rows, columns=columns), recipes, [str(u) for u in unfinished], failed, unreadable,
                      reevaluated, nonfinite)


def _read_run(run: Path) -> tuple[list[dict], Optional[dict], bool, list[tuple[str, str, str, str]]]:
    """One finished run: (frame rows, resolved recipe or None, re-evaluated?, non-finite values as
    (run, protocol, metric, value as written)).  ValueError naming what is wrong with a file."""
    try:
        return _read_run_files(run)
    except RecursionError:
        raise ValueError("a file of the run nests too deeply to be an ssl-bench file") from None


def _read_run_files(run: Path) -> tuple[list[dict], Optional[dict], bool, list[tuple[str, str, str, str]]]:
    res = _read_results(run / RESULTS_FILE)
    recipe = None
    if (run / RECIPE_FILE).is_file():
        recipe = _check_recipe(safeyaml.load((run / RECIPE_FILE).read_bytes(), str(run / RECIPE_FILE)))
    # `ssl-bench evaluate` files: the newest value of each protocol wins; a kept epoch's network
    # is its own column ("linear (epoch 10)")
    evals, blocks = dict(res["eval"]), _eval_blocks(res, recipe)
    later = eval_results_files(run)
    for f in later:
        extra = _read_results(f)
        epoch = extra.get("evaluated_epoch")
        tag = "" if epoch in (None, res.get("epochs")) else f" (epoch {epoch})"
        evals.update({k + tag: v for k, v in extra["eval"].items()})
        blocks.update({k + tag: v for k, v in _eval_blocks(extra, None).items()})
    if later and recipe is not None:  # what the cell's runs must agree on: the protocols behind their values
        recipe = {**recipe, "evaluate": [blocks.get(k) for k in sorted(evals)]}
    # runs of one recipe (up to seed, names and placement): repeated runs of a seed collapse into one
    flat = _flat_recipe(recipe) if recipe is not None else {"run": str(run)}
    variant = json.dumps(sorted((k, v) for k, v in flat.items() if k not in IGNORED_KEYS))
    rows, nonfinite = [], []
    for protocol, metrics in evals.items():
        values = dict(metrics)
        fraction = values.pop("label_fraction", None)
        if isinstance(values.get("per_seed"), list):  # fine-tuning seeds of this one pre-training run
            values[FINETUNE_SEEDS] = len(values["per_seed"])
        for metric, value in values.items():
            if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
                continue  # lists, strings, nested records: not a cell's metric
            number = finite_float(value)
            if number is None:  # NaN (null in ssl-bench's JSON), inf, or too large for a float: shown, never averaged
                nonfinite.append((str(run), protocol, metric, "null" if value is None else _short(value)))
            rows.append({"run": str(run), "recipe": res.get("recipe"), "method": res["method"],
                         "dataset": res["dataset"], "seed": res["seed"], "protocol": protocol,
                         "label_fraction": fraction, "metric": metric,
                         "value": math.nan if number is None else number, "variant": variant})
    return rows, recipe, bool(later), nonfinite


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"


def _read_results(path: Path) -> dict:
    """A results file, its shape checked: ValueError naming the first thing that is wrong."""
    try:
        res = json.loads(path.read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"{path.name} is not UTF-8 text") from e
    which = "" if path.name == RESULTS_FILE else f"{path.name}: "  # results.json is the run itself
    missing = [k for k in ("method", "dataset", "seed", "eval") if not isinstance(res, dict) or k not in res]
    if missing:
        raise ValueError(f"{which}has no '{missing[0]}' (not an ssl-bench results file)")
    for key in ("method", "dataset"):
        if not isinstance(res[key], str):
            raise ValueError(f"{which}its '{key}' is not a string: {_short(res[key])}")
    if res.get("recipe") is not None and not isinstance(res["recipe"], str):
        raise ValueError(f"{which}its 'recipe' is not a string: {_short(res['recipe'])}")
    seed = res["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"{which}its 'seed' is not an integer in [0, 2**63): {_short(seed)}")
    if not isinstance(res["eval"], dict):
        raise ValueError(f"{which}its 'eval' is not a mapping")
    for protocol, metrics in res["eval"].items():
        if not isinstance(metrics, dict):
            raise ValueError(f"{which}eval.{protocol} is not a mapping of metric values: {_short(metrics)}")
        fraction = metrics.get("label_fraction")
        if fraction is not None and finite_float(fraction) is None:
            raise ValueError(f"{which}eval.{protocol}.label_fraction is not a finite number: {_short(fraction)}")
    return res


def _check_recipe(recipe) -> dict:
    """A run's ``recipe.yaml`` in the shape compare reads: ValueError naming what is not."""
    if not isinstance(recipe, dict):
        raise ValueError(f"{RECIPE_FILE} is not a mapping")
    selector = recipe.get("selector")
    if selector is not None and not isinstance(selector, dict):
        raise ValueError(f"{RECIPE_FILE}: its selector is not a mapping: {_short(selector)}")
    if selector and not isinstance(selector.get("model"), (str, type(None))):
        raise ValueError(f"{RECIPE_FILE}: its selector.model is not a string: {_short(selector['model'])}")
    if not isinstance(recipe.get("headline_metric"), (str, type(None))):
        raise ValueError(f"{RECIPE_FILE}: its headline_metric is not a string: {_short(recipe['headline_metric'])}")
    _flat_recipe(recipe)
    return recipe


def _flat_recipe(recipe: dict) -> dict:
    try:
        return flatten_recipe(recipe)
    except TypeError as e:  # e.g. a YAML date: not a value a resolved recipe holds
        raise ValueError(f"{RECIPE_FILE} holds a value that is not plain data ({e})") from None


def _eval_blocks(res: dict, recipe: Optional[dict]) -> dict:
    """The evaluate block behind each result key: recorded in the file (``eval_blocks``), else (a run
    made before that was recorded) the recipe's evaluate list in order."""
    blocks = res.get("eval_blocks")
    if isinstance(blocks, dict):
        return dict(blocks)
    listed = (recipe or {}).get("evaluate")
    keys = list(res["eval"])
    return dict(zip(keys, listed)) if isinstance(listed, list) and len(listed) == len(keys) else {}


def check_selector_models(loaded: LoadedRuns) -> None:
    """Runs of one method name whose selector is on-the-fly in some and pretrained in others are
    never averaged (the paper's BYOL-TracIn and BYOL-TracIn-pretrained), not even with --allow-mixed."""
    cells = loaded.frame.drop_duplicates("run").groupby(["method", "dataset"])["run"].apply(list)
    for (method, dataset), run_dirs in cells.items():
        models = {((loaded.recipes.get(r) or {}).get("selector") or {}).get("model") for r in run_dirs}
        models.discard(None)
        if len(models) > 1:
            raise SSLBenchError(
                f"runs named {method} on {dataset} mix selector.model {' and '.join(sorted(models))}: the paper "
                "reports these as different rows (e.g. BYOL-TracIn and BYOL-TracIn-pretrained); give them distinct "
                "method names"
            )


def check_mixing(loaded: LoadedRuns, allowed: Iterable[str] = ()) -> None:
    """Refuse to average runs of one cell whose resolved recipes differ beyond seed/allowed keys."""
    allowed = set(IGNORED_KEYS) | set(allowed)
    cells = loaded.frame.drop_duplicates("run").groupby(["method", "dataset"])["run"].apply(list)
    for (method, dataset), run_dirs in cells.items():
        flats = [flatten_recipe(loaded.recipes[r]) for r in run_dirs if r in loaded.recipes]
        if len(flats) < 2:
            continue
        keys = set().union(*flats)
        differing = sorted(k for k in keys if k not in allowed and len({f.get(k) for f in flats}) > 1)
        if differing:
            shown = ", ".join(differing[:6]) + (" …" if len(differing) > 6 else "")
            raise SSLBenchError(
                f"runs of {method} on {dataset} differ in {shown}; they are different experiments "
                "(give them a distinct recipe 'method' name, or pass --allow-mixed to average anyway)"
            )


def fmt_cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    """The paper's "0.408(.007)" style (std without the leading zero); "–" for no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    m = f"{mean:.{digits}f}"
    if n < 2 or std is None or math.isnan(std):
        return m
    s = f"{std:.{digits}f}"
    s = s[1:] if s.startswith("0.") else s
    return f"{m}({s})"


# short names users type (the ISIC challenge calls balanced accuracy "BMA")
METRIC_ALIASES = {"bma": "balanced_accuracy", "acc": "accuracy", "precision_malignant": "precision_pos"}


def headline_metric(loaded: LoadedRuns) -> str:
    """The metric the runs' recipes name as headline (``headline_metric``); "auc" if they name none."""
    named = sorted({r.get("headline_metric") for r in loaded.recipes.values() if r.get("headline_metric")})
    if len(named) > 1:
        raise SSLBenchError(f"the runs name different headline metrics ({', '.join(named)}); choose one with --metric")
    return named[0] if named else "auc"


FINETUNE_SEEDS = "_finetune_seeds"  # a frame row: how many fine-tuning seeds a protocol's value averages
FINETUNE_MARK = "†"


def summarize(df: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Methods × (dataset, protocol[, label fraction]) with mean, std and n over pre-training seeds.

    A cell of one pre-training run whose protocol fine-tuned several times (``seeds``) shows the std
    over those fine-tuning seeds instead — the paper's ± (Table 1: 5 fine-tuning seeds of one
    pre-training run) — with ``spread`` = ``finetune`` and ``n_finetune`` their number."""
    metric = METRIC_ALIASES.get(metric, metric)
    sel = df[df["metric"] == metric]
    if sel.empty:
        have = ", ".join(sorted(m for m in df["metric"].unique() if not m.startswith("_"))) or "none"
        raise SSLBenchError(f"no runs report metric '{metric}' (metrics found: {have})")
    sel, seeds = _per_seed(sel)
    g = seeds.groupby(["method", "column"])
    # std: sample std (ddof 1) over seeds
    stats = g["value"].agg(mean=_mean, std=lambda v: v.std(skipna=False), count="size").reset_index()
    stats["repeated"] = (g["runs"].sum() - g["runs"].count()).values  # runs beyond one per seed
    stats["spread"], stats["n_finetune"] = "pretraining", 0
    one = sel.groupby(["method", "column"])["run"].first()
    extra = df[df["metric"].isin([f"{metric}_std", FINETUNE_SEEDS])]
    for i, r in stats.iterrows():
        if r["count"] != 1:
            continue
        run_rows = sel[(sel["method"] == r["method"]) & (sel["column"] == r["column"])]
        protocol = run_rows["protocol"].iloc[0]
        mine = extra[(extra["run"] == one[(r["method"], r["column"])]) & (extra["protocol"] == protocol)]
        std, seeds = mine[mine["metric"] == f"{metric}_std"]["value"], mine[mine["metric"] == FINETUNE_SEEDS]["value"]
        if len(std) and len(seeds) and seeds.iloc[0] > 1:
            stats.loc[i, ["std", "spread", "n_finetune"]] = [float(std.iloc[0]), "finetune", int(seeds.iloc[0])]
    stats["at_baseline"] = _at_baseline(df, sel, stats, metric)
    return stats


def _per_seed(sel: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``sel`` (one metric's rows) with its ``column``, and one value per method × column × seed × variant."""
    sel = sel.assign(column=sel.apply(_column_name, axis=1))
    # repeated runs of one seed (the same command run twice: runs are never overwritten) are one seed:
    # their mean, counted once — n is the number of distinct pre-training seeds
    if "variant" not in sel:  # a frame made by hand: every run its own experiment
        sel = sel.assign(variant=sel["run"])
    # a value that is not a finite number (NaN) makes its cell NaN: shown as nan, never a mean of the others
    seeds = sel.groupby(["method", "column", "seed", "variant"]).agg(value=("value", _mean), runs=("run", "nunique"))
    return sel, seeds.reset_index()


def paired_differences(df: pd.DataFrame, metric: str, versus: str, confidence: float = 0.95) -> pd.DataFrame:
    """Each method minus ``versus``, paired by pre-training seed, per column: the mean difference over
    the seeds both have, its ``confidence`` t-interval (n − 1 degrees of freedom), the paired t-test's
    two-sided p-value and ``resolved`` (the interval excludes 0).  With 3 seeds the interval's half
    width is 2.48 standard deviations of the differences (t = 4.30 / √3), so only a difference that is
    large against its seed-to-seed scatter is resolved."""
    from scipy import stats as st

    metric = METRIC_ALIASES.get(metric, metric)
    sel = df[df["metric"] == metric]
    if sel.empty:
        raise SSLBenchError(f"no runs report metric '{metric}'")
    _, seeds = _per_seed(sel)
    seeds = seeds.groupby(["method", "column", "seed"], as_index=False)["value"].agg(_mean)
    if versus not in set(seeds["method"]):
        raise SSLBenchError(f"--versus: no run of method '{versus}' reports {metric} "
                            f"(methods: {', '.join(sorted(seeds['method'].unique()))})")
    ref = seeds[seeds["method"] == versus][["column", "seed", "value"]]
    pairs = seeds[seeds["method"] != versus].merge(ref, on=["column", "seed"], suffixes=("", "_ref"))
    rows = []
    for (method, column), g in pairs.groupby(["method", "column"], sort=False):
        d = (g["value"] - g["value_ref"]).astype(float)
        n, mean = len(d), float(d.mean(skipna=False))
        lo = hi = p = math.nan
        if n >= 2 and math.isfinite(mean):
            sd = float(d.std(ddof=1))
            sd = 0.0 if sd < 1e-12 else sd  # the same difference on every seed, up to rounding (t-test undefined)
            half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
            lo, hi = mean - half, mean + half
            p = float(st.ttest_rel(g["value"], g["value_ref"]).pvalue) if sd > 0 else (0.0 if mean else 1.0)
        rows.append({"method": method, "column": column, "versus": versus, "n_pairs": n, "diff": mean,
                     "diff_lo": lo, "diff_hi": hi, "p_value": p, "resolved": bool(lo > 0 or hi < 0)})
    cols = ["method", "column", "versus", "n_pairs", "diff", "diff_lo", "diff_hi", "p_value", "resolved"]
    return pd.DataFrame(rows, columns=cols)


RESOLVED_MARK = "*"


def fmt_difference(r) -> str:
    """"+0.012 [-0.004, +0.028]" (the interval when n ≥ 2), marked * when it excludes 0."""
    if not math.isfinite(r["diff"]):
        return NONFINITE_CELL
    cell = f"{r['diff']:+.3f}"
    if math.isfinite(r["diff_lo"]):
        cell += f" [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]"
    return cell + (RESOLVED_MARK if r["resolved"] else "") + f" n={int(r['n_pairs'])}"


def pivot_differences(diffs: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Methods × columns of :func:`fmt_difference` cells, in the main table's column order."""
    out = pd.DataFrame({c: {r["method"]: fmt_difference(r) for _, r in diffs[diffs["column"] == c].iterrows()}
                        for c in columns})
    out.index.name = "method"
    return out.fillna("–")


def versus_note(versus: str, confidence: float = 0.95) -> str:
    return (f"paired difference vs {versus}: mean over the pre-training seeds both have (n) "
            f"[{confidence:.0%} t-interval]; {RESOLVED_MARK} the interval excludes 0 (a resolved difference)")


def _mean(values: pd.Series) -> float:
    return values.mean(skipna=False)


# what a classifier must beat, per metric: the key of classification_metrics that holds it (AUC: 0.5)
_BASELINE_OF = {"accuracy": "majority_accuracy", "balanced_accuracy": "chance_balanced_accuracy", "auc": None}


def _at_baseline(df: pd.DataFrame, sel: pd.DataFrame, stats: pd.DataFrame, metric: str) -> list[bool]:
    """Per cell: no better than a constant prediction — every run of the cell predicted one class, or
    the mean is at most the mean majority-class accuracy (accuracy), chance BMA (BMA) or 0.5 (AUC)."""
    keys = sel[["run", "protocol", "column"]].drop_duplicates()
    base = df.merge(keys, on=["run", "protocol"])
    out = []
    for _, r in stats.iterrows():
        mine = base[(base["method"] == r["method"]) & (base["column"] == r["column"])]
        classes = mine[mine["metric"] == "predicted_classes"]["value"]
        flagged = len(classes) > 0 and bool((classes <= 1).all())
        recorded = (mine["metric"] == "chance_balanced_accuracy").any()  # results that record their baselines
        if metric in _BASELINE_OF and recorded and not flagged:
            ref_key = _BASELINE_OF[metric]
            ref = mine[mine["metric"] == ref_key]["value"].mean() if ref_key else 0.5
            flagged = bool(ref == ref and r["mean"] <= ref + 1e-3)  # ref == ref: not NaN (no baseline recorded)
        out.append(flagged)
    return out


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def column_order(name: str) -> tuple:
    """Sort key of a column name that compares its numbers as numbers: "finetune@1 (epoch 8)" before
    "(epoch 16)", "@0.01" before "@0.1" before "@1" (plain string order put epoch 8 after epoch 32)."""
    parts = _NUMBER.split(name)
    numbers = [float(n) for n in _NUMBER.findall(name)]
    return tuple(x for pair in zip(parts, [*numbers, -1.0]) for x in pair)


def _column_name(row) -> str:
    col = f"{row['dataset']} · {row['protocol']}"
    fraction = row["label_fraction"]
    if (
        "@" not in row["protocol"] and fraction is not None
        and not (isinstance(fraction, float) and math.isnan(fraction))
    ):
        col += f" @{row['label_fraction']:g}"
    return col


BASELINE_MARK = "‡"
NONFINITE_CELL = "nan"


def pivot(stats: pd.DataFrame, higher_is_better: bool = True, mark: str = "**") -> pd.DataFrame:
    """Formatted table: cells "mean(std)", the best mean of each column marked, n seeds appended; a
    cell no better than the majority class (``at_baseline``) carries ‡ and is never marked best."""
    table = {}
    for col, part in stats.groupby("column"):
        # a baseline is a floor of scores where higher is better (a loss has none)
        flagged = (
            part["at_baseline"] if "at_baseline" in part and higher_is_better
            else pd.Series(False, index=part.index)
        )
        ranked = part[~flagged.astype(bool)]
        best = (ranked["mean"].max() if higher_is_better else ranked["mean"].min()) if len(ranked) else None
        cells = {}
        for i, r in part.iterrows():
            finetune = r.get("spread") == "finetune"
            n = int(r["n_finetune"]) if finetune else int(r["count"])
            # a cell holding a value that is not a finite number (LoadedRuns.nonfinite): nan, never a mean of the others
            cell = fmt_cell(r["mean"], r["std"], n) if math.isfinite(r["mean"]) else NONFINITE_CELL
            cell += FINETUNE_MARK if finetune else ""
            cell += BASELINE_MARK if bool(flagged.loc[i]) else ""
            if len(part) > 1 and best is not None and r["mean"] == best and not bool(flagged.loc[i]):
                cell = f"{mark}{cell}{mark}" if mark else cell
            cells[r["method"]] = f"{cell} n={int(r['count'])}"
        table[col] = cells
    out = pd.DataFrame(table)
    out = out[sorted(out.columns, key=column_order)]
    out.index.name = "method"
    return out.fillna("–")


def to_markdown(table: pd.DataFrame) -> str:
    head = "| method | " + " | ".join(table.columns) + " |"
    sep = "|---|" + "---|" * len(table.columns)
    rows = [f"| {m} | " + " | ".join(str(v) for v in r) + " |" for m, r in table.iterrows()]
    return "\n".join([head, sep, *rows]) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    def esc(s: str) -> str:
        s = str(s).replace("&", r"\&").replace("%", r"\%").replace("_", r"\_")
        if s.startswith("**"):
            inner, rest = s[2:].split("**", 1)
            s = r"\textbf{" + inner + "}" + rest
        return s.replace(" n=", r" {\scriptsize n=") + ("}" if " n=" in s else "")

    cols = "l" + "c" * len(table.columns)
    lines = [r"\begin{tabular}{" + cols + "}", r"\toprule",
             "Method & " + " & ".join(esc(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [esc(m) + " & " + " & ".join(esc(v) for v in r) + r" \\" for m, r in table.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def compare(
    paths: Iterable[str],
    metric: Optional[str] = None,
    fmt: str = "table",
    allow_mixed: bool = False,
    allowed_keys: Iterable[str] = (),
    lower_is_better: bool = False,
    versus: Optional[str] = None,
) -> tuple[pd.DataFrame, str, LoadedRuns]:
    """Load, check and format; returns (formatted table, text in ``fmt``, the loaded runs).

    ``metric`` None: the ``headline_metric`` the runs' recipes name.  ``versus``: a method to pair
    every other with by seed (:func:`paired_differences`); its table is ``table.attrs["versus"]``,
    and follows the main one in ``text`` (csv: its columns join the rows)."""
    loaded = load_runs(paths)
    if loaded.frame.empty:
        also = f" ({len(loaded.failed)} failed run(s) ignored)" if loaded.failed else ""
        also += (
            f" ({len(loaded.unreadable)} unreadable: {loaded.unreadable[0][0]}: {loaded.unreadable[0][1]})"
            if loaded.unreadable else ""
        )
        raise SSLBenchError("no finished runs (results.json) found under " + ", ".join(map(str, paths)) + also)
    check_selector_models(loaded)
    if not allow_mixed:
        check_mixing(loaded, allowed_keys)
    metric = metric or headline_metric(loaded)
    stats = summarize(loaded.frame, metric)
    table = pivot(stats, higher_is_better=not lower_is_better, mark="**" if fmt != "csv" else "")
    diffs = paired_differences(loaded.frame, metric, versus) if versus else None
    if fmt == "markdown":
        text = to_markdown(table)
    elif fmt == "latex":
        text = to_latex(table)
    elif fmt == "csv":
        cols = ["method", "column", "mean", "std", "n_seeds", "spread", "n_finetune", "repeated_runs", "at_baseline"]
        out = stats.rename(columns={"count": "n_seeds", "repeated": "repeated_runs"})[cols]
        if diffs is not None:
            out = out.merge(diffs, on=["method", "column"], how="left")
        text = out.to_csv(index=False)
    else:
        text = ""
    if diffs is not None:
        versus_table = pivot_differences(diffs, table.columns)
        table.attrs["versus"] = versus_table
        table.attrs["versus_note"] = versus_note(versus)
        if fmt == "markdown":
            text += "\n" + versus_note(versus) + ":\n\n" + to_markdown(versus_table)
        elif fmt == "latex":
            text += "\n% " + versus_note(versus) + "\n" + to_latex(versus_table)
    notes = []
    if stats["repeated"].any():
        notes.append(repeated_note(stats))
    if (stats["spread"] == "finetune").any():
        notes.append(spread_note(stats))
    if stats["at_baseline"].any() and not lower_is_better:
        notes.append(BASELINE_NOTE)
    if notes:
        table.attrs["note"] = "\n".join(notes)
        if fmt in ("markdown", "latex"):
            text += "\n" + "\n\n".join(notes) + "\n"
    return table, text, loaded


BASELINE_NOTE = (f"{BASELINE_MARK} no better than a constant prediction: every run predicted one class, or the mean is "
                 "at most the majority-class accuracy (accuracy), chance (balanced accuracy: 1 / classes) or 0.5 "
                 "(AUC); never marked best.")


def repeated_note(stats: pd.DataFrame) -> str:
    """Which cells held several runs of one seed (counted once, their mean)."""
    rows = stats[stats["repeated"] > 0]
    cells = "; ".join(f"{r['method']} · {r['column']} ({int(r['repeated'])})" for _, r in rows.head(4).iterrows())
    more = f" and {len(rows) - 4} more" if len(rows) > 4 else ""
    return ("repeated runs of one seed counted once (their mean; n = distinct seeds), extra runs per cell: "
            f"{cells}{more}")


def spread_note(stats: pd.DataFrame) -> str:
    """The footnote of cells whose ± is over fine-tuning seeds."""
    n = sorted({int(v) for v in stats.loc[stats["spread"] == "finetune", "n_finetune"]})
    return (f"{FINETUNE_MARK} one pre-training run: mean (std) over its {'/'.join(map(str, n))} fine-tuning seeds, "
            "as the paper's Table 1; other cells: over pre-training seeds (n).")


def table(paths: Iterable, metric: Optional[str] = None, long: bool = False, allow_mixed: bool = False) -> pd.DataFrame:
    """What ``ssl-bench compare`` tabulates, as a DataFrame: one row per method × column (dataset ·
    protocol, label fraction) with ``mean``, ``std`` (ddof 1) and ``count`` of ``metric`` (default:
    the runs' headline metric).  ``long=True``: every value of every run (one row per run ×
    protocol × metric).  Runs whose recipes differ beyond the seed are refused as ``ssl-bench compare``
    refuses them (``allow_mixed=True``: averaged anyway).  Also ``ssl_bench.compare(paths)``."""
    loaded = load_runs([str(p) for p in paths])
    if long:
        return loaded.frame
    if loaded.frame.empty:
        return pd.DataFrame(columns=["method", "column", "mean", "std", "count"])
    # the checks of `ssl-bench compare`: never average different experiments into one cell
    check_selector_models(loaded)
    if not allow_mixed:
        check_mixing(loaded)
    return summarize(loaded.frame, metric or headline_metric(loaded))


class _CallableModule(types.ModuleType):
    """``ssl_bench.compare(paths)`` is :func:`table`, while ``ssl_bench.compare`` stays this module
    for ``from ssl_bench.compare import …``."""

    def __call__(self, paths, metric: Optional[str] = None, long: bool = False,
                 allow_mixed: bool = False) -> pd.DataFrame:
        return table(paths, metric=metric, long=long, allow_mixed=allow_mixed)


sys.modules[__name__].__class__ = _CallableModule
