"""Tutorial plug-in (docs/write_a_selector.md): the least similar in-batch sample — a negative control."""

import torch
import torch.nn.functional as F

from ssl_bench.selectors import SELECTORS, Selector
from ssl_bench.selectors.base import topk_excluding_self


@SELECTORS.register("farthest")
class Farthest(Selector):
    """Negative control: the k least similar in-batch samples (projection cosine)."""

    def needs(self):
        return frozenset({"index_positives", "projection"})

    @torch.no_grad()
    def select(self, ctx):
        z = F.normalize(ctx.out.views[0].z, dim=1)
        return topk_excluding_self(-(z @ z.T), self.k)
