"""Feature transformation: positive extrapolation (Zhu et al., ICCV 2021; arXiv 2108.02982).

A *feature* selector: it chooses no index but makes a harder virtual positive from the pair
itself.  With λ ~ Beta(α, α) + 1 (so λ ∈ [1, 2]) the two views' features are pushed apart,

    ẑ₁ = λ·z₁ + (1 − λ)·z₂,   ẑ₂ = λ·z₂ + (1 − λ)·z₁,

one λ per sample.  For BYOL/SimSiam the targets z′ are extrapolated (the objective's one hook,
``transform_outputs``); for SimCLR the projections themselves.  FT's negative interpolation for
SimCLR is not implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives.base import StepOutput
from ssl_bench.selectors.base import SELECTORS, SelectionContext, Selector

__all__ = ["FTSelector"]


def extrapolate(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lam = lam.view(-1, *([1] * (a.ndim - 1))).to(a.dtype)
    return lam * a + (1 - lam) * b, lam * b + (1 - lam) * a


@SELECTORS.register("ft")
@dataclass(eq=False)
class FTSelector(Selector):
    """FT (arXiv 2108.02982): positive extrapolation λ ~ Beta(α, α) + 1 of the pair's features."""

    alpha: float = 2.0
    k: int = field(default=1, init=False)
    weight: float = field(default=0.0, init=False)

    kind = "feature"
    display = "FT"

    def __post_init__(self):
        super().__post_init__()
        if self.alpha <= 0:
            raise SSLBenchError(f"recipe key selector.alpha must be > 0, got {self.alpha}")
        # λ is drawn on the host: scipy's inverse CDF needs it there, and a device generator would
        # cost a host sync every step on a GPU
        self._gen = torch.Generator().manual_seed(0)
        self._targets = True  # extrapolate the targets (predictor objectives) or the projections (contrastive)

    def needs(self) -> frozenset:
        return frozenset({"target", "prediction"})

    def missing(self, provides: frozenset) -> Optional[str]:
        if "contrastive" in provides or super().missing(provides) is None:
            return None
        return ("targets that a prediction is pulled towards (BYOL, SimSiam) or a contrastive loss over projections "
                "(SimCLR)")

    def setup(self, objective, data) -> None:
        self._targets = "contrastive" not in getattr(objective, "provides", frozenset())

    def seed(self, seed: int) -> None:
        self._gen.manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._gen.set_state(state["generator"])

    def select(self, ctx: SelectionContext) -> Optional[torch.Tensor]:
        return None

    def transform_outputs(self, out: StepOutput, ctx: SelectionContext) -> StepOutput:
        v1, v2 = out.views
        b = v1.z.shape[0]
        # λ − 1 ~ Beta(α, α) by inverse CDF of a uniform from the selector's seeded host generator
        # (torch.distributions has no generator argument, which would break run determinism);
        # data-parallel: drawn for the global batch on every rank, each keeps its own slice
        n = b if ctx.shard is None else ctx.shard.total
        u = torch.rand(n, generator=self._gen)[ctx.offset : ctx.offset + b]
        lam = 1.0 + _beta_icdf(u, self.alpha).to(v1.z.device, non_blocking=True)
        if self._targets:  # BYOL / SimSiam: harder targets
            t1, t2 = extrapolate(v1.t, v2.t, lam)
            return StepOutput((replace(v1, t=t1), replace(v2, t=t2)))
        z1, z2 = extrapolate(v1.z, v2.z, lam)  # SimCLR: harder positive projections
        return StepOutput((replace(v1, z=z1), replace(v2, z=z2)))


def _beta_icdf(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """Inverse CDF of the symmetric Beta(α, α) (scipy), deterministic given ``u``."""
    from scipy.special import betaincinv

    return torch.from_numpy(betaincinv(alpha, alpha, u.double().numpy())).float()
