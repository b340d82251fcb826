"""Transfer: pre-train on dataset A, evaluate the encoder on dataset B with any other protocol.

The BYOL-TracIn paper (Zeng et al., MICCAI 2023; arXiv 2306.00112, Table 2) pre-trains on ISIC 2019
and fine-tunes/tests on ISIC 2016, and pre-trains on ChestX-ray14 and tests on Shenzhen.  In a
recipe the target dataset is its own ``data`` block and the protocol its own ``evaluate`` block::

    evaluate:
      - name: transfer
        data: {name: medmnist, flag: breastmnist}          # dataset B (any registered dataset)
        protocol: {name: finetune, label_fraction: 1.0, epochs: 20, seeds: 5}

Dataset B is loaded when the recipe is built (a bad block fails before anything is written) and
adapted to the encoder: grayscale images are repeated to three channels for an RGB encoder, RGB
images are converted to luminance (ITU-R BT.601 weights, as ``torchvision``'s ``rgb_to_grayscale``)
for a grayscale encoder, and resized once to the pre-training view size.  B is standardised with its own training-split
statistics.  Its results are stored
under the key ``transfer:<B>/<protocol key>`` (e.g. ``transfer:BreastMNIST/finetune@1``).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Literal, Optional

import torch

from ssl_bench.errors import SSLBenchError
from ssl_bench.evaluate.base import EVALUATIONS, Evaluation, EvalContext, extract_features, standard_views

__all__ = ["adapt_channels", "resize_uint8", "adapt_dataset", "Transfer"]

_LUMA = torch.tensor([0.299, 0.587, 0.114])


def adapt_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` → uint8 ``[N, channels, H, W]`` (gray → RGB by repetition, RGB → gray by luma)."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    if c == 3 and channels == 1:
        out = torch.empty(images.shape[0], 1, *images.shape[2:], dtype=torch.uint8)
        for s in range(0, images.shape[0], 4096):  # float copies of a whole dataset would not fit in RAM
            x = images[s : s + 4096].float()
            out[s : s + 4096] = (
                torch.einsum("nchw,c->nhw", x, _LUMA).round_().clamp_(0, 255).unsqueeze(1).to(torch.uint8)
            )
        return out
    raise SSLBenchError(f"transfer: cannot adapt {c}-channel images to an encoder with {channels} input channels")


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` → uint8 ``[N, C, size, size]`` (the evaluation view's resample)."""
    from ssl_bench.augment import center_view

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
    for s in range(0, images.shape[0], 1024):
        out[s : s + 1024] = center_view(images[s : s + 1024], size).mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return out


def adapt_dataset(data, channels: int, size: Optional[int] = None):
    """A copy of ``data`` (DataSplits) with every split's images adapted to ``channels`` (and ``size``)."""
    from ssl_bench.data import ImageSet

    out = copy.copy(data)
    for split in ("train", "val", "test"):
        s = getattr(data, split)
        if s is not None:
            images = adapt_channels(s.images, channels)
            images = resize_uint8(images, size) if size else images
            setattr(out, split, ImageSet(images, s.labels, s.groups))
    return out


@EVALUATIONS.register("transfer")
class Transfer(Evaluation):
    """Evaluate the pre-trained encoder on another dataset (its own data block) with any protocol."""

    def __init__(self, data: dict, protocol: Optional[dict] = None, missing: Literal["error", "skip"] = "error"):
        """``data``: dataset B's block (as the recipe's ``data``); ``protocol``: an evaluate block
        (default ``{name: finetune}``) run on B.  ``missing: skip``: when B cannot be loaded (its
        files are not there), say so and record ``skipped`` in results.json instead of stopping —
        for a second dataset that not every user of a recipe has downloaded."""
        from ssl_bench.data import DATASETS

        protocol = dict(protocol or {"name": "finetune"})
        if protocol.get("name") == "transfer":
            raise SSLBenchError("recipe key evaluate.transfer.protocol.name cannot be 'transfer' itself")
        self.data_cfg, self.protocol_cfg = dict(data), protocol
        self.inner = EVALUATIONS.build(protocol, key="evaluate.transfer.protocol")
        self.skipped: Optional[str] = None
        try:
            self.target = DATASETS.build(self.data_cfg, key="evaluate.transfer.data")
        except SSLBenchError as e:  # adapters name their keys relative to the recipe's own data block
            message = str(e).replace("recipe key data", "recipe key evaluate.transfer.data")
            if missing == "error":
                raise SSLBenchError(message) from e
            self.target, self.skipped = None, message
        self.test_split = self.inner.test_split

    @staticmethod
    def validate_options(options: dict, key: str) -> None:
        """At recipe load (``ssl-bench show`` too): the inner protocol and dataset B's block name
        registered components with accepted options (B's files are only looked for at build)."""
        from ssl_bench.data import DATASETS

        protocol = options.get("protocol") or {"name": "finetune"}
        if isinstance(protocol, dict) and protocol.get("name") == "transfer":
            raise SSLBenchError(f"recipe key {key}.protocol.name cannot be 'transfer' itself")
        EVALUATIONS.check(protocol, key=f"{key}.protocol")
        if "data" in options:
            DATASETS.check(options["data"], key=f"{key}.data")

    def check_data(self, data) -> None:
        if self.target is not None:  # the protocol runs on dataset B
            self.inner.check_data(self.target)

    @classmethod
    def resolve(cls, block: dict, recipe: dict) -> dict:
        protocol = block.get("protocol") or {"name": "finetune"}
        if isinstance(protocol, dict) and protocol.get("name") in EVALUATIONS:
            protocol = EVALUATIONS.get(protocol["name"]).resolve(protocol, recipe)
        return {**block, "protocol": protocol}

    @property
    def chosen(self) -> dict:
        return self.inner.chosen

    @property
    def key(self) -> str:
        inner = self.inner.key
        target = self.target.name if self.target is not None else self.data_cfg.get("name", "?")
        return f"transfer:{target}/{inner}"

    def run(self, ctx: EvalContext) -> dict[str, Any]:
        if self.skipped:
            warnings.warn(f"transfer skipped (evaluate.transfer.missing: skip): {self.skipped}")
            return {"skipped": self.skipped}
        if ctx.encoder is None or ctx.augment is None or ctx.view_size is None:
            raise SSLBenchError("evaluation transfer needs the trained encoder (run it through ssl-bench run)")
        from ssl_bench.data.normalize import Normalize

        encoder = ctx.encoder()
        channels = getattr(encoder, "in_chans", None) or ctx.data.channels
        size, dev = ctx.view_size, ctx.device
        # B at the pre-training view size once, so both the training and the evaluation views fit
        target = adapt_dataset(self.target, channels, size)
        prep, eval_view = standard_views(Normalize.fit(target.train.images).to(dev), size, ctx.channels_last)

        encoder.to(dev)
        tctx = EvalContext(
            data=target,
            embed=lambda imgs: extract_features(encoder, imgs, eval_view, dev, channels_last=ctx.channels_last),
            encoder=ctx.encoder,
            train_view=lambda x, g: prep(ctx.augment(x, g)),
            eval_view=eval_view,
            device=dev,
            channels_last=ctx.channels_last,
            augment=ctx.augment,
            view_size=size,
            # fine-tuning on B trains on its protocol's own views (never A's pre-training augmentations)
            log=ctx.log,
            prep=prep,
        )
        out = dict(self.inner.run(tctx))
        out["target_dataset"] = target.name
        return out
