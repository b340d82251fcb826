"""False-negative cancellation as positives (Huynh et al., WACV 2022; arXiv 2011.11765).

FNC finds in-batch samples that are probably of the anchor's class ("false negatives") by their
similarity to the anchor's *support views*, and — in its attraction variant — treats them as
positives.  Adapted to BYOL as BYOL-TracIn did (arXiv 2306.00112, FNC baseline): candidate j's
score is the maximum cosine similarity between j's projection and the projections of the anchor's
support views; a candidate becomes an extra positive if it is among the top ``k`` *and* its score
is above ``threshold`` (FNC defaults: top-k 10, threshold 0.7).

The support views are the step's own two views (no extra forward); candidate features are the
(detached) online projections of view 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ssl_bench.errors import SSLBenchError
from ssl_bench.selectors.base import SELECTORS, SelectionContext, Selector, pool, topk_excluding_self

__all__ = ["fnc_scores", "FNCSelector"]


def fnc_scores(support: list[torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
    """[B, B]: max over support views s of cos(support_s[i], candidates[j])."""
    c = F.normalize(candidates.float(), dim=1)
    return torch.stack([F.normalize(s.float(), dim=1) @ c.T for s in support]).amax(0)


@SELECTORS.register("fnc")
@dataclass(eq=False)
class FNCSelector(Selector):
    """FNC (arXiv 2011.11765): top-k by max similarity to the anchor's support views, above a threshold."""

    k: int = 10
    threshold: float = 0.7
    feature: Literal["projection", "backbone"] = "projection"

    display = "FNC"
    selects_globally = True

    def __post_init__(self):
        super().__post_init__()
        if not -1.0 <= self.threshold <= 1.0:
            raise SSLBenchError(f"recipe key selector.threshold must be a cosine in [-1, 1], got {self.threshold}")

    def needs(self) -> frozenset:
        return frozenset({"index_positives", "projection" if self.feature == "projection" else "features"})

    @torch.no_grad()
    def select(self, ctx: SelectionContext) -> torch.Tensor:
        v1, v2 = ctx.out.views
        f1, f2 = (v1.z, v2.z) if self.feature == "projection" else (v1.h, v2.h)
        scores = fnc_scores([f1.detach(), f2.detach()], pool(ctx, f1))  # candidates: the global batch
        return topk_excluding_self(scores, self.k, allowed=scores >= self.threshold, offset=ctx.offset)
