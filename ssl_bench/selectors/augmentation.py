"""Augmentation-only positives: the baseline of every paper (no extra positives)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from ssl_bench.selectors.base import SELECTORS, SelectionContext, Selector

__all__ = ["NoSelector"]


@SELECTORS.register("none")
@dataclass(eq=False)
class NoSelector(Selector):
    """Augmentation-only: each sample's positive is its other view (plain BYOL/SimSiam/SimCLR)."""

    k: int = field(default=1, init=False)
    weight: float = field(default=0.0, init=False)

    def needs(self) -> frozenset:
        return frozenset()

    def select(self, ctx: SelectionContext) -> Optional[torch.Tensor]:
        return None
