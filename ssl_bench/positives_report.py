"""How good are a selector's positives?  The paper's Fig. 2, measured on a trained run.

With the frozen network of a run (its last checkpoint), every named selector chooses positives
for the whole training set, in shuffled batches of the recipe's batch size, on the light views —
exactly what the selector would see during training with ``model: pretrained``.  Reported per
selector: the share of top-1 positives with the anchor's label (selector precision), the same over
all top-k, and the chance rate Σ p_c².  A PNG gallery shows anchors with their top-k positives by
each selector, labels written under each image (green: same label as the anchor).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ssl_bench.augment import AUGMENTATIONS
from ssl_bench.data import DATASETS, batches
from ssl_bench.errors import SSLBenchError
from ssl_bench.registry import factory_params
from ssl_bench.runs import atomic_write_text
from ssl_bench.selectors import SELECTORS, SelectionContext, selection_counts
from ssl_bench.selectors.models import ModelSelector
from ssl_bench.run_loader import load_run

__all__ = ["positives_outputs", "check_positives_options", "analyse_positives"]


PRECISION_AT = (1, 3, 10)  # top-j same-label precision reported for each j ≤ k


def parse_selector_spec(spec: str) -> dict:
    """``tracin`` or ``tracin:normalize=true,views=light`` → a selector block (values read as YAML, by
    the project's safe loader)."""
    from ssl_bench import safeyaml

    name, _, opts = spec.partition(":")
    cfg: dict = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise SSLBenchError(f"--selector {spec!r}: options are KEY=VALUE after a colon, e.g. tracin:normalize=true")
        if key.strip() in cfg:
            raise SSLBenchError(f"--selector {spec!r}: option '{key.strip()}' is given twice")
        cfg[key.strip()] = safeyaml.load(value, f"--selector {spec!r}: {key.strip()}={value!r}")
    return cfg


def build_analysis_selector(name: str, k: int, frozen, data):
    spec = parse_selector_spec(name)
    factory = SELECTORS.get(spec["name"], key="--selector")
    if getattr(factory, "kind", "batch") != "batch":
        raise SSLBenchError(f"selector '{spec['name']}' does not pick in-batch positives (kind {factory.kind}); "
                            "nothing to measure")
    cfg = dict(spec)
    for fixed in ("model", "checkpoint", "checkpoints"):  # the run's frozen network is the one measured
        if fixed in cfg:
            raise SSLBenchError(f"--selector {name!r}: '{fixed}' is not an option here (positives measures the run's "
                                "own network)")
    if "k" in factory_params(factory):
        cfg["k"] = k
    sel = SELECTORS.build(cfg, key="--selector")
    if isinstance(sel, ModelSelector):
        sel.use_frozen(frozen)  # one frozen network shared by all selectors
    else:
        sel.setup(frozen, data)
    return sel


def positives_outputs(run_dir: str | Path, out: Optional[str | Path], epoch: Optional[int],
                      force: bool = False) -> tuple[Path, Path]:
    """The gallery figure and the JSON report beside it (``X.json`` beside ``X.png``), both checked as
    output files: never a run's own file (``--out RUN/results.png`` would be ``RUN/results.json``), an
    existing one only with ``force``."""
    from ssl_bench.plots import check_figure_path
    from ssl_bench.runs import check_output

    default = f"positives_epoch{epoch:04d}.png" if epoch is not None else "positives.png"
    png = Path(out) if out else Path(run_dir) / default
    check_figure_path(png, "--out")
    report = png.with_suffix(".json")
    check_output(png, "--out", force)
    check_output(report, "--out's report", force)
    return png, report


def check_positives_options(k: int, gallery: int, device: str) -> torch.device:
    """``--k``, ``--gallery`` and ``--device``, checked before anything is loaded; returns the device."""
    from ssl_bench.embed import select_option_device

    for option, value in (("--k", k), ("--gallery", gallery)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SSLBenchError(f"{option} must be a whole number of at least 1, got {value!r}")
    return select_option_device(device)


def check_k_fits_batch(k: int, batch_size: int, images: Optional[int] = None) -> None:
    """A selector picks among the other images of its batch: ``k`` must be smaller than the batch."""
    if k >= batch_size:
        raise SSLBenchError(f"--k {k} is too large: a selector picks among the {batch_size - 1} other images of a "
                            f"batch (the run's train.batch_size is {batch_size}); give --k {batch_size - 1} or less")
    if images is not None and images < batch_size:
        raise SSLBenchError(f"the training split has {images} images, fewer than one batch of {batch_size} "
                            "(train.batch_size): nothing to measure")


@torch.no_grad()
def analyse_positives(
    run_dir: str | Path,
    selectors: list[str],
    k: int = 3,
    gallery: int = 8,
    out: Optional[str | Path] = None,
    device: str = "auto",
    seed: int = 0,
    log=print,
    epoch: Optional[int] = None,
    force: bool = False,
) -> dict:
    """``epoch``: measure the network the run kept at that epoch (``train.save_epochs``) instead of
    its last one: how the selectors' precision evolves with pre-training.  Writes the gallery ``out``
    (default ``RUN_DIR/positives.png``) and the report beside it (``.json``): neither may exist unless
    ``force``, and neither may be a file of a run directory."""
    run_dir = Path(run_dir)
    dev = check_positives_options(k, gallery, device)
    out_png, out_json = positives_outputs(run_dir, out, epoch, force)
    source = run_dir
    if epoch is not None:
        from ssl_bench.checkpoint import epoch_path

        source = epoch_path(run_dir, epoch)
        if not source.is_file():
            kept = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch*.pt"))
            raise SSLBenchError(f"--epoch {epoch}: run {run_dir} kept no network of that epoch ({source.name}; kept: "
                                f"{', '.join(kept) or 'none'})")
    trained = load_run(source, dev)  # weights only; plug-ins load only when the user passes them
    cfg, frozen, norm = trained.recipe, trained.objective, trained.normalize
    bs = cfg["train"]["batch_size"]
    check_k_fits_batch(k, bs)
    data = DATASETS.build(cfg["data"], key="data")
    check_k_fits_batch(k, bs, len(data.train))
    # the light views at the size the selector sees during training (the training view's), not the stored size
    light = AUGMENTATIONS.build({**cfg["selection_augment"],
                                 "size": cfg["selection_augment"].get("size") or trained.view_size or data.image_size},
                                key="selection_augment")
    sels = {name: build_analysis_selector(name, k, frozen, data) for name in selectors}
    # pretrained model selectors run their own forwards; others (FNC) read the batch's forward
    needs_forward = any(not isinstance(sel, ModelSelector) for sel in sels.values())

    images, labels = data.train.images, data.train.labels
    gen = torch.Generator().manual_seed(seed)
    sel_gen = torch.Generator(device=dev).manual_seed(seed)
    ats = [j for j in PRECISION_AT if j < k] + [k]
    counts = {n: np.zeros(2 * len(ats), dtype=np.int64) for n in sels}  # per j: top-j same, top-j chosen
    first = None
    scored = 0
    for idx in batches(len(images), bs, gen, drop_last=True):  # a remainder smaller than a batch is skipped
        scored += len(idx)
        x = images[idx].to(dev)
        lab = labels[idx].to(dev)
        x1, x2 = (norm(v) for v in light(x, sel_gen))
        fwd = frozen(x1, x2) if needs_forward else None  # only for selectors that read the step's forward
        ctx = SelectionContext(
            out=fwd, labels=lab, indices=idx.to(dev), objective=frozen, generator=sel_gen, lr=1.0,
            light_views=lambda x1=x1, x2=x2: (x1, x2), views=(x1, x2),
        )
        chosen = {}
        for name, sel in sels.items():
            extra = sel.select(ctx)
            if extra is None:
                raise SSLBenchError(f"selector '{name}' chose no positives")
            chosen[name] = extra
            for i, j in enumerate(ats):
                same, n_chosen = selection_counts(extra[:, :j], lab).tolist()[:2]
                counts[name][2 * i : 2 * i + 2] += [same, n_chosen]
        if first is None:
            first = (idx, {n: e.cpu() for n, e in chosen.items()})

    chance = data.label_chance_rate()
    report = {
        "run": str(run_dir),
        "epoch": trained.epoch,
        "dataset": data.name,
        "images": scored,
        "batch_size": bs,
        "chance": chance,
        "k": k,
        "selectors": {
            n: {**{f"precision_top{j}": float(c[2 * i] / max(c[2 * i + 1], 1)) for i, j in enumerate(ats)},
                "coverage_top1": float(c[1] / scored)}
            for n, c in counts.items()
        },
    }
    save_gallery(out_png, data, first[0], first[1], gallery, k)
    report["gallery"], report["report"] = str(out_png), str(out_json)
    atomic_write_text(out_json, json.dumps(report, indent=2) + "\n")
    return report


def save_gallery(path: Path, data, idx: torch.Tensor, chosen: dict, n: int, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssl_bench.plots import save_figure

    names = list(chosen)
    n = min(n, len(idx))
    cols = 1 + len(names) * k
    fig, axes = plt.subplots(n, cols, figsize=(1.25 * cols, 1.45 * n), squeeze=False)
    cls = data.class_names

    def show(ax, di, title=None, colour="black"):
        img = data.train.images[di]
        arr = img.permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
                  interpolation="nearest")
        lab = data.train.labels[di]
        text = cls[int(lab)] if lab.ndim == 0 and int(lab) < len(cls) else str(lab.tolist())
        ax.set_xlabel(text, fontsize=7, color=colour)
        if title:  # a long selector name wraps instead of running into its neighbour's
            import textwrap

            ax.set_title("\n".join(textwrap.wrap(title, 14)) or title, fontsize=7)

    for r in range(n):
        anchor = int(idx[r])
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        show(axes[r, 0], anchor, "anchor" if r == 0 else None)
        for s, name in enumerate(names):
            for j in range(k):
                ax = axes[r, 1 + s * k + j]
                e = int(chosen[name][r, j]) if j < chosen[name].shape[1] else -1
                if e < 0:
                    ax.axis("off")
                    continue
                di = int(idx[e])
                same = bool(torch.equal(data.train.labels[di], data.train.labels[anchor]))
                show(ax, di, f"{name} #{j + 1}" if r == 0 else None, "green" if same else "red")
    fig.suptitle(f"{data.name}: anchors and their top-{k} positives per selector (green = same label)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
