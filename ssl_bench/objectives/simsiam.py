"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021; arXiv 2011.10566).

lightly's SimSiam heads (projector 3 layers, predictor bottleneck), stop-gradient on the other
view's projection, loss D = −cos(p_1, stopgrad(z_2)) symmetrised.  No target network.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_bench.objectives.base import OBJECTIVES, PredictorObjective, ViewOutput
from ssl_bench.objectives.byol import run_predictor

__all__ = ["SimSiam"]


@OBJECTIVES.register("simsiam")
class SimSiam(PredictorObjective):
    """SimSiam (arXiv 2011.10566): stop-gradient, predictor, loss −cos; no momentum encoder."""

    scale, offset = 1.0, 0.0  # D = −cos(p, stopgrad(z))
    display = "SimSiam"

    def __init__(self, backbone: nn.Module, projection_dim: int = 2048, prediction_hidden_dim: int = 512):
        from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead  # (see simclr.py)

        super().__init__()
        self.backbone = backbone
        self.projector = SimSiamProjectionHead(backbone.num_features, projection_dim, projection_dim)
        self.predictor = SimSiamPredictionHead(projection_dim, prediction_hidden_dim, projection_dim)

    def online(self, x: torch.Tensor) -> ViewOutput:
        h = self.backbone(x)
        z = self.projector(h)
        p, a = run_predictor(self.predictor, z)
        return ViewOutput(h=h, z=z, t=z.detach(), p=p, a=a)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """SimSiam's target is the stop-gradient projection of the same network."""
        return self.projector(self.backbone(x))
