"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021; arXiv 2011.10566).

lightly's SimSiam heads (projector 3 layers, predictor bottleneck), stop-gradient on the other
view's projection, loss D = −cos(p_1, stopgrad(z_2)) symmetrised.  No target network.
"""

from __future__ import annotations

from typing import Optional

import torch
from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from ssl_bench.objectives.base import OBJECTIVES, Objective, StepOutput, ViewOutput, cosine_terms
from ssl_bench.objectives.byol import run_predictor


@OBJECTIVES.register("simsiam")
class SimSiam(Objective):
    """SimSiam (arXiv 2011.10566): stop-gradient, predictor, loss −cos; no momentum encoder."""

    def __init__(self, backbone: nn.Module, projection_dim: int = 2048, prediction_hidden_dim: int = 512):
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

    def _view(self, x: torch.Tensor) -> ViewOutput:
        return self.online(x)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        return StepOutput((self._view(x1), self._view(x2)))

    def loss(self, out: StepOutput, extra: Optional[torch.Tensor] = None, weight: float = 1.0) -> torch.Tensor:
        v1, v2 = out.views
        et = out.extra_targets or (None, None)
        own1, ex1 = cosine_terms(v1.p, v2.t, extra, scale=1.0, offset=0.0, extra_t=et[0])
        own2, ex2 = cosine_terms(v2.p, v1.t, extra, scale=1.0, offset=0.0, extra_t=et[1])
        return 0.5 * ((own1 + own2).mean() + weight * (ex1 + ex2).mean())
