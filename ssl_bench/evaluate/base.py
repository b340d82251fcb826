"""Evaluation interface: a registered protocol gets an :class:`EvalContext` and returns metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch

from ssl_bench.data.base import DataSplits
from ssl_bench import catalog

__all__ = [
    "Split", "Evaluation", "EVALUATIONS", "EvalContext", "standard_views", "extract_features",
    "run_evaluations", "at_baseline",
]

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


EVALUATIONS = catalog.EVALUATIONS


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
    # where protocols that train say how far they are (a line per fine-tuning epoch); None = silent
    log: Optional[Callable[[str], None]] = None
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
        log: Optional[Callable[[str], None]] = None,
        precision: str = "32-true",
    ) -> "EvalContext":
        """The context ``ssl-bench run`` evaluates a trained ``objective`` in: frozen features of its
        backbone on the centred evaluation view, fine-tuning copies of the backbone (``random=True``:
        the same architecture untrained, ``backbone_cfg`` rebuilt with the data's channels) trained
        on the pre-training view 1 (or their own views of ``augment_cfg``, the recipe's augmentation
        block), the head's output for map protocols.  ``precision``: the frozen features' (as
        ``train.precision``; fine-tuning has its own ``precision`` option)."""
        import copy

        from ssl_bench.backbones import build_backbone
        from ssl_bench.distributed import revert_sync_batchnorm
        from ssl_bench.objectives import Embedder

        prep, eval_view = standard_views(normalize, view_size, channels_last)

        def encoder(random: bool = False) -> torch.nn.Module:
            if random:  # the paper's "Random" row: same architecture, untrained
                return build_backbone({**(backbone_cfg or {}), "weights": None}, in_chans=data.channels)
            # evaluated by one process: SyncBatchNorm back to BatchNorm (no collective to wait on);
            # requires_grad on again: a staged objective (t-SimCNE) may end with a frozen backbone
            return revert_sync_batchnorm(copy.deepcopy(objective.backbone)).requires_grad_(True)

        return cls(
            data=data,
            embed=lambda imgs: extract_features(objective.backbone, imgs, eval_view, device,
                                                channels_last=channels_last, precision=precision),
            encoder=encoder,
            train_view=lambda x, g: prep(augment.view1(x, g)),
            eval_view=eval_view,
            device=device,
            channels_last=channels_last,
            augment=augment.view1,
            view_size=view_size,
            project=lambda imgs: extract_features(Embedder(objective), imgs, eval_view, device,
                                                  channels_last=channels_last),
            out_dir=out_dir,
            augment_cfg=augment_cfg,
            prep=prep,
            log=log,
        )

    @classmethod
    def from_scratch(
        cls, data: DataSplits, backbone_cfg: dict, device: torch.device, view_size: Optional[int] = None,
        channels_last: bool = False, log: Optional[Callable[[str], None]] = None,
    ) -> "EvalContext":
        """A context without a trained network: protocols that train (``finetune``, ``from_scratch``)
        start from ``backbone_cfg`` untrained; images are standardised with the training split's
        statistics.  What ``benchmarks/medmnist_reference.py`` validates the fine-tuning presets in."""
        from ssl_bench.backbones import build_backbone
        from ssl_bench.data.normalize import Normalize

        size = view_size or data.image_size
        prep, eval_view = standard_views(Normalize.fit(data.train.images).to(device), size, channels_last)

        def encoder(random: bool = True) -> torch.nn.Module:
            return build_backbone({**backbone_cfg, "weights": None}, in_chans=data.channels)

        def embed(imgs: torch.Tensor) -> np.ndarray:
            from ssl_bench.errors import SSLBenchError

            raise SSLBenchError("a from-scratch context has no trained features: run a protocol that trains (finetune)")

        return cls(data=data, embed=embed, encoder=encoder, eval_view=eval_view, device=device,
                   channels_last=channels_last, view_size=size, prep=prep, log=log)

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


def standard_views(normalize: Callable[[torch.Tensor], torch.Tensor], size: int, channels_last: bool = False):
    """``(prep, eval_view)``: ``prep`` standardises a float view (and sets the memory format);
    ``eval_view`` is the centred evaluation view of uint8 images at ``size``, prepped."""
    from ssl_bench.augment import center_view

    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def prep(x: torch.Tensor) -> torch.Tensor:
        return normalize(x).contiguous(memory_format=fmt)

    def eval_view(x: torch.Tensor) -> torch.Tensor:
        return prep(center_view(x, size))

    return prep, eval_view


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    images: torch.Tensor,
    view: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    batch_size: int = 512,
    channels_last: bool = False,
    precision: str = "32-true",
) -> np.ndarray:
    """Run ``encoder`` (in eval mode) over uint8 ``images`` in batches; ``view`` makes its input.
    ``precision``: as ``train.precision`` (auto: bf16 autocast where the device has native bf16); the
    features are returned in fp32."""
    from ssl_bench.device import autocast, resolve_precision

    precision = resolve_precision(precision, torch.device(device))
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = view(images[start : start + batch_size].to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, torch.device(device)):
            f = encoder(x)
        out.append(f.float().cpu())
    encoder.train(was_training)
    return torch.cat(out).numpy()


def run_evaluations(evaluations: list[Evaluation], ctx: EvalContext, log: Callable[[str], None]) -> dict:
    """Run each protocol in ``ctx``; ``{key: metrics}`` (a repeated key gets a suffix), one line each
    with its test metrics, what model selection chose, and a warning when the classifier did no better
    than predicting the majority class (what ``ssl-bench run`` and ``ssl-bench evaluate`` print)."""
    results: dict = {}
    for ev in evaluations:
        key = ev.key if ev.key not in results else f"{ev.key}_{len(results)}"  # e.g. finetune@0.1
        results[key] = m = ev.run(ctx)
        if "skipped" in m:
            log(f"eval {key}: skipped — {m['skipped']}")
            continue
        skip = ("label_fraction", "majority_accuracy", "chance_balanced_accuracy", "positive_class",
                "predicted_classes", "chosen_epoch")
        shown = {k: v for k, v in m.items() if isinstance(v, float) and not k.endswith("_std") and k not in skip}
        chosen = "".join(f"  ({k} = {v:g}, chosen on val)" for k, v in ev.chosen.items())
        log(f"eval {key}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()) + chosen)
        warning = at_baseline(m)
        if warning:
            log(f"warning: eval {key}: {warning}")
    return results


def at_baseline(m: dict, tolerance: float = 1e-3) -> Optional[str]:
    """Why a classification result is no better than a constant prediction, or None: it predicted
    one class, or its accuracy is at most the majority class's and its BMA at most chance."""
    if not isinstance(m, dict):
        return None
    acc, bma = m.get("accuracy"), m.get("balanced_accuracy")
    majority, chance = m.get("majority_accuracy"), m.get("chance_balanced_accuracy")
    if m.get("predicted_classes") == 1:
        return ("every test image was predicted as one class (the classifier learned nothing the majority class does "
                "not give)")
    if None not in (acc, bma, majority, chance) and acc <= majority + tolerance and bma <= chance + tolerance:
        return (f"no better than the majority class (accuracy {acc:.3f} ≤ {majority:.3f}, BMA {bma:.3f} ≤ chance "
                f"{chance:.3f})")
    return None
