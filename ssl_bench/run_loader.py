"""One way to load a trained run: its network, normalisation, recipe and epoch.

Used by the pretrained selectors (a frozen network scores positives), ``ssl-bench embed``,
``ssl-bench positives``, ``ssl-bench export`` and :func:`ssl_bench.load_backbone`.  Loading reads
the checkpoint with ``weights_only=True`` and imports nothing: a run whose recipe names a component
registered by a plug-in needs that plug-in loaded first (``--plugin FILE``), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ssl_bench import checkpoint, runs
from ssl_bench.backbones import build_backbone
from ssl_bench.data.normalize import Normalize
from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives import OBJECTIVES, Objective

__all__ = ["checkpoint_path", "load_run"]


@dataclass
class TrainedRun:
    """A trained run's network in eval mode (at the stage its training ended in), on ``device``."""

    objective: Objective
    normalize: Optional[Normalize]  # the training split's statistics (None in a bare weights file)
    recipe: dict
    epoch: int
    path: Path  # the checkpoint file
    lr: Optional[float] = None  # the learning rate the checkpoint was saved at (epoch checkpoints)

    @property
    def backbone(self) -> torch.nn.Module:
        return self.objective.backbone

    @property
    def in_chans(self) -> int:
        return (
            int(self.normalize.mean.shape[1]) if self.normalize is not None
            else int(self.recipe["backbone"].get("in_chans") or 3)
        )

    @property
    def view_size(self) -> Optional[int]:
        """The side of the images the network was trained on (the evaluation view's)."""
        return self.recipe.get("augment", {}).get("size") or self.recipe.get("data", {}).get("size")


def checkpoint_path(path: str | Path, key: str = "RUN_DIR") -> Path:
    """``path`` itself if it is a file, else a run directory's ``checkpoints/last.pt``."""
    if runs.is_recipe_ref(str(path)):
        raise SSLBenchError(
            f"{key} names a recipe ({path}); `ssl-bench run` resolves it to that recipe's finished run — "
            "give the run directory (or its checkpoints/last.pt) here"
        )
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / runs.CHECKPOINT_DIR / runs.LAST_CHECKPOINT
    if not p.is_file():
        where = f"recipe key {key}" if "." in key else key
        raise SSLBenchError(f"checkpoint not found: {p} ({where})")
    return p


def load_run(
    path: str | Path, device: str | torch.device = "cpu", in_chans: Optional[int] = None, frozen: bool = True,
    key: str = "RUN_DIR"
) -> TrainedRun:
    """Rebuild the objective (backbone and heads) of a run directory or checkpoint file and load its
    weights.  ``in_chans``: the input channels when the checkpoint does not record its normalisation.
    ``frozen``: no parameter requires a gradient (what pretrained selectors use)."""
    p = checkpoint_path(path, key)
    state = checkpoint.read(p, key)
    recipe = state["recipe"]
    norm = state.get("normalize")
    normalize = Normalize(norm["mean"], norm["std"]) if norm else None
    channels = int(norm["mean"].numel()) if norm else in_chans
    for block in ("objective", "backbone"):
        name = recipe.get(block, {}).get("name")
        if block == "objective" and name not in OBJECTIVES:
            plugins = ", ".join(recipe.get("plugins") or []) or "none named in its recipe"
            raise SSLBenchError(
                f"checkpoint {p}: objective '{name}' is not registered; load the run's plug-in first with --plugin "
                f"FILE (its recipe names: {plugins})"
            )
    try:
        backbone = build_backbone({**recipe["backbone"], "weights": None}, in_chans=channels or 3)
        objective = OBJECTIVES.build(recipe["objective"], backbone, key=f"objective of {p}")
        objective.load_state_dict(state["objective"])
    except SSLBenchError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise SSLBenchError(f"checkpoint {p} ({key}) could not be loaded: {type(e).__name__}: {first[:200]}") from e
    epoch = int(state.get("epoch", 0))
    objective.begin_epoch(max(epoch, 0))  # a staged objective (t-SimCNE) in the stage it ended in
    objective.to(device).eval()
    if frozen:
        for prm in objective.parameters():
            prm.requires_grad_(False)
    lr = state.get("lr")
    return TrainedRun(objective, normalize.to(torch.device(device)) if normalize else None, recipe, epoch, p,
                      float(lr) if lr is not None else None)
