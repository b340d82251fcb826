"""Augmentation-only positives: the baseline of every paper (no extra positives)."""

from __future__ import annotations

from typing import Optional

import torch

from ssl_bench.selectors.base import SELECTORS, SelectionContext, Selector


@SELECTORS.register("none")
class NoSelector(Selector):
    """Augmentation-only: each sample's positive is its other view (plain BYOL/SimSiam/SimCLR)."""

    def __init__(self):
        super().__init__(k=1, weight=0.0)

    def select(self, ctx: SelectionContext) -> Optional[torch.Tensor]:
        return None
