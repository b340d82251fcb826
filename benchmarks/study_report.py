"""Publish the study: copy the finished runs' small files to docs/results/<tag>/, measure the
pretrained selectors on the kept BYOL networks (the paper's Fig. 2), draw the figures and write the
tables into docs/results.md between their markers.

    python benchmarks/study_report.py                      # runs/study → docs/results/cpu
    python benchmarks/study_report.py --root runs/gpu_study --tag gpu
    python benchmarks/study_report.py --no-positives       # tables and figures only (fast)

Every table in docs/results.md is the output of `ssl-bench compare docs/results/<tag>/study ...`
(the command is printed above it); tests/test_results_doc.py checks that they still match.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL_FILES = ("results.json", "metrics.jsonl", "recipe.yaml")
# the tables of docs/results.md: marker → (compare arguments after the folder)
TABLES = {
    "table1": ["--metric", "balanced_accuracy", "--format", "markdown"],
    "table1_auc": ["--metric", "auc", "--format", "markdown"],
    # each method minus BYOL, paired by seed, with 95 % intervals (round 2; a doc without the marker skips it)
    "versus": ["--metric", "balanced_accuracy", "--format", "markdown", "--versus", "BYOL"],
}
CURVE_METHODS = ("BYOL", "BYOL-TracIn")  # the rows whose kept networks are evaluated (benchmarks/study2.py)
CURVE_PROTOCOLS = ("linear", "finetune@1")
POSITIVE_SELECTORS = ["tracin", "tracin:normalize=true", "fs", "fnc"]


def copy_small_files(root: Path, dest: Path) -> list[Path]:
    """Each finished run's results.json, metrics.jsonl, recipe.yaml and the results files of
    `ssl-bench evaluate` (no checkpoints)."""
    runs = sorted(p.parent for p in root.rglob("results.json"))
    for run in runs:
        target = dest / run.relative_to(root)
        target.mkdir(parents=True, exist_ok=True)
        for f in [*(run / name for name in SMALL_FILES), *run.glob("results-evaluate-*.json")]:
            if f.is_file():
                shutil.copy2(f, target / f.name)
    return runs


def random_at_chance(folder: Path) -> list[str]:
    """The cells of the Random row (an untrained encoder) that are no better than a constant
    prediction: when a protocol cannot lift an untrained network above the majority class, its
    column measures the protocol, not the representations, and no finding may be drawn from it."""
    sys.path.insert(0, str(REPO))
    from ssl_bench.compare import load_runs, summarize

    frame = load_runs([str(folder)]).frame
    stats = summarize(frame, "balanced_accuracy") if not frame.empty else None
    if stats is None or "Random" not in set(stats["method"]):
        return []
    random = stats[(stats["method"] == "Random") & stats["at_baseline"].astype(bool)]
    # the probes of random features may be near chance
    return [f"{r['column']} (BMA {r['mean']:.3f})" for _, r in random.iterrows() if "finetune" in r["column"]]


def compare_cmd(folder: Path, args: list[str]) -> list[str]:
    return ["ssl-bench", "compare", str(folder.relative_to(REPO)), *args]


def run_compare(folder: Path, args: list[str]) -> str:
    cmd = [sys.executable, "-m", "ssl_bench.cli", *compare_cmd(folder, args)[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"compare failed: {r.stderr.strip()}")
    return r.stdout


def measure_positives(root: Path, dest: Path, epochs: list[int], k: int = 10) -> list[dict]:
    """Same-label precision of each selector with the frozen BYOL network of each kept epoch."""
    from ssl_bench.positives_report import analyse_positives

    rows = []
    for run in sorted((root / "study_byol").rglob("results.json")):
        run = run.parent
        seed = json.loads((run / "results.json").read_text())["seed"]
        for e in epochs:
            out = dest / "positives" / f"seed{seed}_epoch{e:04d}.png"
            if out.with_suffix(".json").is_file():
                rep = json.loads(out.with_suffix(".json").read_text())
            else:
                if not (run / "checkpoints" / f"epoch{e:04d}.pt").is_file():
                    continue
                rep = analyse_positives(run, POSITIVE_SELECTORS, k=k, gallery=6, out=out, device="auto", epoch=e)
                rep["run"] = str(run.relative_to(root))
                out.with_suffix(".json").write_text(json.dumps(rep, indent=2) + "\n")
            for name, r in rep["selectors"].items():
                rows.append({"seed": seed, "epoch": e, "selector": name, "chance": rep["chance"],
                             **{key: v for key, v in r.items() if key.startswith("precision")}})
        gallery = dest / "positives" / f"gallery_seed{seed}.png"  # the paper's Fig. 2 gallery: top-3 by TracIn and FS
        last = max((e for e in epochs if (run / "checkpoints" / f"epoch{e:04d}.pt").is_file()), default=None)
        if last is not None and not gallery.is_file():
            analyse_positives(run, ["tracin", "fs"], k=3, gallery=8, out=gallery, device="auto", epoch=last)
    return rows


def plot_positives(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.0), layout="constrained", sharey=True)
    for ax, j in zip(axes, (1, 3, 10)):
        for name, g in df.groupby("selector"):
            s = g.groupby("epoch")[f"precision_top{j}"].agg(["mean", "std"]).reset_index()
            ax.errorbar(s["epoch"], s["mean"], yerr=s["std"].fillna(0), marker="o", ms=4, capsize=2, label=name)
        chance = df.groupby("epoch")["chance"].mean()
        ax.plot(chance.index, chance.values, "k--", lw=1, label="chance Σp²")
        ax.set_title(f"top-{j} same-label precision")
        ax.set_xlabel("pre-training epoch of the frozen BYOL network")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_frame(folder: Path):
    """BMA per method × protocol × pre-training epoch × seed for the curve rows: the runs' own
    evaluations at their last epoch, ``ssl-bench evaluate --epoch E`` of the kept networks, and the
    Random row (the same seed's untrained network) at epoch 0."""
    import re

    import pandas as pd

    sys.path.insert(0, str(REPO))
    from ssl_bench.compare import load_runs

    frame = load_runs([str(folder)]).frame
    frame = frame[frame["metric"] == "balanced_accuracy"]
    last = {}
    for f in folder.rglob("results.json"):
        res = json.loads(f.read_text())
        last[str(f.parent)] = res.get("epochs")
    rows = []
    for _, r in frame.iterrows():
        m = re.fullmatch(r"(.+?)(?: \(epoch (\d+)\))?", r["protocol"])
        protocol, epoch = m.group(1), m.group(2)
        if protocol not in CURVE_PROTOCOLS or r["method"] not in (*CURVE_METHODS, "Random"):
            continue
        epoch = int(epoch) if epoch else last.get(r["run"], None)
        methods = CURVE_METHODS if r["method"] == "Random" else (r["method"],)
        for method in methods:  # the untrained network is every curve's epoch 0
            rows.append({"method": method, "protocol": protocol, "epoch": epoch, "seed": r["seed"],
                         "value": r["value"]})
    return pd.DataFrame(rows, columns=["method", "protocol", "epoch", "seed", "value"])


def plot_curves(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_PROTOCOLS), figsize=(10, 4.0), layout="constrained")
    for ax, protocol in zip(axes, CURVE_PROTOCOLS):
        part = df[df["protocol"] == protocol]
        for method, g in part.groupby("method"):
            s = g.groupby("epoch")["value"].agg(["mean", "min", "max", "count"]).reset_index()
            line, = ax.plot(s["epoch"], s["mean"], marker="o", ms=4, label=f"{method} (mean)")
            ax.fill_between(s["epoch"], s["min"], s["max"], color=line.get_color(), alpha=0.2,
                            label=f"{method} (seed range)")
        ax.axhline(1 / 7, color="k", ls="--", lw=1, label="chance (1/7)")
        ax.set_title({"linear": "linear probe", "finetune@1": "fine-tuned, 100 % of the labels"}[protocol])
        ax.set_xlabel("pre-training epoch")
        ax.set_ylabel("HAM10000 test BMA")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_table(df) -> str:
    """Mean (std) BMA per epoch, one column per method × protocol, n seeds."""
    if df.empty:
        return "_no kept networks evaluated yet_\n"
    cols = [(m, p) for p in CURVE_PROTOCOLS for m in CURVE_METHODS]
    lines = ["| epoch | " + " | ".join(f"{m} · {p}" for m, p in cols) + " |", "|---|" + "---|" * len(cols)]
    for epoch in sorted(df["epoch"].dropna().unique()):
        cells = []
        for m, p in cols:
            v = df[(df["method"] == m) & (df["protocol"] == p) & (df["epoch"] == epoch)]["value"]
            cells.append("–" if v.empty else f"{v.mean():.3f}" + (f" ({v.std():.3f})" if len(v) > 1 else "")
                         + f" n={len(v)}")
        lines.append(f"| {int(epoch)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compute_table(folder: Path) -> str:
    """Minutes per run by row, from each run's results.json (pre-training wall time, evaluation time)
    and metrics.jsonl (the median epoch: a sitting's pause or a shared core shows in the mean only)."""
    import statistics

    per: dict[str, list[tuple[float, float, float]]] = {}
    for f in sorted(folder.rglob("results.json")):
        res = json.loads(f.read_text())
        epochs = [json.loads(line).get("epoch_time_s") for line in (f.parent / "metrics.jsonl").read_text().splitlines()
                  if line.strip()] if (f.parent / "metrics.jsonl").is_file() else []
        epochs = [e for e in epochs if isinstance(e, (int, float))]
        per.setdefault(res["method"], []).append((
            (res.get("train") or {}).get("wall_time_s") or 0.0, res.get("eval_time_s") or 0.0,
            statistics.median(epochs) if epochs else float("nan"), res.get("epochs") or 0))
    lines = ["| row | runs | pre-training as run (min) | median epoch (s) | epochs × median (min) "
             "| evaluations (min) |", "|---|---|---|---|---|---|"]
    for method, runs in per.items():
        train, evals, epoch, n = (statistics.mean(r[i] for r in runs) for i in range(4))
        lines.append(f"| {method} | {len(runs)} | {train / 60:.1f} | {epoch:.1f} | {n * epoch / 60:.1f} | "
                     f"{evals / 60:.1f} |")
    return "\n".join(lines) + "\n"


def positives_table(rows: list[dict]) -> str:
    import pandas as pd

    if not rows:
        return "_no kept networks measured yet_\n"
    df = pd.DataFrame(rows)
    last = df[df["epoch"] == df["epoch"].max()]
    lines = [f"| selector (epoch {int(df['epoch'].max())} network) | top-1 | top-3 | top-10 | n |",
             "|---|---|---|---|---|"]
    for name, g in last.groupby("selector", sort=False):
        cells = []
        for j in (1, 3, 10):
            v = g[f"precision_top{j}"]
            cells.append(f"{v.mean():.3f}" + (f" ({v.std():.3f})" if len(v) > 1 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(g)} |")
    lines.append(f"| chance Σp² | {last['chance'].mean():.3f} | | | |")
    return "\n".join(lines) + "\n"


def replace_block(text: str, marker: str, body: str) -> str:
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        raise SystemExit(f"docs/results.md has no {start} … {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.rstrip()}\n{end}{tail}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="runs/study", help="the study's run folder (benchmarks/study_cpu.sh --out-root)")
    ap.add_argument("--tag", default="cpu", help="docs/results/<tag>/")
    ap.add_argument("--epochs", default="2,6,10", help="kept epochs of the BYOL runs to measure the selectors on")
    ap.add_argument("--no-positives", action="store_true")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    dest = REPO / "docs" / "results" / args.tag
    runs = copy_small_files(root, dest / "study")
    print(f"copied the small files of {len(runs)} finished runs to {dest / 'study'}")
    at_chance = random_at_chance(dest / "study")
    if at_chance:
        raise SystemExit(
            "the Random row is no better than the majority class in " + "; ".join(at_chance) + ": the protocol learned "
            "nothing from an untrained network, so these columns measure the protocol; docs/results.md was not updated "
            "(fix the protocol, or re-evaluate with ssl-bench evaluate)"
        )
    rows = []
    if not args.no_positives:
        rows = measure_positives(root, dest, [int(e) for e in args.epochs.split(",")])
    else:
        for p in sorted((dest / "positives").glob("seed*_epoch*.json")):  # not the galleries
            rep = json.loads(p.read_text())
            for name, r in rep["selectors"].items():
                rows.append({"seed": int(p.stem.split("_")[0][4:]), "epoch": rep["epoch"], "selector": name,
                             "chance": rep["chance"],
                             **{key: v for key, v in r.items() if key.startswith("precision")}})
    if rows:
        plot_positives(rows, dest / "positives_vs_epoch.png")
    plots = subprocess.run([sys.executable, "-m", "ssl_bench.cli", "compare", str(dest / "study"), "--plot",
                            str(dest / "plots"), "--force",
                            "--metric", "balanced_accuracy", "--format", "csv"], capture_output=True, text=True,
                           cwd=REPO)
    print(plots.stderr.strip())
    doc_path = REPO / "docs" / "results.md"
    doc = doc_path.read_text()
    if f"<!-- {args.tag}:" not in doc:  # a new study (the GPU one): its own section at the end
        doc = doc.rstrip() + f"\n\n## Study `{args.tag}` ({args.root})\n\n" + "".join(
            f"<!-- {args.tag}:{m} -->\n<!-- /{args.tag}:{m} -->\n\n" for m in [*TABLES, "positives"])
    for marker, cargs in TABLES.items():
        block = f"<!-- {args.tag}:{marker} -->"
        if block not in doc:
            continue
        body = ("```bash\n" + " ".join(compare_cmd(dest / "study", cargs)) + "\n```\n\n"
                + run_compare(dest / "study", cargs))
        doc = replace_block(doc, f"{args.tag}:{marker}", body)
    if rows and f"<!-- {args.tag}:positives -->" in doc:
        figure = (f"![precision vs pre-training epoch](results/{args.tag}/positives_vs_epoch.png)\n\n"
                  if args.tag != "cpu" else "")  # round 1 shows its figure below the block
        doc = replace_block(doc, f"{args.tag}:positives", figure + positives_table(rows))
    if f"<!-- {args.tag}:compute -->" in doc:
        doc = replace_block(doc, f"{args.tag}:compute", compute_table(dest / "study"))
    if f"<!-- {args.tag}:curves -->" in doc:
        curves = curve_frame(dest / "study")
        figure = ""
        if not curves.empty:
            plot_curves(curves, dest / "bma_vs_epoch.png")
            figure = f"![BMA vs pre-training epoch](results/{args.tag}/bma_vs_epoch.png)\n\n"
        doc = replace_block(doc, f"{args.tag}:curves", figure + curves_table(curves))
    doc_path.write_text(doc)
    print(f"updated {doc_path}")


if __name__ == "__main__":
    main()
