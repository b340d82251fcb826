"""Oracle positives: a random other in-batch sample with the same label (BYOL-Sup).

The upper bound of BYOL-TracIn (Zeng et al., MICCAI 2023; arXiv 2306.00112, "BYOL-Sup"): the only
selector allowed to look at the labels.  Its logged selector precision is 1.0 by construction.
"""

from __future__ import annotations

import torch

from ssl_bench.selectors.base import SELECTORS, SelectionContext, Selector, same_label_matrix, topk_excluding_self


@SELECTORS.register("oracle")
class OracleSelector(Selector):
    """Upper bound (BYOL-Sup): k random other in-batch samples with the anchor's label."""

    uses_labels = True
    display = "Sup"  # the paper's name: BYOL-Sup

    def __init__(self, k: int = 1, weight: float = 1.0):
        super().__init__(k=k, weight=weight)

    @torch.no_grad()
    def select(self, ctx: SelectionContext) -> torch.Tensor:
        b = ctx.labels.shape[0]
        scores = torch.rand(b, b, generator=ctx.generator, device=ctx.generator.device).to(ctx.labels.device)
        return topk_excluding_self(scores, self.k, allowed=same_label_matrix(ctx.labels))
