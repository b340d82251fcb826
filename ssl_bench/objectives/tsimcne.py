"""t-SimCNE: contrastive learning of 2-D embeddings (Böhm, Berens & Kobak, ICLR 2023; arXiv 2210.09879).

As applied to medical images by Nwabufo, Böhm, Berens & Kobak, "Self-supervised Visualisation of
Medical Image Datasets" (MIDL 2024 short paper; arXiv 2402.14566).

The loss is SimCLR's InfoNCE with the Cauchy (t-distribution) similarity of Euclidean distances,
``q(z_i, z_j) = 1 / (1 + ‖z_i − z_j‖²)`` instead of ``exp(cos / τ)``: for anchor view i with positive
j (the other view of the same image), ``ℓ_i = −log q(z_i, z_j) / Σ_{k≠i} q(z_i, z_k)`` over the 2B
views of the batch.  Extra positives from a selector join like SupCon's L_out (as in SimCLR here).

Three stages (paper §3, poster Fig. 2), each with its own warm-up + cosine learning-rate schedule
and a fresh optimiser state:

1. pre-train backbone + MLP projector (512 → 1024 → 128, ReLU) with the Cauchy loss in 128-D;
2. replace the projector's last layer by a 1024 → 2 layer initialised N(0, 1) (as the reference
   implementation), freeze the gradients of everything else and train it (the frozen parts stay in
   train mode, so their BatchNorm statistics keep updating, as in the reference;
   ``stage2_batchnorm: eval`` freezes those too);
3. unfreeze everything and fine-tune in 2-D with a 1000× lower learning rate.

The paper's defaults are 1000 / 50 / 450 epochs, lr = 0.03·batch/256 (×1, ×1, ×1/1000 per stage),
warm-up 10 / 0 / 10 epochs, SGD momentum 0.9, weight decay 5e-4.  Here ``stages`` gives the epochs
(``train.epochs`` must equal their sum), ``stage_lr`` multiplies ``train.lr`` and ``stage_warmup``
replaces ``train.warmup_epochs`` per stage.  The stage is derived from the epoch number alone
(:meth:`TSimCNE.begin_epoch`), so a run resumed at any epoch is in the right stage.

The 2-D layer exists from the start, so one optimiser holds every parameter: a parameter that is
frozen or unused in a stage gets no gradient (``.grad is None``), and SGD/AdamW skip such
parameters entirely — no weight decay, no momentum — so they stay bit-identical.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives.base import OBJECTIVES, Objective, Stage, StepOutput, ViewOutput, make_stages, stage_at
from ssl_bench.objectives.simclr import multi_positive_infonce

__all__ = ["cauchy_infonce", "TSimCNE"]


def cauchy_logits(z: torch.Tensor) -> torch.Tensor:
    """``log q(z_i, z_j) = −log(1 + ‖z_i − z_j‖²)`` for all pairs of rows of ``z`` [N, D] → [N, N].

    Squared distances by the Gram expansion (one GEMM, clamped at 0), not an [N, N, D] difference
    tensor: at B = 512 views and D = 128 the latter would need 512 MB.
    """
    sq = (z * z).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp(min=0.0)
    return -torch.log1p(d2)


def cauchy_infonce(
    z1: torch.Tensor, z2: torch.Tensor, extra: Optional[torch.Tensor] = None, weight: float = 1.0
) -> torch.Tensor:
    """t-SimCNE's InfoNCE with the Cauchy kernel over the 2B views; extra positives [B, k] (−1 = none)."""
    return multi_positive_infonce(cauchy_logits(torch.cat([z1, z2]).float()), extra, weight)


@OBJECTIVES.register("tsimcne")
class TSimCNE(Objective):
    """t-SimCNE (arXiv 2210.09879): Cauchy-kernel InfoNCE, 128-D → new 2-D layer → fine-tune."""

    display = "t-SimCNE"
    provides = frozenset({"features", "projection", "index_positives", "contrastive"})

    def __init__(
        self,
        backbone: nn.Module,
        projection_dim: int = 128,
        hidden_dim: int = 1024,
        output_dim: int = 2,
        stages: tuple[int, int, int] = (1000, 50, 450),
        stage_lr: tuple[float, float, float] = (1.0, 1.0, 0.001),
        stage_warmup: tuple[float, float, float] = (10.0, 0.0, 10.0),
        head_init: Literal["normal", "default"] = "normal",
        stage2_batchnorm: Literal["train", "eval"] = "train",
    ):
        """``head_init``: the 2-D layer's weights N(0, 1), as the reference implementation (``default``:
        PyTorch's, ≈ 55× smaller at width 1024); ``stage2_batchnorm``: the frozen backbone and projector
        run in train mode in stage 2, as the reference does (only their gradients are frozen; BatchNorm
        statistics keep updating), or in eval mode (``eval``: statistics frozen too)."""
        super().__init__()
        if any(e < 0 for e in stages) or sum(stages) == 0 or stages[0] < 1:
            raise SSLBenchError("recipe key objective.stages must be 3 epoch counts ≥ 0 with stage 1 ≥ 1, got "
                                f"{list(stages)}")
        if any(s <= 0 for s in stage_lr):
            raise SSLBenchError("recipe key objective.stage_lr must be 3 positive lr multipliers, got "
                                f"{list(stage_lr)}")
        if any(w < 0 for w in stage_warmup):
            raise SSLBenchError("recipe key objective.stage_warmup must be 3 warm-up epochs ≥ 0, got "
                                f"{list(stage_warmup)}")
        for k, v in (("projection_dim", projection_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)):
            if v < 1:
                raise SSLBenchError(f"recipe key objective.{k} must be ≥ 1, got {v}")
        from lightly.models.modules.heads import ProjectionHead  # (torchvision: see simclr.py)

        self.backbone = backbone
        self.projector = ProjectionHead(
            [(backbone.num_features, hidden_dim, None, nn.ReLU()), (hidden_dim, projection_dim, None, None)]
        )
        # stage 2's layer, created now so that one optimiser (built once by the loop) holds it
        self.head_2d = nn.Linear(hidden_dim, output_dim)
        if head_init == "normal":  # the reference's mutate_model: nn.init.normal_(weight, std=1)
            nn.init.normal_(self.head_2d.weight, std=1.0)
        self.stage2_batchnorm = stage2_batchnorm
        self._stages = make_stages(stages, stage_lr, stage_warmup)
        self.stage = 0  # 0-based index of the current stage (plain attribute: derived, never saved)

    # -- stages -----------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        return list(self._stages)

    def begin_epoch(self, epoch: int) -> Stage:
        st = stage_at(self._stages, epoch)
        self.set_stage(st.index)
        return st

    def set_stage(self, index: int) -> None:
        """0: all but the 2-D layer train; 1: only the 2-D layer trains; 2: everything trains."""
        self.stage = index
        frozen = index == 1
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        for p in self.projector.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)  # re-applies eval mode to frozen parts

    def train(self, mode: bool = True) -> "TSimCNE":
        super().train(mode)
        if mode and getattr(self, "stage", 0) == 1 and getattr(self, "stage2_batchnorm", "train") == "eval":
            # frozen parts in eval mode: BatchNorm uses (and does not update) its running statistics
            self.backbone.eval()
            self.projector.eval()
        return self

    # -- forward ----------------------------------------------------------------------------------
    def _head(self, h: torch.Tensor) -> torch.Tensor:
        if self.stage == 0:
            return self.projector(h)
        return self.head_2d(self.projector.layers[:-1](h))

    def online(self, x: torch.Tensor) -> ViewOutput:
        h = self.backbone(x)
        z = self._head(h)
        return ViewOutput(h=h, z=z, t=z.detach())

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(self.backbone(x))

    def loss(self, out: StepOutput, extra: Optional[torch.Tensor] = None, weight: float = 1.0) -> torch.Tensor:
        v1, v2 = out.views
        return cauchy_infonce(v1.z, v2.z, extra, weight)
