"""SimCLR: A Simple Framework for Contrastive Learning (Chen et al., ICML 2020; arXiv 2002.05709).

NT-Xent over the 2B views of a batch.  With extra positives it becomes multi-positive in the
SupCon manner (Khosla et al., NeurIPS 2020; arXiv 2004.11362, L_out): for anchor i the loss is the
usual −log softmax at its own other view plus ``weight ×`` the mean of −log softmax at the other
view of each extra positive j; the denominator is always all 2B − 1 other views.  Without extra
positives it equals lightly's ``NTXentLoss`` (checked in the tests).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.distributed import Shard, gather_with_grad
from ssl_bench.objectives.base import OBJECTIVES, Objective, StepOutput, ViewOutput

__all__ = ["multi_positive_nt_xent", "multi_positive_infonce", "SimCLR"]


def multi_positive_nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    extra: Optional[torch.Tensor] = None,
    weight: float = 1.0,
    shard: Optional[Shard] = None,
) -> torch.Tensor:
    """NT-Xent with optional extra positives ``extra`` [B, k] (−1 = none).

    Data-parallel (``shard``): this rank's 2B views are the rows, the 2N views of the global batch
    (gathered with gradients) the columns, and ``extra`` indexes the global batch — the global
    batch's loss restricted to this rank's anchors (as lightly's ``gather_distributed``)."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    if shard is None or shard.world_size == 1:
        off, cols = 0, z
    else:
        off = shard.offset
        cols = F.normalize(torch.cat([gather_with_grad(z1, shard), gather_with_grad(z2, shard)]), dim=-1)
    return multi_positive_infonce(z @ cols.T / temperature, extra, weight, offset=off)


def multi_positive_infonce(
    logits: torch.Tensor, extra: Optional[torch.Tensor] = None, weight: float = 1.0, offset: int = 0
) -> torch.Tensor:
    """InfoNCE given pairwise ``logits`` [2B, 2N]: rows are this process's 2B views (view 1 of its B
    samples, then view 2), columns the 2N views of the (global) batch in the same order; local sample
    i is sample ``offset + i`` of the batch (N = B, ``offset`` 0 on one process).  The loss is −log
    softmax at the other view of the same sample, plus ``weight ×`` the mean over extra positives j
    (indices into the N samples) of −log softmax at the other view of j.  The view itself is excluded."""
    b, n = logits.shape[0] // 2, logits.shape[1] // 2
    rows = torch.arange(2 * b, device=logits.device)
    first = rows < b
    self_col = torch.where(first, offset + rows, n + offset + rows - b)  # the view itself
    sim = logits.masked_fill(self_col[:, None] == torch.arange(2 * n, device=logits.device)[None, :], float("-inf"))
    logp = torch.log_softmax(sim, dim=1)
    other = torch.where(first, n + offset + rows, offset + rows - b)  # each view's own positive: the other view
    loss = -logp[rows, other]
    if extra is not None:
        ex = torch.cat([extra, extra])  # [2B, k]: the same extra samples for both views
        valid = ex >= 0
        shift = torch.where(first, n, 0)[:, None]  # the other view of sample j
        cols = ex.clamp(min=0) + shift
        terms = -logp.gather(1, cols)
        loss = loss + weight * (terms * valid).sum(1) / valid.sum(1).clamp(min=1)
    return loss.mean()


@OBJECTIVES.register("simclr")
class SimCLR(Objective):
    """SimCLR (arXiv 2002.05709): NT-Xent, temperature τ; multi-positive with extra positives."""

    global_positives = True
    provides = frozenset({"features", "projection", "index_positives", "contrastive"})
    display = "SimCLR"

    def __init__(self, backbone: nn.Module, projection_dim: int = 128, hidden_dim: int = 2048,
                 temperature: float = 0.5):
        super().__init__()
        self.backbone = backbone
        # lightly's heads import torchvision and torch._dynamo (1.2–3 s on 2 cores): imported where a
        # network is built, so that checking a recipe (ssl-bench show) does not pay for them
        from lightly.models.modules.heads import SimCLRProjectionHead

        self.projector = SimCLRProjectionHead(backbone.num_features, hidden_dim, projection_dim)
        self.temperature = temperature

    def online(self, x: torch.Tensor) -> ViewOutput:
        h = self.backbone(x)
        z = self.projector(h)
        return ViewOutput(h=h, z=z, t=z.detach())

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def loss(self, out: StepOutput, extra: Optional[torch.Tensor] = None, weight: float = 1.0) -> torch.Tensor:
        v1, v2 = out.views
        return multi_positive_nt_xent(v1.z, v2.z, self.temperature, extra, weight, shard=out.shard)
