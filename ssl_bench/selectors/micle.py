"""MICLe: Multi-Instance Contrastive Learning (Azizi et al., ICCV 2021; arXiv 2101.05224).

Two *different* images of the same patient / lesion / volume form a positive pair.  A dataset
selector: the partner image is drawn by the data pipeline, before augmentation, among the other
images of the anchor's group; an image alone in its group falls back to itself (then the pair is
two augmentations of one image, as in plain SimCLR/BYOL).

Two modes:

* ``mode: replace`` — MICLe as published: view 2 is an augmentation of the partner image instead
  of the anchor (use with SimCLR, or any objective).
* ``mode: add`` — the partner is an *extra* positive (use with BYOL/SimSiam): each batch holds B/2
  anchors and their B/2 partners, and each sample's extra positive is its partner's slot in the
  batch.  An epoch then visits half of the training images as anchors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

from ssl_bench.errors import SSLBenchError
from ssl_bench.selectors.base import SELECTORS, BatchPlan, SelectionContext, Selector

__all__ = ["GroupPartners", "MICLeSelector"]


class GroupPartners:
    """Vectorised "another member of my group" sampling over a fixed group-id array."""

    def __init__(self, groups: torch.Tensor):
        groups = groups.long().cpu()
        order = torch.argsort(groups, stable=True)  # dataset indices sorted by group
        sorted_groups = groups[order]
        _, counts = torch.unique_consecutive(sorted_groups, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        group_of_slot = torch.repeat_interleave(torch.arange(len(counts)), counts)
        pos = torch.empty_like(order)
        pos[order] = torch.arange(len(order))  # slot of each dataset index in ``order``
        self.order, self.pos = order, pos
        self.start = starts[group_of_slot][pos]  # per dataset index: its group's first slot
        self.count = counts[group_of_slot][pos]  # per dataset index: its group's size

    def sample(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For dataset indices ``idx``: a uniformly random *other* member of the group (or itself)."""
        idx = idx.cpu()
        count, start, pos = self.count[idx], self.start[idx], self.pos[idx]
        r = (torch.rand(len(idx), generator=generator) * (count - 1).clamp(min=1)).long()  # 0 … count−2
        offset = (pos - start + 1 + r) % count  # skips the anchor's own slot
        return self.order[start + offset]

    def has_partner(self, idx: torch.Tensor) -> torch.Tensor:
        return self.count[idx.cpu()] > 1


@SELECTORS.register("micle")
@dataclass(eq=False)
class MICLeSelector(Selector):
    """MICLe (arXiv 2101.05224): another image of the same patient/lesion as the positive."""

    mode: Literal["replace", "add"] = "add"
    k: int = field(default=1, init=False)

    kind = "dataset"
    display = "MICLe"
    # the plan is made for the global batch on every rank (same generator), so its extra
    # positives are global batch positions
    selects_globally = True

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in ("replace", "add"):
            raise SSLBenchError(f"recipe key selector.mode must be replace or add, got '{self.mode}'")
        self.partners: Optional[GroupPartners] = None
        self._labels: Optional[torch.Tensor] = None
        self._gen = torch.Generator().manual_seed(0)

    def needs(self) -> frozenset:
        return frozenset({"index_positives"}) if self.mode == "add" else frozenset()

    def setup(self, objective, data) -> None:
        if data.train.groups is None:
            raise SSLBenchError(
                f"selector micle needs group ids (patient / lesion / volume) but dataset {data.name} has none"
            )
        self.partners = GroupPartners(data.train.groups)
        self._labels = data.train.labels

    def seed(self, seed: int) -> None:
        self._gen.manual_seed(seed)

    def plan(self, indices: torch.Tensor) -> BatchPlan:
        if self.partners is None:
            raise RuntimeError("MICLeSelector.setup() was not called")
        if self.mode == "replace":
            return BatchPlan(indices, self.partners.sample(indices, self._gen).to(indices.device))
        half = len(indices) // 2
        anchors = indices[:half]
        partners = self.partners.sample(anchors, self._gen).to(indices.device)
        batch = torch.cat([anchors, partners])
        slots = torch.arange(half, device=indices.device)
        extra = torch.cat([slots + half, slots])[:, None]
        # an image alone in its group is in the batch twice (two augmentations, like plain BYOL),
        # but its copy is no *additional* positive: −1, so precision counts real partners only
        lone = ~self.partners.has_partner(anchors).to(indices.device)
        extra[torch.cat([lone, lone])] = -1
        return BatchPlan(batch, batch, extra)

    def select(self, ctx: SelectionContext) -> Optional[torch.Tensor]:
        return ctx.planned_extra

    def counts(self, extra: Optional[torch.Tensor], ctx: SelectionContext) -> torch.Tensor:
        if self.mode != "replace" or ctx.planned_view2 is None:
            return super().counts(extra, ctx)
        # replace mode: score the partner that became view 2 against the anchor (logging only); only
        # anchors whose group has another image count
        labels = ctx.labels
        partner_labels = self._labels[ctx.planned_view2.cpu()].to(labels.device)  # B labels, not the dataset's
        real = self.partners.has_partner(ctx.indices).to(labels.device)
        same = (partner_labels == labels) if labels.ndim == 1 else (partner_labels == labels).all(-1)
        return torch.stack([(same & real).sum(), real.sum(), real.sum()])

    def state_dict(self) -> dict:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self._gen.set_state(state["generator"])
