"""Evaluation interface: a registered protocol gets an :class:`EvalContext` and returns metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch

from ssl_bench.data.base import DataSplits
from ssl_bench.registry import Registry

Split = Literal["train", "val", "test"]


class Evaluation:
    """Base of the evaluation protocols: ``run(ctx)`` returns ``{metric: value}`` on ``test_split``.

    ``key`` names the result in ``results.json`` (the registered name, or e.g. ``finetune@0.1``);
    ``chosen`` is what the protocol's model selection chose (e.g. ``{"C": 0.1}``), reported beside
    the metrics."""

    test_split: str = "test"
    registered_name: str = ""  # set by the registry

    @property
    def key(self) -> str:
        return self.registered_name or type(self).__name__.lower()

    @property
    def chosen(self) -> dict:
        return {}

    def run(self, ctx: "EvalContext") -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_data(self, data: DataSplits) -> None:
        """Refuse, before anything is trained or written, a protocol that cannot run on ``data``."""

    @classmethod
    def resolve(cls, block: dict, recipe: dict) -> dict:
        """The evaluate block with defaults that depend on the rest of the recipe written in (called
        when a recipe is loaded, so that ``ssl-bench show`` and ``recipe.yaml`` say what will run)."""
        return block


EVALUATIONS = Registry("evaluation", base=Evaluation)


@dataclass
class EvalContext:
    """Frozen features per split (computed once, shared by all protocols) and the task."""

    data: DataSplits
    embed: Callable[[torch.Tensor], np.ndarray]  # uint8 images → features [N, F]
    # for protocols that train (finetune): a fresh copy of the encoder (``random=True``: untrained),
    # the training view (pre-training augmentation, normalised) and the evaluation view
    encoder: Optional[Callable[..., torch.nn.Module]] = None
    train_view: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None
    eval_view: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    device: torch.device = torch.device("cpu")
    channels_last: bool = False
    # for protocols on another dataset (transfer): the un-normalised pre-training view (uint8 → float
    # in [0, 1]) and the side of the views the encoder was trained on
    augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None
    view_size: Optional[int] = None
    # uint8 images → the objective's head output (t-SimCNE: the 2-D map); the run directory (figures)
    project: Optional[Callable[[torch.Tensor], np.ndarray]] = None
    out_dir: Optional[Path] = None
    # the pre-training augmentation block and the normalisation (+ memory format): protocols that
    # train build their own views from them (fine-tuning: the set without blur and solarize)
    augment_cfg: Optional[dict] = None
    prep: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of_objective(
        cls,
        objective,
        data: DataSplits,
        augment,
        view_size: int,
        normalize,
        device: torch.device,
        channels_last: bool = False,
        backbone_cfg: Optional[dict] = None,
        out_dir: Optional[Path] = None,
        augment_cfg: Optional[dict] = None,
    ) -> "EvalContext":
        """The context ``ssl-bench run`` evaluates a trained ``objective`` in: frozen features of its
        backbone on the centred evaluation view, fine-tuning copies of the backbone (``random=True``:
        the same architecture untrained, ``backbone_cfg`` rebuilt with the data's channels) trained
        on the pre-training view 1 (or their own views of ``augment_cfg``, the recipe's augmentation
        block), the head's output for map protocols."""
        import copy

        from ssl_bench.augment import center_view
        from ssl_bench.backbones import build_backbone
        from ssl_bench.distributed import revert_sync_batchnorm
        from ssl_bench.objectives import Embedder

        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def prep(x: torch.Tensor) -> torch.Tensor:
            return normalize(x).contiguous(memory_format=fmt)

        def eval_view(x: torch.Tensor) -> torch.Tensor:
            return prep(center_view(x, view_size))

        def encoder(random: bool = False) -> torch.nn.Module:
            if random:  # the paper's "Random" row: same architecture, untrained
                return build_backbone({**(backbone_cfg or {}), "weights": None}, in_chans=data.channels)
            # evaluated by one process: SyncBatchNorm back to BatchNorm (no collective to wait on);
            # requires_grad on again: a staged objective (t-SimCNE) may end with a frozen backbone
            return revert_sync_batchnorm(copy.deepcopy(objective.backbone)).requires_grad_(True)

        return cls(
            data=data,
            embed=lambda imgs: extract_features(objective.backbone, imgs, eval_view, device, channels_last=channels_last),
            encoder=encoder,
            train_view=lambda x, g: prep(augment.view1(x, g)),
            eval_view=eval_view,
            device=device,
            channels_last=channels_last,
            augment=augment.view1,
            view_size=view_size,
            project=lambda imgs: extract_features(Embedder(objective), imgs, eval_view, device, channels_last=channels_last),
            out_dir=out_dir,
            augment_cfg=augment_cfg,
            prep=prep,
        )

    def view_of(self, block: dict) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
        """The training view (view 1, normalised, at the evaluation size) of augmentation ``block``."""
        from ssl_bench.augment import AUGMENTATIONS

        views = AUGMENTATIONS.build({**block, "size": block.get("size") or self.view_size}, key="evaluate.augment")
        prep = self.prep or (lambda x: x)
        return lambda x, g: prep(views.view1(x, g))

    def features(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._cache:
            s = self.data.split(split)
            self._cache[split] = (self.embed(s.images), s.labels.numpy())
        return self._cache[split]

    def projections(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The head output (2-D for t-SimCNE) of a split's images, and its labels."""
        if self.project is None:
            from ssl_bench.errors import SSLBenchError

            raise SSLBenchError("this evaluation needs the objective's head output, which the context does not provide")
        if ("project", split) not in self._cache:
            s = self.data.split(split)
            self._cache[("project", split)] = (self.project(s.images), s.labels.numpy())
        return self._cache[("project", split)]


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    images: torch.Tensor,
    view: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
) -> np.ndarray:
    """Run ``encoder`` (in eval mode) over uint8 ``images`` in batches; ``view`` makes its input."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = view(images[start : start + batch_size].to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(encoder(x).float().cpu())
    encoder.train(was_training)
    return torch.cat(out).numpy()
