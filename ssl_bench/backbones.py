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

import difflib
import fnmatch
import functools
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError
from ssl_bench.registry import Registry, accepted_options, check_kwargs, option_defaults

BACKBONES = Registry("backbone")


@functools.lru_cache(maxsize=1)
def timm_models() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def backbone_names(pattern: Optional[str] = None) -> list[str]:
    names = list(BACKBONES.names()) + list(timm_models())
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


class TimmBackbone(nn.Module):
    """A timm model without classifier: ``forward(x) -> [B, num_features]`` pooled features."""

    def __init__(
        self,
        name: str,
        in_chans: int = 3,
        small_image_stem: bool = False,
        weights: Optional[str] = None,
        drop_path_rate: float = 0.0,
        kwargs: Optional[dict] = None,
        stem_pool: bool = False,
    ):
        super().__init__()
        import timm

        self.name = name
        self.in_chans = in_chans
        try:
            self.model = timm.create_model(
                name, pretrained=False, num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate, **(kwargs or {})
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

    ``keep_pool`` keeps ResNet's stride-2 max-pool after the new 3×3 conv: layer 1 then runs at
    half resolution (14×14 for 28 px), 4× fewer FLOPs than the full CIFAR stem — on 2 CPU cores
    a BYOL step of ResNet-18 at 28 px, batch 128, runs at ≈105 img/s instead of ≈43 img/s.
    """
    if hasattr(model, "conv1") and isinstance(model.conv1, nn.Conv2d) and hasattr(model, "maxpool"):  # ResNet family
        out = model.conv1.out_channels
        model.conv1 = nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False)
        if not keep_pool:
            model.maxpool = nn.Identity()
        return
    if keep_pool:
        raise SSLBenchError(f"backbone.stem_pool applies to ResNet-style stems only, not '{name}'")
    stem = getattr(model, "stem", None)
    if isinstance(stem, nn.Sequential) and len(stem) and isinstance(stem[0], nn.Conv2d):  # ConvNeXt: 4×4/4 patchify
        old = stem[0]
        stem[0] = nn.Conv2d(in_chans, old.out_channels, kernel_size=3, stride=1, padding=1, bias=old.bias is not None)
        return
    conv = getattr(model, "conv_stem", None)  # EfficientNet / MobileNet
    if isinstance(conv, nn.Conv2d):
        model.conv_stem = nn.Conv2d(in_chans, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=conv.bias is not None)
        return
    raise SSLBenchError(
        f"backbone.small_image_stem is not supported for '{name}' (ResNet, ConvNeXt and EfficientNet-style stems are)"
    )


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


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    p = Path(path).expanduser()
    if p.is_dir() and (p / "checkpoints" / "last.pt").is_file():  # a run directory
        p = p / "checkpoints" / "last.pt"
    if not p.is_file():
        raise SSLBenchError(f"backbone weights file not found: {p} (recipe key backbone.weights)")
    try:
        state = _extract_backbone_state(torch.load(p, map_location="cpu", weights_only=True))
    except Exception as e:
        raise SSLBenchError(f"backbone weights {p} could not be read: {e}") from e
    state = {k: v for k, v in state.items() if not k.startswith("model.fc.") and not k.startswith("model.head.fc.")}
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
def _timm_factory_options(
    in_chans: Optional[int] = None,
    small_image_stem: bool = False,
    weights: Optional[str] = None,
    drop_path_rate: float = 0.0,
    kwargs: Optional[dict] = None,
    stem_pool: bool = False,
) -> None:
    """Options of a timm backbone (used for validation and defaults only)."""


def backbone_options(name: str) -> Optional[set[str]]:
    return accepted_options(BACKBONES.get(name) if name in BACKBONES else _timm_factory_options)


def backbone_defaults(name: str) -> dict:
    defaults = option_defaults(BACKBONES.get(name) if name in BACKBONES else _timm_factory_options)
    if "in_chans" in defaults:
        defaults["in_chans"] = None  # null = the dataset's channel count, filled in at build time
    return defaults


def check_backbone(cfg: dict, key: str = "backbone") -> None:
    if "name" not in cfg:
        raise SSLBenchError(f"recipe key {key}.name is missing (a timm model such as resnet18)")
    name = cfg["name"]
    options = {k: v for k, v in cfg.items() if k != "name"}
    if name in BACKBONES:  # a plug-in encoder: its own signature (it must take ``in_chans``)
        BACKBONES.check({k: v for k, v in cfg.items() if not (k == "in_chans" and v is None)}, key=key)
        return
    if name not in timm_models():
        close = difflib.get_close_matches(str(name), backbone_names(), n=3, cutoff=0.6)
        hint = " — did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else ""
        raise SSLBenchError(f"unknown backbone '{name}' (recipe key {key}.name; not a registered or timm model){hint}")
    check_kwargs(_timm_factory_options, options, key=key, what=f"timm backbone '{name}'")


def build_backbone(cfg: dict, in_chans: int) -> nn.Module:
    """Build the encoder of a recipe's ``backbone`` block; ``in_chans`` defaults to the data's."""
    check_backbone(cfg)
    options = {k: v for k, v in cfg.items() if k != "name"}
    if options.get("in_chans") is None:
        options["in_chans"] = in_chans
    if cfg["name"] in BACKBONES:
        model = BACKBONES.get(cfg["name"])(**options)
    else:
        model = TimmBackbone(cfg["name"], **options)
    if not hasattr(model, "num_features"):
        raise SSLBenchError(f"backbone '{cfg['name']}' must expose num_features (the feature dimension)")
    return model
