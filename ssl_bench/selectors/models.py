"""Selectors that look at the batch through a network: the one being trained or a frozen one.

"On-the-fly" variants (``model: online``) use the model being trained; "pretrained" variants
(``model: pretrained``, ``checkpoint: RUN_DIR_OR_PT`` or the producing recipe's ``.yaml``, see
:mod:`ssl_bench.pretrained`) load the encoder and heads of an earlier run
(e.g. a vanilla BYOL run of the same recipe) once, freeze them, and never train them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError
from ssl_bench.selectors.base import SelectionContext, Selector


def resolve_checkpoint(path: str | Path, key: str = "selector.checkpoint") -> Path:
    from ssl_bench.pretrained import checkpoint_of_recipe, is_recipe_ref

    if is_recipe_ref(str(path)):  # named by the recipe that produces it (ssl-bench run resolves it first)
        path = checkpoint_of_recipe(str(path), key)
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if not p.is_file():
        raise SSLBenchError(f"checkpoint not found: {p} (recipe key {key})")
    return p


def load_frozen_objective(path: str | Path, in_chans: int, key: str = "selector.checkpoint") -> nn.Module:
    """Rebuild the objective (backbone + heads) of a run checkpoint, frozen and in eval mode."""
    from ssl_bench.backbones import build_backbone
    from ssl_bench.objectives import OBJECTIVES

    p = resolve_checkpoint(path, key)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        recipe = state["recipe"]
        backbone_cfg = {**recipe["backbone"], "weights": None}
        model = OBJECTIVES.build(recipe["objective"], build_backbone(backbone_cfg, in_chans=in_chans), key=key)
        model.load_state_dict(state["objective"])
    except SSLBenchError:
        raise
    except Exception as e:
        raise SSLBenchError(f"checkpoint {p} (recipe key {key}) could not be loaded: {type(e).__name__}: {e}") from e
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model


@contextlib.contextmanager
def batchnorm_stats_frozen(model: nn.Module):
    """Forward in train mode without touching BatchNorm running statistics (momentum 0)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            m.num_batches_tracked.copy_(nbt)


class ModelSelector(Selector):
    """Base of batch selectors that need network outputs on (light or training) views."""

    def __init__(
        self, k: int = 1, weight: float = 1.0, model: str = "online", checkpoint: Optional[str] = None, views: str = "light"
    ):
        super().__init__(k=k, weight=weight)
        if model not in ("online", "pretrained"):
            raise SSLBenchError(f"recipe key selector.model must be online or pretrained, got '{model}'")
        if views not in ("light", "train"):
            raise SSLBenchError(f"recipe key selector.views must be light or train, got '{views}'")
        if model == "pretrained" and not checkpoint:
            raise SSLBenchError("recipe key selector.checkpoint is required with selector.model: pretrained")
        if model == "online" and checkpoint:
            raise SSLBenchError("recipe key selector.checkpoint is only used with selector.model: pretrained")
        self.model, self.checkpoint, self.views = model, checkpoint, views
        self.frozen: Optional[nn.Module] = None
        self._frozen_device: Optional[torch.device] = None

    def setup(self, objective: nn.Module, data) -> None:
        if self.model == "pretrained":
            self.frozen = load_frozen_objective(self.checkpoint, in_chans=data.channels)
        self.check_network(self.frozen if self.frozen is not None else objective)

    def use_frozen(self, net: nn.Module) -> None:
        """Select with an already loaded frozen network (shared between selectors)."""
        self.frozen = net
        self.check_network(net)

    def check_network(self, net: nn.Module) -> None:
        """Raise SSLBenchError if ``net`` lacks what this selector needs."""

    def network(self, ctx: SelectionContext) -> nn.Module:
        if self.frozen is not None:
            return self.frozen
        return ctx.objective

    def reuses_step(self) -> bool:
        """True when the training step's own forward is what this selector scores (no extra cost)."""
        return self.model == "online" and self.views == "train"

    def inputs(self, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.views == "light":
            if ctx.light_views is None:
                raise SSLBenchError("this selector needs light views but the training loop provided none")
            return ctx.light_views()
        return ctx.views

    @contextlib.contextmanager
    def no_grad_forward(self, ctx: SelectionContext):
        """No autograd at all (``torch.inference_mode``: ≈ 3 % of a BYOL step faster than
        ``no_grad`` for the two light-view passes on 2 CPU cores); a frozen network moves to the
        data's device once; the online network's BatchNorm statistics are left untouched by the
        selector's extra forward.  What the block computes are inference tensors: use them in the
        selection maths only (the indices a selector returns are made outside the block)."""
        net = self.network(ctx)
        with torch.inference_mode():
            if net is self.frozen:
                device = ctx.labels.device  # the training device
                if self._frozen_device != device:  # move once, not every step
                    net.to(device)
                    self._frozen_device = device
                yield net
            else:
                with batchnorm_stats_frozen(net):
                    yield net
