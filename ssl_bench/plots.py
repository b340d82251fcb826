"""Figures from run directories: metric vs label fraction, selector precision per epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd

from ssl_bench.errors import SSLBenchError
from ssl_bench.runs import finite_float

__all__ = [
    "check_figure_path", "save_figure", "label_fraction_table", "plot_label_fractions",
    "plot_selector_precision",
]


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")  # what the figure options accept (matplotlib's format from the suffix)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_figure_path(path: str | Path, option: str) -> None:
    """A figure file name matplotlib can write: one line naming ``option`` otherwise."""
    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise SSLBenchError(f"{option} {path}: a figure file must end in {', '.join(FIGURE_SUFFIXES)}")


def save_figure(fig, out: str | Path, **savefig_kw) -> Path:
    """Save ``fig`` to ``out`` through a temporary file and a rename (format from ``out``'s suffix),
    and close it; a failed write (disk full) is one line naming ``out``, an older file left intact."""
    from ssl_bench.runs import atomic_write

    fmt = Path(out).suffix.lstrip(".").lower() or "png"
    try:
        return atomic_write(Path(out), lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kw))
    finally:
        _plt().close(fig)


def label_fraction_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` of the fine-tuning evaluations, mean and std over seeds, per panel (the dataset the
    network was fine-tuned on: the pre-training dataset, or ``"HAM10000 → BreastMNIST"`` for a
    transfer evaluation), method and label fraction."""
    df = frame[(frame["metric"] == metric) & frame["label_fraction"].notna()]
    if df.empty:
        return pd.DataFrame(columns=["panel", "method", "label_fraction", "mean", "std"])
    protocol = df["protocol"].astype(str)
    target = protocol.str.extract(r"^transfer:([^/]+)/", expand=False)
    panel = df["dataset"].where(target.isna(), df["dataset"] + " → " + target)
    grouped = df.assign(panel=panel).groupby(["panel", "method", "label_fraction"])["value"]
    return grouped.agg(["mean", "std"]).reset_index().sort_values(["panel", "method", "label_fraction"])


def plot_label_fractions(frame: pd.DataFrame, metric: str, out: Path) -> Optional[Path]:
    """One panel per fine-tuning dataset: ``metric`` (mean ± std over seeds) against the label fraction."""
    table = label_fraction_table(frame, metric)
    if table.empty:
        return None
    plt = _plt()
    panels = list(dict.fromkeys(table["panel"]))
    methods = sorted(table["method"].unique())
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    color = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}  # one colour per method in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, name in zip(axes[0], panels):
        for method, s in table[table["panel"] == name].groupby("method"):
            ax.errorbar(s["label_fraction"], s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, label=method,
                        color=color[method])
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("label fraction")
        ax.set_ylabel(metric)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    by_label = {}  # every method once, whichever panels it appears in
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(label, h)
    labels = sorted(by_label)
    fig.legend([by_label[m] for m in labels], labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return save_figure(fig, out, dpi=120, bbox_inches="tight")


def plot_selector_precision(runs: dict[str, str], out: Path) -> Optional[Path]:
    """Selector precision per epoch (mean over a method's runs), with the chance rate Σ p_c² dashed.

    ``runs`` maps run directory → method name.
    """
    rows = []
    for run, method in runs.items():
        path = Path(run) / "metrics.jsonl"
        if not path.is_file():
            continue
        for r in _epoch_records(path):
            rows.append({"method": method, "epoch": r["epoch"], "precision": r["selector_precision"],
                         "chance": r.get("selector_chance")})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    plt = _plt()
    # selectors of same-label positives by construction (oracle, MICLe's lesions) sit at 1.0; the
    # others within a few points of each other: a second panel fits the y axis to those
    top = df.groupby("method")["precision"].transform("max") >= 0.95
    panels = [(df, (0, 1.05), "all selectors")] + (
        [(df[~top], None, "selectors below 0.95")] if top.any() and not top.all() else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), squeeze=False)
    chance = df["chance"].dropna()
    colours = {m: f"C{i % 10}" for i, m in enumerate(sorted(df["method"].unique()))}
    for ax, (part, ylim, title) in zip(axes[0], panels):
        for method, m in part.groupby("method"):
            s = m.groupby("epoch")["precision"].agg(["mean", "std"]).reset_index()
            ax.plot(s["epoch"], s["mean"], marker="o", ms=3, color=colours[method], label=method)
            ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0),
                            color=colours[method], alpha=0.15)
        if not chance.empty:
            ax.axhline(float(chance.mean()), ls="--", color="grey", label="chance Σp²")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("selector precision (same label)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return save_figure(fig, out, dpi=120, bbox_inches="tight")


def _epoch_records(path: Path) -> list[dict]:
    """The records of ``metrics.jsonl`` with an epoch and a finite selector precision; a line that is
    not such a record (damaged, foreign, nested without end) is passed over."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(r, dict):
            continue
        epoch, prec, chance = r.get("epoch"), r.get("selector_precision"), r.get("selector_chance")
        numbers = (epoch, prec) if chance is None else (epoch, prec, chance)
        if all(finite_float(v) is not None for v in numbers):
            out.append(r)
    return out
