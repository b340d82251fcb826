"""Take a pre-trained backbone out of ssl-bench: ``ssl-bench export`` and :func:`load_backbone`.

An export file holds the backbone alone (the online network's timm model, as a plain state dict with
timm's own keys) and what rebuilds it::

    {"format": "ssl-bench-backbone/1", "timm_name": "resnet18", "in_chans": 1,
     "small_image_stem": true, "stem_pool": true, "feature_dim": 512, "image_size": 28,
     "mean": [...], "std": [...], "recipe": {...}, "ssl_bench_version": "...", "state_dict": {...}}

It is read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only.
A backbone without ``small_image_stem`` loads straight into
``timm.create_model(timm_name, num_classes=0, in_chans=in_chans)``; with it, the first convolution
is 3×3 stride 1 (and, without ``stem_pool``, ResNet's max-pool is dropped) — :func:`load_backbone`
rebuilds either, and ``docs/use_your_backbone.md`` shows both by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError

FORMAT = "ssl-bench-backbone/1"


class PretrainedBackbone(nn.Module):
    """A pre-trained backbone with the normalisation of its training data.

    ``forward(x)``: images as floats in [0, 1] (``[B, C, H, W]``, ideally at ``image_size``) →
    pooled features ``[B, feature_dim]``, the features ssl-bench's own evaluations use.
    ``model``: the bare timm model (expects normalised input); ``prepare(uint8 images)``: the
    evaluation view (centre crop or resize to ``image_size``, scaled to [0, 1])."""

    def __init__(self, model: nn.Module, mean: Optional[torch.Tensor], std: Optional[torch.Tensor], image_size: Optional[int], info: dict):
        super().__init__()
        self.model = model
        c = int(mean.numel()) if mean is not None else 1
        self.register_buffer("mean", (mean if mean is not None else torch.zeros(c)).reshape(1, -1, 1, 1).float())
        self.register_buffer("std", (std if std is not None else torch.ones(c)).reshape(1, -1, 1, 1).float())
        self.image_size = image_size
        self.info = info
        self.feature_dim = int(info.get("feature_dim") or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        from ssl_bench.augment import center_view

        return center_view(images, self.image_size) if self.image_size else images.float() / 255.0


def _backbone_block(recipe: dict) -> dict:
    return dict(recipe.get("backbone") or {})


def export_backbone(run: str | Path, out: str | Path, force: bool = False) -> dict:
    """Write the backbone of a run directory (or checkpoint file) to ``out``; returns what was written
    (without the weights)."""
    from ssl_bench import __version__, runs
    from ssl_bench.backbones import TimmBackbone
    from ssl_bench.trained import load_run

    out = Path(out)
    if out.exists() and not force:
        raise SSLBenchError(f"--out {out} exists; pass --force to replace it")
    trained = load_run(run, "cpu")
    bb = trained.backbone
    block = _backbone_block(trained.recipe)
    if not isinstance(bb, TimmBackbone):
        raise SSLBenchError(
            f"backbone '{block.get('name')}' is not a timm model (registered by a plug-in); export writes timm backbones — "
            "save trained.backbone.state_dict() from ssl_bench.trained.load_run instead"
        )
    norm = trained.normalize
    info = {
        "format": FORMAT,
        "timm_name": bb.name,
        "in_chans": int(bb.in_chans),
        "small_image_stem": bool(block.get("small_image_stem", False)),
        "stem_pool": bool(block.get("stem_pool", False)),
        "timm_kwargs": dict(block.get("kwargs") or {}),
        "feature_dim": int(bb.num_features),
        "image_size": trained.view_size,
        "mean": norm.mean.flatten().tolist() if norm is not None else None,
        "std": norm.std.flatten().tolist() if norm is not None else None,
        "epoch": trained.epoch,
        "source": str(trained.path),
        "recipe": trained.recipe,
        "ssl_bench_version": __version__,
    }
    state = {k: v.detach().cpu().clone() for k, v in bb.model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = runs.torch_save_to_temp({**info, "state_dict": state}, out)
    os.replace(tmp, out)
    return info


def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> PretrainedBackbone:
    """The pre-trained backbone of a run directory, a run checkpoint, or an ``ssl-bench export`` file,
    in eval mode: ``load_backbone(p)(x)`` gives the features ssl-bench's evaluations use for images
    ``x`` in [0, 1] at the training view size (``.prepare(uint8 images)`` makes that view)."""
    from ssl_bench.backbones import TimmBackbone

    p = Path(path).expanduser()
    state = _try_export(p) if p.is_file() else None  # read once: an export file, or else a run checkpoint
    if state is not None:
        bb = TimmBackbone(state["timm_name"], in_chans=state["in_chans"], small_image_stem=state["small_image_stem"],
                          stem_pool=state["stem_pool"], kwargs=state.get("timm_kwargs") or None)
        bb.model.load_state_dict(state["state_dict"])
        mean = torch.tensor(state["mean"]) if state.get("mean") is not None else None
        std = torch.tensor(state["std"]) if state.get("std") is not None else None
        info = {k: v for k, v in state.items() if k != "state_dict"}
        net = PretrainedBackbone(bb.model, mean, std, state.get("image_size"), info)
    else:
        from ssl_bench.trained import load_run

        trained = load_run(p, "cpu")
        norm = trained.normalize
        info = {"source": str(trained.path), "recipe": trained.recipe, "epoch": trained.epoch,
                "feature_dim": int(getattr(trained.backbone, "num_features", 0) or 0)}
        net = PretrainedBackbone(trained.backbone, norm.mean.flatten() if norm else None,
                                 norm.std.flatten() if norm else None, trained.view_size, info)
    net.requires_grad_(True)  # ready to fine-tune; eval mode for features
    return net.to(device).eval()


def _try_export(path: Path) -> Optional[dict]:
    """The contents of an export file (read with weights_only), or None for anything else (a run checkpoint)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None
