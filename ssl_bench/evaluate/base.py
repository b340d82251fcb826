"""Evaluation interface: a registered protocol gets an :class:`EvalContext` and returns metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch

from ssl_bench.data.base import DataSplits
from ssl_bench.registry import Registry

EVALUATIONS = Registry("evaluation")
Split = Literal["train", "val", "test"]


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
    _cache: dict = field(default_factory=dict, repr=False)

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
