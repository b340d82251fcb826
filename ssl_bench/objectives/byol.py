"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020; arXiv 2006.07733).

As used by BYOL-TracIn (Zeng et al., MICCAI 2023; arXiv 2306.00112): projector and predictor are
lightly's BYOL heads (MLP 2 layers, BatchNorm, embedding 256), the target network is an EMA of the
online backbone+projector with momentum following a cosine schedule from ``momentum_base`` (0.99)
to ``momentum_end`` (1.0), and the loss is ℓ_i = 2 − 2·cos(q_i, z'_i), symmetrised over views.
"""

from __future__ import annotations

import copy

import torch
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bench.objectives.base import OBJECTIVES, PredictorObjective, ViewOutput

__all__ = ["run_predictor", "BYOL"]


def run_predictor(predictor: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (prediction q, input a of the predictor's last linear layer) in one pass."""
    layers = predictor.layers
    a = layers[:-1](z)
    return layers[-1](a), a


@OBJECTIVES.register("byol")
class BYOL(PredictorObjective):
    """BYOL (arXiv 2006.07733): online/target networks, EMA 0.99 → 1, loss 2 − 2·cos."""

    scale, offset = 2.0, 2.0  # ℓ = 2 − 2·cos(q, z′)
    display = "BYOL"

    def __init__(
        self,
        backbone: nn.Module,
        projection_dim: int = 256,
        hidden_dim: int = 4096,
        momentum_base: float = 0.99,
        momentum_end: float = 1.0,
    ):
        from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead  # (torchvision: see simclr.py)
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projector = BYOLProjectionHead(backbone.num_features, hidden_dim, projection_dim)
        self.predictor = BYOLPredictionHead(projection_dim, hidden_dim, projection_dim)
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.target_backbone)
        deactivate_requires_grad(self.target_projector)
        self.momentum_base, self.momentum_end = momentum_base, momentum_end

    def online(self, x: torch.Tensor) -> ViewOutput:
        """Online branch only (``t`` left empty): features, projection, prediction, predictor input."""
        h = self.backbone(x)
        z = self.projector(h)
        p, a = run_predictor(self.predictor, z)
        return ViewOutput(h=h, z=z, t=None, p=p, a=a)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The EMA target network's projection z′ (no gradient)."""
        return self.target_projector(self.target_backbone(x))

    @torch.no_grad()
    def momentum_update(self, step: int, total_steps: int) -> float:
        from lightly.models.utils import update_momentum

        m = cosine_schedule(step, total_steps, self.momentum_base, self.momentum_end)
        update_momentum(self.backbone, self.target_backbone, m)
        update_momentum(self.projector, self.target_projector, m)
        return m
