"""An example plug-in: a selector registered outside the ssl_bench package.

Use it from any recipe without installing anything::

    plugins: [registries/random_positive.py]
    selector: {name: random, k: 1}

It picks k random *other* samples of the batch as extra positives — a useful sanity baseline:
its selector precision should sit at the chance rate Σ p_c² that ssl-bench logs beside it.
"""

import torch

from ssl_bench.selectors import SELECTORS, SelectionContext, Selector
from ssl_bench.selectors.base import topk_excluding_self


@SELECTORS.register("random")
class RandomPositive(Selector):
    """Example plug-in: k random other in-batch samples (precision ≈ chance)."""

    @torch.no_grad()
    def select(self, ctx: SelectionContext) -> torch.Tensor:
        b = ctx.indices.shape[0]
        scores = torch.rand(b, b, generator=ctx.generator, device=ctx.generator.device)
        return topk_excluding_self(scores.to(ctx.indices.device), self.k)
