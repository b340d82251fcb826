"""Nearest-neighbour positives from a memory bank (NNCLR; Dwibedi et al., ICCV 2021; arXiv 2104.14548).

The cross-batch counterpart of FS: each view's target projection is looked up in a FIFO memory
bank of past target projections, and its ``k`` nearest neighbours (cosine) become extra targets
that the *other* view's prediction is pulled towards.  The bank is a plain tensor with the FIFO
rule of lightly's ``MemoryBankModule`` (cut at the end, wrap to 0); not that module itself, because
its enqueue reads the pointer back from the device every step (a host sync on a GPU), where ours
lives on the host.  The bank
only ever holds detached targets, so the selector adds no backward cost.  Precision is logged
from the labels stored beside the bank (logging only; labels never choose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives.base import StepOutput
from ssl_bench.selectors.base import SELECTORS, Selection, SelectionContext, Selector

__all__ = ["NearestNeighbourSelector", "neighbour_counts"]


@SELECTORS.register("nn")
@dataclass(eq=False)
class NearestNeighbourSelector(Selector):
    """NNCLR-style (arXiv 2104.14548): k nearest past target projections from a memory bank."""

    bank_size: int = 4096

    kind = "feature"
    display = "NN"

    def __post_init__(self):
        super().__post_init__()
        if self.bank_size < self.k:
            raise SSLBenchError(f"recipe key selector.bank_size ({self.bank_size}) must be ≥ selector.k ({self.k})")
        self.bank: Optional[torch.Tensor] = None  # [bank_size, d] past view-1 targets, normalised
        self.bank_labels: Optional[torch.Tensor] = None
        self.filled = 0
        self._ptr = 0

    def needs(self) -> frozenset:
        return frozenset({"prediction", "target", "virtual_positives"})

    def select(self, ctx: SelectionContext) -> Optional[torch.Tensor]:
        return None

    def choose(self, ctx: SelectionContext) -> Selection:
        out, neighbour_labels = self.lookup(ctx.out, ctx.labels)
        return Selection(None, out, neighbour_counts(neighbour_labels, ctx.labels))

    def transform_outputs(self, out: StepOutput, ctx: SelectionContext) -> StepOutput:
        return self.lookup(out, ctx.labels)[0]

    @torch.no_grad()
    def lookup(self, out: StepOutput, labels: torch.Tensor) -> tuple[StepOutput, Optional[torch.Tensor]]:
        """The outputs with each view's neighbours as extra targets (none while the bank holds fewer
        than k), and the labels of the neighbours view 1 is pulled towards [B, k]; then the batch's
        view-1 targets enter the bank."""
        v1, v2 = out.views
        t1, t2 = F.normalize(v1.t.float(), dim=1), F.normalize(v2.t.float(), dim=1)
        if self.bank is not None and self.bank.device != t1.device:  # a resumed run: state loaded on the CPU
            self.bank = self.bank.to(t1.device)
            self.bank_labels = self.bank_labels.to(t1.device)
        if self.bank is None:
            self.bank = torch.zeros(self.bank_size, t1.shape[1], device=t1.device)
            self.bank_labels = torch.full((self.bank_size, *labels.shape[1:]), -1, dtype=labels.dtype, device=t1.device)
        result, chosen_labels = out, None
        if self.filled >= self.k:
            bank = self.bank[: self.filled]
            nn1 = (t1 @ bank.T).topk(self.k, dim=1).indices  # neighbours of view 1's target
            nn2 = (t2 @ bank.T).topk(self.k, dim=1).indices
            # view 1's prediction is pulled towards view 2's target: add view 2's neighbours, and vice versa
            result = StepOutput(out.views, extra_targets=(bank[nn2], bank[nn1]))
            chosen_labels = self.bank_labels[: self.filled][nn2]
        # FIFO update with this batch's view-1 targets (and their labels, for logging), as lightly's
        # bank does: at the end of the bank the batch is cut and the pointer wraps to 0
        ptr, b = self._ptr, t1.shape[0]
        stored = min(b, self.bank_size - ptr)
        self.bank[ptr : ptr + stored] = t1[:stored]
        self.bank_labels[ptr : ptr + stored] = labels[:stored]
        self._ptr = 0 if ptr + b >= self.bank_size else ptr + b
        self.filled = min(max(self.filled, ptr + stored), self.bank_size)
        return result, chosen_labels

    def state_dict(self) -> dict:
        if self.bank is None:
            return {}
        # lightly registers the bank as non-persistent buffers: save the tensors themselves
        return {"bank": self.bank.clone(), "ptr": torch.tensor(self._ptr), "labels": self.bank_labels.clone(),
                "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.bank = state["bank"].clone()
            self.bank_labels, self.filled = state["labels"].clone(), int(state["filled"])
            self._ptr = int(state["ptr"])


def neighbour_counts(neighbour_labels: Optional[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Selector-precision counts [3] of memory-bank neighbours (their labels ``[B, k]``): neighbours
    sharing the anchor's label, neighbours, anchors with neighbours."""
    if neighbour_labels is None:
        return torch.zeros(3, dtype=torch.long, device=labels.device)
    same = (
        (neighbour_labels == labels[:, None]) if labels.ndim == 1
        else (neighbour_labels == labels[:, None, :]).all(-1)
    )
    total = same.sum()
    return torch.stack([total, total.new_full((), same.numel()), total.new_full((), labels.shape[0])])
