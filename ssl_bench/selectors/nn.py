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

from typing import Optional

import torch
import torch.nn.functional as F

from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives.base import StepOutput
from ssl_bench.selectors.base import SELECTORS, SelectionContext, Selector, selection_counts


@SELECTORS.register("nn")
class NearestNeighbourSelector(Selector):
    """NNCLR-style (arXiv 2104.14548): k nearest past target projections from a memory bank."""

    kind = "feature"
    display = "NN"

    def __init__(self, k: int = 1, weight: float = 1.0, bank_size: int = 4096):
        super().__init__(k=k, weight=weight)
        if bank_size < k:
            raise SSLBenchError(f"recipe key selector.bank_size ({bank_size}) must be ≥ selector.k ({k})")
        self.bank_size = bank_size
        self.bank: Optional[torch.Tensor] = None  # [bank_size, d] past view-1 targets, normalised
        self.bank_labels: Optional[torch.Tensor] = None
        self.filled = 0
        self._ptr = 0
        self._last_labels: Optional[torch.Tensor] = None  # labels of the chosen neighbours [B, k]

    def setup(self, objective, data) -> None:
        if not hasattr(objective, "predictor"):
            raise SSLBenchError(f"selector nn needs an objective with a predictor (byol, simsiam), not {type(objective).__name__}")

    def select(self, ctx: SelectionContext) -> Optional[torch.Tensor]:
        return None

    @torch.no_grad()
    def transform_outputs(self, out: StepOutput, ctx: SelectionContext) -> StepOutput:
        v1, v2 = out.views
        t1, t2 = F.normalize(v1.t.float(), dim=1), F.normalize(v2.t.float(), dim=1)
        if self.bank is not None and self.bank.device != t1.device:  # a resumed run: state loaded on the CPU
            self.bank = self.bank.to(t1.device)
            self.bank_labels = self.bank_labels.to(t1.device)
        if self.bank is None:
            self.bank = torch.zeros(self.bank_size, t1.shape[1], device=t1.device)
            self.bank_labels = torch.full((self.bank_size, *ctx.labels.shape[1:]), -1, dtype=ctx.labels.dtype, device=t1.device)
        result = out
        self._last_labels = None
        if self.filled >= self.k:
            bank = self.bank[: self.filled]
            labels = self.bank_labels[: self.filled]
            nn1 = (t1 @ bank.T).topk(self.k, dim=1).indices  # neighbours of view 1's target
            nn2 = (t2 @ bank.T).topk(self.k, dim=1).indices
            # view 1's prediction is pulled towards view 2's target: add view 2's neighbours, and vice versa
            result = StepOutput(out.views, extra_targets=(bank[nn2], bank[nn1]))
            self._last_labels = labels[nn2]
        # FIFO update with this batch's view-1 targets (and their labels, for logging), as lightly's
        # bank does: at the end of the bank the batch is cut and the pointer wraps to 0
        ptr, b = self._ptr, t1.shape[0]
        stored = min(b, self.bank_size - ptr)
        self.bank[ptr : ptr + stored] = t1[:stored]
        self.bank_labels[ptr : ptr + stored] = ctx.labels[:stored]
        self._ptr = 0 if ptr + b >= self.bank_size else ptr + b
        self.filled = min(max(self.filled, ptr + stored), self.bank_size)
        return result

    def counts(self, extra: Optional[torch.Tensor], labels: torch.Tensor, pool_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self._last_labels is None:
            return selection_counts(None, labels)
        same = (self._last_labels == labels[:, None]) if labels.ndim == 1 else (self._last_labels == labels[:, None, :]).all(-1)
        total = same.sum()
        return torch.stack([total, total.new_full((), same.numel()), total.new_full((), labels.shape[0])])

    def state_dict(self) -> dict:
        if self.bank is None:
            return {}
        # lightly registers the bank as non-persistent buffers: save the tensors themselves
        return {"bank": self.bank.clone(), "ptr": torch.tensor(self._ptr), "labels": self.bank_labels.clone(), "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.bank = state["bank"].clone()
            self.bank_labels, self.filled = state["labels"].clone(), int(state["filled"])
            self._ptr = int(state["ptr"])
