"""BYOL-TracIn: the in-batch sample with the largest TracIn influence as an extra positive.

Zeng et al., "Additional Positive Enables Better Representation Learning for Medical Images",
MICCAI 2023 (arXiv 2306.00112), §3.2.  TracIn (Pruthi et al., NeurIPS 2020; arXiv 2002.08484)
scores a pair (i, k) by the inner product of their loss gradients.  Restricted to the last linear
layer of the online predictor, ``q = W a + b``, the per-sample gradient is an outer product
``∂ℓ_i/∂W = g_i a_iᵀ`` with ``g_i = ∂ℓ_i/∂q_i``, so

    TracIn(i, k) = lr · ⟨g_i a_iᵀ, g_k a_kᵀ⟩_F = lr · (g_i · g_k) · (a_i · a_k)       (paper Eq. 3–4)

and the whole batch's matrix is ``lr · (G Gᵀ) ⊙ (A Aᵀ)``: two GEMMs, no autograd, no per-sample
backward.  For the BYOL loss ℓ_i = 2 − 2·cos(q_i, z_i) the gradient is closed form too:

    g_i = −(2 / ‖q_i‖) · (ẑ_i − cos(q_i, z_i) · q̂_i).

``lr`` is the current learning rate (TracIn's step size); it scales every entry alike, so it never
changes the arg-max, but it is part of the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError
from ssl_bench.selectors.base import SELECTORS, SelectionContext, pool, topk_excluding_self
from ssl_bench.selectors.models import ModelSelector

__all__ = ["byol_loss_grad", "tracin_matrix", "tracin_matrix_views", "tracin_cross", "TracInSelector"]

_EPS = 1e-12


def byol_loss_grad(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``∂ℓ_i/∂q_i`` for ℓ_i = 2 − 2·cos(q_i, z_i), row by row (closed form)."""
    q_norm = q.norm(dim=1, keepdim=True).clamp_min(_EPS)
    q_hat = q / q_norm
    z_hat = z / z.norm(dim=1, keepdim=True).clamp_min(_EPS)
    cos = (q_hat * z_hat).sum(1, keepdim=True)
    return -2.0 / q_norm * (z_hat - cos * q_hat)


def tracin_matrix(q: torch.Tensor, z: torch.Tensor, a: torch.Tensor, lr: float = 1.0,
                  normalize: bool = False) -> torch.Tensor:
    """Pairwise TracIn of a batch w.r.t. the predictor's last linear weight (contract).

    Args:
        q: ``[B, d]`` online predictor outputs.
        z: ``[B, d]`` the target projections they are compared to.
        a: ``[B, m]`` inputs of the predictor's last linear layer (``q = W a + b``).
        lr: the learning rate (TracIn's step size).
        normalize: the cosine of the two per-sample gradients instead of their inner product,
            TracIn(i, k) / (‖∇ℓ_i‖·‖∇ℓ_k‖) with ‖∇ℓ_i‖ = ‖g_i‖·‖a_i‖ (still closed form; ``lr`` cancels).

    Returns:
        ``[B, B]`` with entry (i, k) = ``lr · ⟨∂ℓ_i/∂W, ∂ℓ_k/∂W⟩`` for ℓ_i = 2 − 2·cos(q_i, z_i)
        (or its cosine form).
    """
    return tracin_matrix_views([q], [z], [a], lr=lr, normalize=normalize)


def cosine_normalize(scores: torch.Tensor, row_sq: torch.Tensor, col_sq: torch.Tensor) -> torch.Tensor:
    """``scores[i, k] / (‖∇ℓ_i‖·‖∇ℓ_k‖)`` from the squared gradient norms of rows and columns (the
    self-influences ⟨∇ℓ_i, ∇ℓ_i⟩; a zero gradient scores 0)."""
    return scores / (row_sq.clamp_min(0).sqrt()[:, None] * col_sq.clamp_min(0).sqrt()[None, :]).clamp_min(_EPS)


def self_influence(gs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B]`` ⟨∇ℓ_i, ∇ℓ_i⟩ = ‖Σ_u g_i^(u) a_i^(u)ᵀ‖²_F = Σ_u Σ_v (g_i^(u)·g_i^(v)) (a_i^(u)·a_i^(v))."""
    out = None
    for u in range(len(gs)):
        for v in range(len(gs)):
            term = (gs[u] * gs[v]).sum(1) * (as_[u] * as_[v]).sum(1)
            out = term if out is None else out + term
    return out


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 → fp32 (a bf16-autocast forward's outputs); fp32 and fp64 as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def tracin_matrix_views(
    qs: Sequence[torch.Tensor], zs: Sequence[torch.Tensor], as_: Sequence[torch.Tensor], lr: float = 1.0,
    normalize: bool = False
) -> torch.Tensor:
    """TracIn for a loss summed over several view pairs (BYOL's symmetric loss).

    With ℓ_i = Σ_u ℓ_i^(u) the gradient is Σ_u g_i^(u) a_i^(u)ᵀ and the inner product expands to
    Σ_u Σ_v (g_i^(u)·g_k^(v)) (a_i^(u)·a_k^(v)): the exact TracIn of the symmetrised loss, including
    the cross-view terms (2 views → 8 small B×B GEMMs).  One pair reduces to :func:`tracin_matrix`.
    ``normalize``: divided by the gradient norms, whose squares are the matrix's diagonal.
    """
    qs, zs, as_ = ([_at_least_fp32(t) for t in ts] for ts in (qs, zs, as_))  # bf16 activations: fp32 maths
    gs = [byol_loss_grad(q, z) for q, z in zip(qs, zs)]
    out = None
    for u in range(len(gs)):
        for v in range(u, len(gs)):
            # the (v, u) term is the transpose of the (u, v) term: 3 GEMM pairs for 2 views, not 4
            term = (gs[u] @ gs[v].T) * (as_[u] @ as_[v].T)
            term = term if u == v else term + term.T
            out = term if out is None else out + term
    if normalize:
        sq = out.diagonal()
        return cosine_normalize(out, sq, sq)
    return lr * out


def tracin_cross(
    gs: Sequence[torch.Tensor],
    as_: Sequence[torch.Tensor],
    gs_all: Sequence[torch.Tensor],
    as_all: Sequence[torch.Tensor],
    lr: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """``[B, N]`` TracIn of B anchors (loss gradients ``gs``, predictor inputs ``as_`` per view)
    against N candidates (``gs_all``, ``as_all``): Σ_u Σ_v lr · (g_i^(u)·g_k^(v)) (a_i^(u)·a_k^(v)),
    the rectangular form of :func:`tracin_matrix_views` used by data-parallel ranks (anchors = the
    rank's rows, candidates = the gathered global batch; all four view pairs, no transpose trick)."""
    out = None
    for u in range(len(gs)):
        for v in range(len(gs_all)):
            term = (gs[u] @ gs_all[v].T) * (as_[u] @ as_all[v].T)
            out = term if out is None else out + term
    if normalize:
        return cosine_normalize(out, self_influence(gs, as_), self_influence(gs_all, as_all))
    return lr * out


@SELECTORS.register("tracin")
@dataclass(eq=False)
class TracInSelector(ModelSelector):
    """BYOL-TracIn (arXiv 2306.00112): top-k in-batch TracIn influence, closed form, last linear layer.

    ``model: online`` uses the network being trained (on-the-fly); ``model: pretrained`` a frozen
    network from ``checkpoint`` (a run directory or ``.pt`` file, e.g. a vanilla BYOL run of the same
    recipe), never trained.  ``views: light`` scores the paper's light views (identity / hflip +
    centre crop, one extra no-grad forward); ``views: train`` reuses the training step's forward
    (on-the-fly only, no extra forward).  How the two symmetric views combine: ``symmetric: true``
    scores BYOL's symmetrised loss ℓ(q₁, z′₂) + ℓ(q₂, z′₁) exactly (gradients of both orders are
    added before the inner product, cross terms included, :func:`tracin_matrix_views`);
    ``false`` scores the single pair q(view 1) vs z′(view 2), the paper's light-view setting
    (identity vs flipped centre crop).  Default: symmetric only when reusing the step's forward.
    Symmetric selection on separate views costs 4 backbone passes instead of 2.  In data-parallel
    training each rank all-gathers ``g`` and ``a`` (one call) and scores its anchors against the
    samples of all ranks (:func:`tracin_cross`): the same choice as one process on the global batch.

    Beyond the paper: ``normalize: true`` scores the cosine of the two per-sample gradients,
    TracIn(i, k) / (‖∇ℓ_i‖·‖∇ℓ_k‖) (method suffix ``-cos``); ``checkpoints: [e₁, …]`` (with
    ``model: pretrained``) is TracInCP, Σ_c lr_c · TracIn_c over the epoch checkpoints the
    pretrained run kept (``train.save_epochs``; ``ssl-bench run`` has a producer recipe keep them),
    each weighted by the learning rate it was saved at — one frozen forward per checkpoint.
    """

    # score BYOL's symmetrised loss of both view orders (null: only when reusing the step's forward)
    symmetric: Optional[bool] = None
    # the cosine of the two per-sample gradients instead of their inner product (method suffix -cos)
    normalize: bool = False
    # TracInCP: epochs of the pretrained run (its ``train.save_epochs`` files) whose scores are summed,
    # each weighted by the learning rate it was saved at (Pruthi et al.'s sum over checkpoints)
    checkpoints: Optional[list[int]] = None

    display = "TracIn"
    selects_globally = True
    MODE_OPTIONS: ClassVar[dict] = {"model": {"pretrained": ("checkpoint", "checkpoints")}}

    def __post_init__(self):
        super().__post_init__()
        # default: symmetric when the step's forward is reused (free); otherwise one direction,
        # q(view 1) vs z'(view 2), so the extra cost is one frozen forward per view (2 passes)
        if self.symmetric is None:
            self.symmetric = self.reuses_step()
        if self.checkpoints is not None:
            if self.model != "pretrained":
                raise SSLBenchError("recipe key selector.checkpoints (TracInCP) needs selector.model: pretrained")
            bad = [e for e in self.checkpoints if not isinstance(e, int) or isinstance(e, bool) or e < 1]
            if not self.checkpoints or bad:
                raise SSLBenchError("recipe key selector.checkpoints must list epochs ≥ 1 of the pretrained run, got "
                                    f"{self.checkpoints}")
            self.display = "TracInCP"
        self.frozen_cp: list[tuple[nn.Module, float]] = []

    def variant(self) -> str:
        return ("-cos" if self.normalize else "") + super().variant()

    def needs(self) -> frozenset:
        return frozenset({"index_positives", "prediction", "predictor_input", "target"})

    def setup(self, objective: nn.Module, data) -> None:
        if not self.checkpoints:
            return super().setup(objective, data)
        from ssl_bench.checkpoint import epoch_path
        from ssl_bench.selectors.models import load_frozen
        from ssl_bench.run_loader import checkpoint_path

        run_dir = checkpoint_path(self.checkpoint, key="selector.checkpoint").parent.parent
        self.frozen_cp = []
        for e in self.checkpoints:
            path = epoch_path(run_dir, e)
            if not path.is_file():
                raise SSLBenchError(
                    f"recipe key selector.checkpoints: the run {run_dir} kept no checkpoint of epoch {e} "
                    f"({path.name}); train it with train.save_epochs={sorted(self.checkpoints)}"
                )
            trained = load_frozen(path, data, "selector.checkpoints")
            if trained.lr is None:
                raise SSLBenchError(f"recipe key selector.checkpoints: {path} records no learning rate")
            self.use_frozen(trained.objective)
            self.frozen_cp.append((trained.objective, trained.lr))

    def _outputs(self, ctx: SelectionContext, net: Optional[nn.Module] = None):
        """(q, z, a) per view pair: the training step's, or a no-grad forward of ``net`` on the views."""
        if self.reuses_step():
            v1, v2 = ctx.out.views
            if self.symmetric:
                return [v1.p, v2.p], [v2.t, v1.t], [v1.a, v2.a]
            return [v1.p], [v2.t], [v1.a]  # the single pair q(view 1) vs z'(view 2)
        x1, x2 = self.inputs(ctx)
        with self.no_grad_forward(ctx, net) as net:
            o1 = net.online(x1)
            if self.symmetric:
                o2 = net.online(x2)
                return [o1.p, o2.p], [net.target(x2), net.target(x1)], [o1.a, o2.a]
            return [o1.p], [net.target(x2)], [o1.a]

    def _scores(self, ctx: SelectionContext, q, z, a, lr: float) -> torch.Tensor:
        if ctx.shard is None:
            return tracin_matrix_views(q, z, a, lr=lr, normalize=self.normalize)
        # data-parallel: all-gather g and a of every rank in one call, score local rows
        gs = [byol_loss_grad(q_, z_) for q_, z_ in zip(q, z)]
        packs = [gs + a] if len({t.dtype for t in gs + a}) == 1 else [gs, a]  # mixed precision: 2 calls
        gathered = [t for p in packs for t in pool(ctx, torch.cat(p, 1)).split([t.shape[1] for t in p], 1)]
        return tracin_cross(gs, a, gathered[: len(gs)], gathered[len(gs) :], lr=lr, normalize=self.normalize)

    @torch.no_grad()
    def scores(self, ctx: SelectionContext) -> torch.Tensor:
        """The ``[B, B]`` (data-parallel: ``[B_local, B_global]``) influence matrix the choice is made on."""
        if not self.frozen_cp:
            return self._scores(ctx, *self._outputs(ctx), lr=ctx.lr)
        total = None  # TracInCP: Σ_c lr_c · TracIn_c (with normalize: Σ_c lr_c · cos_c)
        for net, lr_c in self.frozen_cp:
            term = self._scores(ctx, *self._outputs(ctx, net), lr=lr_c)
            term = term * lr_c if self.normalize else term
            total = term if total is None else total + term
        return total

    def select(self, ctx: SelectionContext) -> torch.Tensor:
        return topk_excluding_self(self.scores(ctx).float(), self.k, offset=ctx.offset)
