"""The selector interface.

A selector returns, for each sample of the batch, the indices of its ``k`` extra positives as a
LongTensor ``[B, k]`` with ``-1`` where it has none; it never returns the sample itself.  Returning
``None`` means "no extra positives this step" (the augmentation-only baseline).

Kinds (docs/write_a_selector.md): *batch* selectors look at the batch through a model (FS, TracIn, FNC, oracle);
*dataset* selectors choose partner images before augmentation (MICLe); *feature* transforms make
virtual positives (FT).  Only the oracle may use labels to choose; every selector's choices are
scored against the labels for logging (:func:`selection_counts`).
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional

import torch

from ssl_bench.distributed import Shard, globalize
from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives.base import CAPABILITIES, Objective, StepOutput
from ssl_bench import catalog

__all__ = [
    "SELECTORS", "SelectionContext", "Selection", "pool", "BatchPlan", "Selector", "same_label_matrix",
    "topk_excluding_self", "selection_counts", "check_compatible",
]

SELECTORS = catalog.SELECTORS


@dataclass
class SelectionContext:
    """What a selector may look at during one training step (built once per step by :class:`TrainStep`)."""

    out: Optional[StepOutput]  # the step's forward (features, projections, predictions, targets)
    labels: torch.Tensor  # for the oracle and for logging only
    indices: Optional[torch.Tensor] = None  # dataset indices of the batch
    objective: Optional[Objective] = None  # the network being trained
    generator: Optional[torch.Generator] = None  # the selector's random stream (on the training device)
    lr: float = 1.0
    step: int = 0
    groups: Optional[torch.Tensor] = None
    light_views: Optional[Callable[[], tuple[torch.Tensor, torch.Tensor]]] = field(default=None, repr=False)
    views: Optional[tuple[torch.Tensor, torch.Tensor]] = field(default=None, repr=False)  # the step's inputs
    planned_extra: Optional[torch.Tensor] = None  # extra positives fixed by a dataset selector's plan
    planned_view2: Optional[torch.Tensor] = None  # dataset indices of view 2 when a plan pairs other images
    # data-parallel training: this rank's slice of the global batch.  Batch selectors then return
    # indices into the *global* batch (see :func:`pool` and ssl_bench/distributed.py), whose labels
    # are ``pool_labels``
    shard: Optional[Shard] = None
    pool_labels: Optional[torch.Tensor] = None
    # the run's precision context (bf16 autocast under train.precision bf16-mixed): a selector's own
    # network forwards run in it; its selection maths (Gram matrices, similarities) run in fp32
    autocast: Callable = field(default=contextlib.nullcontext, repr=False)

    @property
    def offset(self) -> int:
        """Position of this rank's first sample in the global batch (0 in one process)."""
        return 0 if self.shard is None else self.shard.offset


@dataclass
class Selection:
    """What a selector decided for one step: ``extra`` ``[B, k]`` positives (indices into the batch —
    the global batch in data-parallel training —, −1 = none) or None, the outputs the loss uses
    (feature selectors may have changed targets or added virtual ones), and the selector-precision
    counts of the step (logging only; see :func:`selection_counts`)."""

    extra: Optional[torch.Tensor]
    out: StepOutput
    counts: torch.Tensor


def pool(ctx: SelectionContext, t: torch.Tensor) -> torch.Tensor:
    """``t`` for the whole global batch (all ranks' rows, detached); ``t`` itself in one process.

    Batch selectors score their local rows against the pool's columns, so the candidates are the
    samples of every rank while gradients stay with the local samples."""
    return t if ctx.shard is None else ctx.shard.gather(t)


@dataclass
class BatchPlan:
    """Which dataset images a step uses: view 1 from ``view1``, view 2 from ``view2`` (the same
    indices unless a dataset selector pairs different images), and extra positives fixed in
    advance (``[B, k]`` batch positions, or None)."""

    view1: torch.Tensor
    view2: torch.Tensor
    extra: Optional[torch.Tensor] = None


@dataclass(eq=False)
class Selector:
    """Base class: ``k`` extra positives per sample, each weighted ``weight`` in the loss.

    The training step calls :meth:`plan` (dataset selectors: which images form the batch) and then,
    once per step, :meth:`choose`, which runs :meth:`select` (index positives), :meth:`transform_outputs`
    (feature positives) and :meth:`counts` (logging) on the step's :class:`SelectionContext`.
    Subclasses implement :meth:`select` and, where they need to, the other two; they are dataclasses
    whose fields are their recipe options (declared once, inherited by subclasses), and they name what
    they need from the objective in :meth:`needs` (checked when the recipe is loaded).
    """

    k: int = 1  # extra positives per anchor
    weight: float = 1.0  # weight of each extra positive's loss term (the views' own pair has weight 1)

    kind: ClassVar[str] = "batch"
    display: ClassVar[str] = ""
    # data-parallel training: True if ``select`` returns indices into the *global* batch (it reads
    # ``ctx.shard``).  A selector that leaves this False picks among its rank's own samples and
    # :meth:`choose` shifts its local indices into global positions.
    selects_globally: ClassVar[bool] = False

    def __post_init__(self):
        if self.k < 1:
            raise SSLBenchError(f"recipe key selector.k must be ≥ 1, got {self.k}")
        if self.weight < 0:
            raise SSLBenchError(f"recipe key selector.weight must be ≥ 0, got {self.weight}")

    def variant(self) -> str:
        """Appended to the display name in method names (``-pretrained`` for a frozen network's selector)."""
        return ""

    def needs(self) -> frozenset:
        """What this selector needs from the objective (names from
        :data:`ssl_bench.objectives.base.CAPABILITIES`)."""
        return frozenset({"index_positives"})

    def missing(self, provides: frozenset) -> Optional[str]:
        """What of :meth:`needs` an objective providing ``provides`` lacks (a phrase), or None."""
        lacking = sorted(self.needs() - set(provides))
        return ", ".join(CAPABILITIES.get(c, c) for c in lacking) if lacking else None

    def setup(self, objective: Objective, data) -> None:
        """Called once before training (load frozen networks, check compatibility)."""

    def seed(self, seed: int) -> None:
        """Seed any randomness the selector draws outside the step's generators."""

    def plan(self, indices: torch.Tensor) -> BatchPlan:
        """*Dataset* selectors choose the batch's images before augmentation (MICLe)."""
        return BatchPlan(indices, indices)

    def transform_outputs(self, out: StepOutput, ctx: SelectionContext) -> StepOutput:
        """*Feature* selectors make virtual positives from the pair (FT): the one hook on targets."""
        return out

    def select(self, ctx: SelectionContext) -> Optional[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def choose(self, ctx: SelectionContext) -> Selection:
        """This step's selection: positives, the outputs the loss uses, and the precision counts."""
        extra = self.select(ctx)
        if ctx.shard is not None and extra is not None and not self.selects_globally:
            extra = globalize(extra, ctx.shard)  # chosen among this rank's own samples: global positions
        out = self.transform_outputs(ctx.out, ctx)
        return Selection(extra, out, self.counts(extra, ctx))

    def counts(self, extra: Optional[torch.Tensor], ctx: SelectionContext) -> torch.Tensor:
        """Selector-precision counts of this step (see :func:`selection_counts`); logging only."""
        return selection_counts(extra, ctx.labels, None if ctx.shard is None else ctx.pool_labels)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def same_label_matrix(labels: torch.Tensor) -> torch.Tensor:
    """[B, B] bool: samples i and j have the same label (identical label vector if multi-label)."""
    if labels.ndim == 2:
        return (labels[:, None, :] == labels[None, :, :]).all(-1)
    return labels[:, None] == labels[None, :]


def topk_excluding_self(scores: torch.Tensor, k: int, allowed: Optional[torch.Tensor] = None,
                        offset: int = 0) -> torch.Tensor:
    """Row-wise top-k of ``scores`` [B, N] with the sample itself (column ``offset + row``; the
    diagonal of a square batch) and ``~allowed`` masked; −1 where fewer than k candidates exist.

    ``[B_local, B_global]`` scores of a data-parallel rank use ``offset`` = its first global row."""
    b, n = scores.shape
    rows = torch.arange(b, device=scores.device)[:, None] + offset
    mask = rows == torch.arange(n, device=scores.device)[None, :]
    if allowed is not None:
        mask = mask | ~allowed
    masked = scores.masked_fill(mask, float("-inf"))
    vals, idx = masked.topk(min(k, n - 1), dim=1)
    out = torch.where(torch.isfinite(vals), idx, torch.full_like(idx, -1))
    if out.shape[1] < k:  # a batch smaller than k + 1: always [B, k]
        out = torch.cat([out, out.new_full((b, k - out.shape[1]), -1)], 1)
    return out


def selection_counts(extra: Optional[torch.Tensor], labels: torch.Tensor,
                     pool_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LongTensor [3] on the labels' device (no host sync): chosen positives sharing the anchor's
    label, chosen positives, anchors with ≥ 1 positive.  ``pool_labels``: the labels ``extra``
    indexes (the global batch's, in data-parallel training); default ``labels``."""
    if extra is None:
        return torch.zeros(3, dtype=torch.long, device=labels.device)
    valid = extra >= 0
    partner = (labels if pool_labels is None else pool_labels)[extra.clamp(min=0)]  # [B, k] or [B, k, L]
    if labels.ndim == 2:
        same = (partner == labels[:, None, :]).all(-1)
    else:
        same = partner == labels[:, None]
    return torch.stack([(same & valid).sum(), valid.sum(), valid.any(1).sum()])


def check_compatible(selector: Selector, objective, selector_name: str, objective_name: str) -> None:
    """Refuse, in one line naming both, a selector that needs what the objective (class or instance)
    does not provide."""
    provides = getattr(objective, "provides", frozenset())
    lacking = selector.missing(provides)
    if lacking:
        have = ", ".join(sorted(provides)) or "nothing declared"
        raise SSLBenchError(
            f"selector '{selector_name}' needs the objective's {lacking}; objective '{objective_name}' does not "
            f"provide it (it provides: {have})"
        )
