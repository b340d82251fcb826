"""Tutorial plug-in (docs/write_an_objective.md): Barlow Twins as an ssl-bench objective.

Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021
(arXiv 2103.03230): the cross-correlation matrix of the two views' projections is pulled towards
the identity.  lightly provides the projection head and the loss; this file only connects them to
ssl-bench's interface, and declares what the objective provides: features and projections, and no
extra positives (its loss has no per-sample positive to add them to), so a recipe that pairs it with
TracIn, FS or FT is refused when it is loaded.

    plugins: [registries/barlow_twins.py]
    objective: {name: barlow_twins}
    selector: {name: none}
"""

from typing import Optional

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from torch import nn

from ssl_bench.objectives import OBJECTIVES, Objective
from ssl_bench.objectives.base import StepOutput, ViewOutput


@OBJECTIVES.register("barlow_twins")
class BarlowTwins(Objective):
    """Barlow Twins (arXiv 2103.03230): cross-correlation of the views' projections → identity."""

    provides = frozenset({"features", "projection"})
    display = "BarlowTwins"

    def __init__(self, backbone: nn.Module, hidden_dim: int = 2048, projection_dim: int = 2048,
                 lambda_param: float = 0.005):
        super().__init__()
        self.backbone = backbone
        self.projector = BarlowTwinsProjectionHead(backbone.num_features, hidden_dim, projection_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param)

    def online(self, x: torch.Tensor) -> ViewOutput:
        h = self.backbone(x)
        z = self.projector(h)
        return ViewOutput(h=h, z=z, t=z.detach())

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def loss(self, out: StepOutput, extra: Optional[torch.Tensor] = None, weight: float = 1.0) -> torch.Tensor:
        v1, v2 = out.views
        return self.criterion(v1.z, v2.z)
