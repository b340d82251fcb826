"""Feature-similarity positives (FS): the most similar in-batch sample in feature space.

The FS and FS-pretrained baselines of BYOL-TracIn (Zeng et al., MICCAI 2023; arXiv 2306.00112).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ssl_bench.selectors.base import SELECTORS, SelectionContext, pool, topk_excluding_self
from ssl_bench.selectors.models import ModelSelector

__all__ = ["FeatureSimilaritySelector"]


@SELECTORS.register("fs")
@dataclass(eq=False)
class FeatureSimilaritySelector(ModelSelector):
    """Feature similarity (FS, arXiv 2306.00112 baseline): top-k cosine similarity of features.

    ``feature: backbone`` (pooled encoder output) or ``projection`` (the projector's output);
    ``model`` / ``checkpoint`` / ``views`` as for TracIn (``fs`` with a checkpoint = FS-pretrained).
    Similarity is between view 1 of the anchor and view 2 of each candidate (with light views: the
    image and its flipped centre crop), so duplicates of the anchor score highest.  In data-parallel
    training the candidates are the samples of all ranks (view-2 features all-gathered).
    """

    feature: Literal["backbone", "projection"] = "backbone"

    display = "FS"
    selects_globally = True

    def needs(self) -> frozenset:
        return frozenset({"index_positives", "features" if self.feature == "backbone" else "projection"})

    @torch.no_grad()
    def select(self, ctx: SelectionContext) -> torch.Tensor:
        if self.reuses_step():
            v1, v2 = ctx.out.views
            f1, f2 = (v1.h, v2.h) if self.feature == "backbone" else (v1.z, v2.z)
        else:
            x1, x2 = self.inputs(ctx)
            with self.no_grad_forward(ctx) as net:
                if self.feature == "backbone":  # the heads are not needed
                    f1, f2 = net.backbone(x1), net.backbone(x2)
                else:
                    f1, f2 = net.online(x1).z, net.online(x2).z
        # candidates: view 2 of every sample of the global batch (all ranks' features, gathered)
        scores = F.normalize(f1.float(), dim=1) @ pool(ctx, F.normalize(f2.float(), dim=1)).T
        return topk_excluding_self(scores, self.k, offset=ctx.offset)
