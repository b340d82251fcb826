"""Batched, per-sample random augmentation on any device (CPU or CUDA).

Usage::

    views = AUGMENTATIONS.build({"name": "byol", "size": 32})
    gen = torch.Generator(device=images.device).manual_seed(0)
    v1, v2 = views(images, gen)          # uint8 [B, C, H, W] → two float32 [B, C, 32, 32] in [0, 1]
    feats_in = center_view(images, 32)   # deterministic view for evaluation
"""

from ssl_bench.augment.pipeline import TwoViews, ViewTransform, center_view
from ssl_bench.augment.sets import AUGMENTATIONS

__all__ = ["AUGMENTATIONS", "TwoViews", "ViewTransform", "center_view"]
