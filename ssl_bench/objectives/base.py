"""The objective interface shared by BYOL, SimSiam, SimCLR (and plug-ins).

An objective owns the backbone and its heads.  ``forward(x1, x2)`` runs both views and returns a
:class:`StepOutput` holding everything the loss *and* the selectors need (backbone features,
projections, predictions, the input of the predictor's last linear layer for TracIn, and the
detached target of each view), so a batch selector never needs a second forward pass.

``loss(out, extra, weight)`` is the usual two-view loss plus, for each sample ``i`` with extra
positives ``extra[i] = [j1, …, jk]`` (``-1`` = none), ``weight ×`` the mean over its valid ``j`` of
the same term computed against sample ``j``'s target (docs/concepts.md, "The flow of a step").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import catalog

if TYPE_CHECKING:
    from ssl_bench.distributed import Shard

__all__ = [
    "OBJECTIVES", "CAPABILITIES", "ViewOutput", "StepOutput", "Objective", "Stage", "make_stages", "stage_at",
    "Embedder", "PredictorObjective", "cosine_terms",
]

OBJECTIVES = catalog.OBJECTIVES

# What an objective's step outputs hold and what its loss accepts (``Objective.provides``); selectors
# name what they need from this vocabulary (``Selector.needs``) and a recipe that pairs a selector with
# an objective lacking it is refused when it is loaded (``ssl-bench show`` already says so).
CAPABILITIES = {
    "features": "backbone features h",
    "projection": "projection z",
    "prediction": "prediction p (a predictor head)",
    "predictor_input": "input a of the predictor's last linear layer",
    "target": "per-view target t that the other view's prediction is pulled towards",
    "index_positives": "extra positives given as batch indices in the loss",
    "virtual_positives": "extra positives given as target vectors (memory bank, …) in the loss",
    "contrastive": "a contrastive loss over the batch's projections",
}


@dataclass
class ViewOutput:
    """Per-view outputs.  ``t`` is what the *other* view's prediction is pulled towards (detached)."""

    h: torch.Tensor  # backbone features [B, F]
    z: torch.Tensor  # online projection [B, D]
    t: Optional[torch.Tensor]  # target of this view, no grad [B, D] (None if not computed)
    p: Optional[torch.Tensor] = None  # online prediction [B, D] (BYOL/SimSiam)
    a: Optional[torch.Tensor] = None  # input of the predictor's last linear layer [B, M] (TracIn)


@dataclass
class StepOutput:
    views: tuple[ViewOutput, ViewOutput]
    # virtual extra positives that are not batch samples (e.g. nearest neighbours from a memory
    # bank): per view u, [B, k, D] targets that view u's prediction is also pulled towards
    extra_targets: Optional[tuple[torch.Tensor, torch.Tensor]] = None
    # data-parallel training (set by the loop for objectives with ``global_positives``): this
    # rank's slice of the global batch; ``extra`` indices then point into the global batch
    shard: Optional["Shard"] = None

    @property
    def batch_size(self) -> int:
        return self.views[0].h.shape[0]

    def float(self) -> "StepOutput":
        """The same outputs in fp32 (a bf16-autocast forward's are bf16): positive selection and the
        losses are computed in fp32.  Differentiable; a no-op for fp32 outputs."""
        def f(t):
            return t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.bfloat16, torch.float16) else t

        views = tuple(ViewOutput(f(v.h), f(v.z), f(v.t), f(v.p), f(v.a)) for v in self.views)
        extra = tuple(f(t) for t in self.extra_targets) if self.extra_targets is not None else None
        return StepOutput(views, extra, self.shard)


class Objective(nn.Module):
    """Base class.  Subclasses set ``self.backbone`` and implement ``online``, ``target``, ``loss``,
    and declare ``provides`` (from :data:`CAPABILITIES`) and ``display`` (the name in tables)."""

    backbone: nn.Module
    provides: frozenset = frozenset({"features", "projection"})
    display: str = ""
    # True if ``loss`` reads ``out.shard`` and pulls towards extra positives held by other ranks
    # (data-parallel global-batch selection); otherwise each rank selects among its own samples
    global_positives = False

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        """Both views through the online branch, then each view's target (what the other view is
        pulled to).  Online, online, target, target: on 2 CPU cores this order is ≈ 5 % faster than
        online, target, online, target (BYOL, ResNet-18, 28 px, batch 256: 247 vs 234 img/s), and it
        computes the same numbers."""
        v1, v2 = self.online(x1), self.online(x2)
        for v, x in ((v1, x1), (v2, x2)):
            if v.t is None:
                v.t = self.target(x)
        return StepOutput((v1, v2))

    def online(self, x: torch.Tensor) -> ViewOutput:  # pragma: no cover - abstract
        """The online branch on one view (selectors call it on their own views)."""
        raise NotImplementedError

    def target(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """What the other view's prediction is pulled towards, for one view (no gradient)."""
        raise NotImplementedError

    def loss(self, out: StepOutput, extra: Optional[torch.Tensor] = None, weight: float = 1.0) -> torch.Tensor:
        raise NotImplementedError

    def momentum_update(self, step: int, total_steps: int) -> Optional[float]:
        """Called after each optimiser step; EMA objectives update their target and return m."""
        return None

    # -- multi-stage schedules (t-SimCNE) ---------------------------------------------------------
    def stages(self) -> Optional[list["Stage"]]:
        """The objective's training stages, or None for one stage driven by the ``train`` block."""
        return None

    def begin_epoch(self, epoch: int) -> Optional["Stage"]:
        """Called by the loop before each (1-based) epoch; a staged objective derives its stage from
        ``epoch`` alone (so resuming at any epoch restores it) and returns it."""
        return None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output for a normalised batch (the 2-D map of t-SimCNE; z of the others)."""
        return self.online(x).z


@dataclass(frozen=True)
class Stage:
    """One stage of a staged schedule: epochs ``first_epoch … first_epoch + epochs − 1`` (1-based),
    learning rate ``lr_scale × train.lr`` with its own warm-up and cosine decay."""

    index: int  # 0-based
    first_epoch: int
    epochs: int
    lr_scale: float = 1.0
    warmup_epochs: float = 0.0

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + self.epochs - 1


def make_stages(epochs: Sequence[int], lr_scale: Sequence[float], warmup: Sequence[float]) -> list[Stage]:
    """Consecutive stages from per-stage epochs (0 = skipped stage), lr multipliers and warm-ups."""
    out, first = [], 1
    for i, (e, s, w) in enumerate(zip(epochs, lr_scale, warmup)):
        out.append(Stage(i, first, int(e), float(s), float(w)))
        first += int(e)
    return out


def stage_at(stages: Sequence[Stage], epoch: int) -> Stage:
    """The stage that epoch ``epoch`` belongs to (epoch 0, before training, is in the first)."""
    for st in stages:
        if st.epochs > 0 and st.first_epoch <= epoch <= st.last_epoch:
            return st
    nonempty = [st for st in stages if st.epochs > 0]
    if epoch <= 0 or not nonempty:
        return stages[0]
    return nonempty[-1]  # past the end (evaluation after the last epoch): the last stage run


class Embedder(nn.Module):
    """``objective.embed`` as a module (for :func:`~ssl_bench.evaluate.extract_features`)."""

    def __init__(self, objective: Objective):
        super().__init__()
        self.objective = objective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.objective.embed(x)



class PredictorObjective(Objective):
    """BYOL/SimSiam: a prediction pulled towards the other view's target by a cosine term
    ``offset − scale·cos``, symmetrised; extra positives (indices or virtual targets) alike."""

    scale: float
    offset: float
    global_positives = True
    provides = frozenset(
        {"features", "projection", "prediction", "predictor_input", "target", "index_positives", "virtual_positives"}
    )

    def loss(self, out: StepOutput, extra: Optional[torch.Tensor] = None, weight: float = 1.0) -> torch.Tensor:
        v1, v2 = out.views
        et = out.extra_targets or (None, None)
        # data-parallel: extra positives index the global batch; their targets are gathered from
        # all ranks (detached, so gradients flow through this rank's predictions only)
        pool1 = pool2 = None
        if out.shard is not None and extra is not None:  # one all_gather for both views' targets
            pool1, pool2 = out.shard.gather(torch.cat([v2.t, v1.t], 1)).split(v2.t.shape[1], 1)
        own1, ex1 = cosine_terms(v1.p, v2.t, extra, self.scale, self.offset, extra_t=et[0], pool_t=pool1)
        own2, ex2 = cosine_terms(v2.p, v1.t, extra, self.scale, self.offset, extra_t=et[1], pool_t=pool2)
        return 0.5 * ((own1 + own2).mean() + weight * (ex1 + ex2).mean())


def cosine_terms(
    p: torch.Tensor,
    t: torch.Tensor,
    extra: Optional[torch.Tensor],
    scale: float,
    offset: float,
    extra_t: Optional[torch.Tensor] = None,
    pool_t: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``offset - scale·cos(p_i, t_i)`` and the mean of the same term over ``t[extra[i]]``.

    Returns ``own [B]`` and ``extra_mean [B]`` (0 for samples without a valid extra positive).
    The extra targets are gathered from the batch (no new forward pass): one ``[B, k, D]`` gather
    (from ``pool_t`` [N, D], the global batch's targets, when ``extra`` indexes that); or given
    directly as ``extra_t`` ``[B, k, D]`` (virtual positives, all valid).
    """
    pn = F.normalize(p, dim=-1)
    tn = F.normalize(t, dim=-1)
    own = offset - scale * (pn * tn).sum(-1)
    if extra_t is not None:
        terms = offset - scale * torch.einsum("bd,bkd->bk", pn, F.normalize(extra_t, dim=-1))
        return own, terms.mean(1)
    if extra is None:
        return own, torch.zeros_like(own)
    valid = extra >= 0
    pool = tn if pool_t is None else F.normalize(pool_t, dim=-1)
    te = pool[extra.clamp(min=0)]  # [B, k, D]
    terms = offset - scale * torch.einsum("bd,bkd->bk", pn, te)
    n = valid.sum(1)
    extra_mean = (terms * valid).sum(1) / n.clamp(min=1)
    return own, extra_mean
