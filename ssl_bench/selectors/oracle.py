"""Oracle positives: a random other in-batch sample with the same label (BYOL-Sup).

The upper bound of BYOL-TracIn (Zeng et al., MICCAI 2023; arXiv 2306.00112, "BYOL-Sup"): the only
selector allowed to look at the labels.  Its logged selector precision is 1.0 by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssl_bench.selectors.base import SELECTORS, SelectionContext, Selector, pool, same_label_matrix, topk_excluding_self

__all__ = ["OracleSelector"]


@SELECTORS.register("oracle")
@dataclass(eq=False)
class OracleSelector(Selector):
    """Upper bound (BYOL-Sup): k random other in-batch samples with the anchor's label."""

    selects_globally = True
    display = "Sup"  # the paper's name: BYOL-Sup

    @torch.no_grad()
    def select(self, ctx: SelectionContext) -> torch.Tensor:
        # data-parallel: every rank draws the global batch's [B, B] scores from the same seeded
        # generator and keeps its rows, so the choice equals one process's on the global batch
        labels = pool(ctx, ctx.labels)
        b = labels.shape[0]
        gen = ctx.generator if ctx.generator is not None else torch.default_generator
        scores = torch.rand(b, b, generator=gen, device=gen.device).to(ctx.labels.device)
        rows = slice(ctx.offset, ctx.offset + ctx.labels.shape[0])
        allowed = same_label_matrix(labels)[rows]
        return topk_excluding_self(scores[rows], self.k, allowed=allowed, offset=ctx.offset)
