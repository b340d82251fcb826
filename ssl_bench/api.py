"""The Python API: what ``ssl-bench run`` / ``compare`` do, from a script or a notebook.

::

    import ssl_bench

    run = ssl_bench.run("recipes/medmnist/byol_breastmnist.yaml", overrides=["train.epochs=1"])
    run.dir, run.results["eval"]          # the run directory and its results.json
    net = run.backbone()                  # the pre-trained backbone (torch.nn.Module, eval mode)
    feats = run.embed(images_uint8)       # [N, feature_dim] numpy, the features evaluations use
    table = ssl_bench.compare(["runs/"])  # mean, std, n per method × dataset × protocol × metric

Everything here is also a command (``docs/quickstart.md``); the run directory is the same either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import torch

from ssl_bench.recipe import Recipe, load_recipe

__all__ = ["Run", "run", "open_run", "compare"]


@dataclass
class Run:
    """A finished (or interrupted) run directory."""

    dir: Path
    _backbone: Optional[torch.nn.Module] = field(default=None, repr=False)

    @property
    def results(self) -> dict:
        """``results.json`` (evaluations, headline metric, versions, timing)."""
        from ssl_bench.runs import RESULTS_FILE

        p = self.dir / RESULTS_FILE
        return json.loads(p.read_text()) if p.is_file() else {}

    @property
    def recipe(self) -> dict:
        """The resolved recipe the run was trained with (``recipe.yaml``; plain data, no code)."""
        from ssl_bench import safeyaml
        from ssl_bench.runs import RECIPE_FILE

        return safeyaml.load((self.dir / RECIPE_FILE).read_bytes(), str(self.dir / RECIPE_FILE))

    def metrics(self) -> pd.DataFrame:
        """``metrics.jsonl``: one row per epoch (and per logged step when ``log`` asks for it)."""
        from ssl_bench.runs import METRICS_FILE

        p = self.dir / METRICS_FILE
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []
        return pd.DataFrame(rows)

    def backbone(self, device: str | torch.device = "cpu"):
        """The pre-trained backbone (:class:`ssl_bench.export.PretrainedBackbone`): images in [0, 1]
        → features; ``.model`` is the bare timm model."""
        from ssl_bench.export import load_backbone

        if self._backbone is None:
            self._backbone = load_backbone(self.dir, device)
        return self._backbone.to(device)

    @torch.no_grad()
    def embed(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Backbone features of ``images``: uint8 ``[N, C, H, W]`` (any size: the evaluation view is
        made as in ssl-bench's evaluations) or floats in [0, 1] at the training view size."""
        net = self.backbone()
        x = torch.as_tensor(images)
        dev = next(net.parameters()).device
        out = []
        for start in range(0, x.shape[0], batch_size):
            b = x[start : start + batch_size]
            b = net.prepare(b) if b.dtype == torch.uint8 else b.float()
            out.append(net(b.to(dev)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, net.feature_dim), dtype=np.float32)

    def export(self, out: str | Path, force: bool = False) -> dict:
        """``ssl-bench export``: the backbone alone, loadable with :func:`ssl_bench.load_backbone`."""
        from ssl_bench.export import export_backbone

        return export_backbone(self.dir, out, force=force)


def run(
    recipe: str | Path | dict | Recipe,
    overrides: Iterable[str] = (),
    out: Optional[str | Path] = None,
    device: Optional[str] = None,
    progress: bool = False,
    resume: Optional[str | Path] = None,
) -> Run:
    """Pre-train and evaluate ``recipe`` (a file, a mapping or a :class:`Recipe`) with ``--set``-style
    ``overrides`` (``["train.epochs=1"]``); returns the :class:`Run`.  ``out``: the run directory
    (new or empty; default ``<out_dir>/<name>/<time>``)."""
    from ssl_bench.train import run as run_recipe

    if isinstance(recipe, Recipe):
        r = recipe if not overrides else load_recipe(recipe.path, [*recipe.overrides, *overrides])
    elif isinstance(recipe, dict):
        r = load_recipe(None, list(overrides), data=recipe)
    else:
        r = load_recipe(recipe, list(overrides))
    return Run(Path(run_recipe(r, out=out, device=device, progress=progress, resume=resume)))


def open_run(path: str | Path) -> Run:
    """A :class:`Run` of an existing run directory (reads files only; imports nothing from it)."""
    p = Path(path)
    if not p.is_dir():
        from ssl_bench.errors import SSLBenchError

        raise SSLBenchError(f"not a run directory: {p}")
    return Run(p)


def compare(paths: Iterable[str | Path], metric: Optional[str] = None, long: bool = False) -> pd.DataFrame:
    """What ``ssl-bench compare`` tabulates, as a DataFrame (:func:`ssl_bench.compare.table`)."""
    from ssl_bench.compare import table

    return table(paths, metric=metric, long=long)
