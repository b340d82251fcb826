"""Backbones: any timm model by name, plus encoders registered by plug-ins.

Recipe block::

    backbone: {name: resnet18, small_image_stem: true, weights: null, in_chans: null}

``name`` is looked up first in :data:`BACKBONES` (encoders registered with
``@BACKBONES.register``), then among ``timm.list_models()``.  Models are created with random
weights (nothing is downloaded) or loaded from a local file with ``weights: PATH`` — a plain
state dict, a timm checkpoint, or an ssl-bench run checkpoint (its online backbone is used).

``small_image_stem`` replaces the stem by a 3×3 stride-1 convolution and drops the max-pool, as is
usual for 28–64 px images (CIFAR-style ResNets); without it a 28 px image is 1×1 after layer 4.
``stem_pool: true`` (with ``small_image_stem``, ResNets only) keeps the max-pool: layer 1 at half
resolution, 4× fewer FLOPs — the CPU-friendly middle ground the 28 px recipes use.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError
from ssl_bench import catalog
from ssl_bench.timm_names import NO_DOWNLOAD, check_hub, is_timm_model

__all__ = ["timm_fallback", "BACKBONES", "TimmBackbone", "build_backbone"]

def timm_fallback(name: str):
    """Any timm architecture not registered here: :class:`TimmBackbone` of that name."""
    check_hub(name)
    return functools.partial(TimmBackbone, name) if is_timm_model(name) else None


BACKBONES = catalog.BACKBONES


class TimmBackbone(nn.Module):
    """A timm model without classifier: ``forward(x) -> [B, num_features]`` pooled features."""

    def __init__(
        self,
        name: str,
        in_chans: Optional[int] = None,
        small_image_stem: bool = False,
        weights: Optional[str] = None,
        drop_path_rate: float = 0.0,
        kwargs: Optional[dict] = None,
        stem_pool: bool = False,
    ):
        """``in_chans``: input channels (null in a recipe: the dataset's); ``small_image_stem``: a 3×3
        stride-1 first convolution and no max-pool (28–64 px images); ``stem_pool``: keep the max-pool
        (ResNets); ``weights``: a local file (plain or timm state dict, or an ssl-bench run);
        ``kwargs``: passed to ``timm.create_model``."""
        super().__init__()
        import timm

        in_chans = 3 if in_chans is None else in_chans
        fetching = sorted(set(kwargs or {}) & {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                                               "checkpoint_path"})
        if fetching:
            raise SSLBenchError(f"recipe key backbone.kwargs.{fetching[0]}: {NO_DOWNLOAD}")
        self.name = name
        self.in_chans = in_chans
        try:
            self.model = timm.create_model(
                name, pretrained=False, num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate,
                **(kwargs or {})
            )
        except TypeError as e:
            raise SSLBenchError(f"backbone '{name}' rejected its options (recipe key backbone): {e}") from e
        if small_image_stem:
            replace_stem(self.model, name, in_chans, keep_pool=stem_pool)
        # pooled output size: timm's head_hidden_size where a pre-logits layer exists (MobileNetV3)
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        if weights:
            load_backbone_weights(self, weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def replace_stem(model: nn.Module, name: str, in_chans: int, keep_pool: bool = False) -> None:
    """3×3 stride-1 first convolution and no max-pool (CIFAR-style) for small images.

    The first convolution is the one timm's own metadata names (``pretrained_cfg['first_conv']``:
    ``conv1`` for ResNets, ``stem.0`` for ConvNeXt, ``conv_stem`` for EfficientNet/MobileNet); the
    max-pool is that of timm's ResNet family.  ``keep_pool`` keeps ResNet's stride-2 max-pool after the
    new 3×3 conv: layer 1 then runs at half resolution (14×14 for 28 px), 4× fewer FLOPs than the full
    CIFAR stem — on 2 CPU cores a BYOL step of ResNet-18 at 28 px, batch 128, runs at ≈105 img/s
    instead of ≈43 img/s.
    """
    from timm.models.resnet import ResNet

    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    first = first[0] if isinstance(first, (list, tuple)) else first
    parent, attr = _parent_of(model, first) if first else (None, None)
    old = getattr(parent, attr, None) if parent is not None else None
    from timm.layers import PatchEmbed

    if not isinstance(old, nn.Conv2d) or isinstance(parent, PatchEmbed):  # a ViT's patch embedding is no stem
        raise SSLBenchError(
            f"backbone.small_image_stem is not supported for '{name}' (ResNet, ConvNeXt, EfficientNet and other "
            "convolutional stems are; timm names no such first convolution for it)"
        )
    is_resnet = isinstance(model, ResNet)
    if keep_pool and not is_resnet:
        raise SSLBenchError(f"backbone.stem_pool applies to ResNet-style stems only, not '{name}'")
    new = nn.Conv2d(in_chans, old.out_channels, kernel_size=3, stride=1, padding=1, bias=old.bias is not None)
    setattr(parent, attr, new)
    if is_resnet and not keep_pool:
        model.maxpool = nn.Identity()


def _parent_of(model: nn.Module, dotted: str) -> tuple[Optional[nn.Module], Optional[str]]:
    """The module holding ``dotted`` (``stem.0`` → ``model.stem``, ``"0"``) and the last name."""
    *path, attr = dotted.split(".")
    parent = model
    for p in path:
        parent = getattr(parent, p, None)  # nn.Sequential children are attributes "0", "1", …
        if parent is None:
            return None, None
    return parent, attr


def _extract_backbone_state(obj: Any) -> dict:
    """A backbone state dict from a plain/timm state dict or an ssl-bench run checkpoint."""
    if isinstance(obj, dict) and "objective" in obj:  # ssl-bench checkpoint: online backbone
        obj = {k[len("backbone.") :]: v for k, v in obj["objective"].items() if k.startswith("backbone.")}
    elif isinstance(obj, dict):
        for k in ("state_dict", "model", "backbone"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError("no state dict found")
    if not any(k.startswith("model.") for k in obj):  # a bare timm state dict
        obj = {f"model.{k}": v for k, v in obj.items()}
    return obj


def _read_weights(p: Path) -> Any:
    """A weights file as tensors only: safetensors (timm's and the hub's format) or a torch file
    (``.pth``/``.pt``/``.bin``, read with ``weights_only=True``: no pickled code runs)."""
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    return torch.load(p, map_location="cpu", weights_only=True)


def _adapt_in_chans(backbone: nn.Module, state: dict) -> dict:
    """A first convolution saved for another channel count (an ImageNet RGB stem for grayscale X-rays,
    or the reverse) adapted as timm adapts pretrained weights (``adapt_input_conv``: summed to one
    channel, or repeated and rescaled to three)."""
    model = getattr(backbone, "model", None)
    first = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    first = first[0] if isinstance(first, (list, tuple)) else first
    key = f"model.{first}.weight" if first else None
    if key is None or key not in state or key not in backbone.state_dict():
        return state
    want, have = backbone.state_dict()[key], state[key]
    if (
        have.dim() == 4 and have.shape[1] != want.shape[1]
        and have.shape[0] == want.shape[0] and have.shape[2:] == want.shape[2:]
    ):
        from timm.models._manipulate import adapt_input_conv

        state = {**state, key: adapt_input_conv(want.shape[1], have, base_chans=have.shape[1])}
    return state


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """``backbone.weights``: a timm state dict (``.pth``, ``.safetensors``), a plain or wrapped state
    dict, or an ssl-bench run (directory or checkpoint); the classifier is dropped and a first
    convolution of another channel count is adapted as timm does."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "checkpoints" / "last.pt").is_file():  # a run directory
        p = p / "checkpoints" / "last.pt"
    if not p.is_file():
        raise SSLBenchError(f"backbone weights file not found: {p} (recipe key backbone.weights)")
    try:
        state = _extract_backbone_state(_read_weights(p))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SSLBenchError(f"backbone weights {p} could not be read: {first[:200]}") from e
    state = {k: v for k, v in state.items() if not k.startswith("model.fc.") and not k.startswith("model.head.fc.")}
    state = _adapt_in_chans(backbone, state)
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise SSLBenchError(f"backbone weights {p} do not fit '{getattr(backbone, 'name', '?')}': {first}") from e
    if missing or unexpected:
        raise SSLBenchError(
            f"backbone weights {p} do not fit '{getattr(backbone, 'name', '?')}': "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )


# -------------------------------------------------------------------------------------------------
# Recipe interface
# -------------------------------------------------------------------------------------------------
def build_backbone(cfg: dict, in_chans: int) -> nn.Module:
    """Build the encoder of a recipe's ``backbone`` block through :data:`BACKBONES` (registered
    encoders, else any timm model); ``in_chans`` (the data's) unless the block names its own."""
    cfg = {**cfg, "in_chans": cfg.get("in_chans") or in_chans}
    model = BACKBONES.build(cfg, key="backbone")
    if not hasattr(model, "num_features"):
        raise SSLBenchError(f"backbone '{cfg['name']}' must expose num_features (the feature dimension)")
    return model
