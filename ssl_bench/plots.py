"""Figures from run directories: metric vs label fraction, selector precision per epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_label_fractions(frame: pd.DataFrame, metric: str, out: Path) -> Optional[Path]:
    """One panel per dataset: ``metric`` (mean ± std over seeds) against the fine-tuning label fraction."""
    df = frame[(frame["metric"] == metric) & frame["label_fraction"].notna()]
    if df.empty:
        return None
    plt = _plt()
    datasets = sorted(df["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        part = df[df["dataset"] == ds]
        for method, m in part.groupby("method"):
            s = m.groupby("label_fraction")["value"].agg(["mean", "std"]).reset_index().sort_values("label_fraction")
            ax.errorbar(s["label_fraction"], s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, label=method)
        ax.set_xlabel("label fraction")
        ax.set_ylabel(metric)
        ax.set_title(ds)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_selector_precision(runs: dict[str, str], out: Path) -> Optional[Path]:
    """Selector precision per epoch (mean over a method's runs), with the chance rate Σ p_c² dashed.

    ``runs`` maps run directory → method name.
    """
    rows = []
    for run, method in runs.items():
        path = Path(run) / "metrics.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("selector_precision") is not None:
                rows.append({"method": method, "epoch": r["epoch"], "precision": r["selector_precision"], "chance": r.get("selector_chance")})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, m in df.groupby("method"):
        s = m.groupby("epoch")["precision"].agg(["mean", "std"]).reset_index()
        ax.plot(s["epoch"], s["mean"], marker="o", label=method)
        ax.fill_between(s["epoch"], s["mean"] - s["std"].fillna(0), s["mean"] + s["std"].fillna(0), alpha=0.15)
    chance = df["chance"].dropna()
    if not chance.empty:
        ax.axhline(float(chance.mean()), ls="--", color="grey", label="chance Σp²")
    ax.set_xlabel("epoch")
    ax.set_ylabel("selector precision (same label)")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
