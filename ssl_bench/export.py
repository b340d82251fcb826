"""Take a pre-trained backbone out of ssl-bench: ``ssl-bench export`` and :func:`load_backbone`.

An export file holds the backbone alone (the online network's timm model, as a plain state dict with
timm's own keys) and what rebuilds it::

    {"format": "ssl-bench-backbone/1", "timm_name": "resnet18", "in_chans": 1,
     "small_image_stem": true, "stem_pool": true, "feature_dim": 512, "image_size": 28,
     "mean": [...], "std": [...], "recipe": {...}, "ssl_bench_version": "...", "state_dict": {...}}

It is read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only.
A backbone without ``small_image_stem`` loads straight into
``timm.create_model(timm_name, num_classes=0, in_chans=in_chans)``; with it, the first convolution
is 3×3 stride 1 (and, without ``stem_pool``, ResNet's max-pool is dropped) — :func:`load_backbone`
rebuilds either, and ``docs/use_your_backbone.md`` shows both by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError

__all__ = ["PretrainedBackbone", "export_backbone", "load_backbone"]

FORMAT = "ssl-bench-backbone/1"

# the ``timm.create_model`` keyword arguments an export may carry (a recipe's backbone.kwargs): they shape
# the architecture and read nothing — unlike checkpoint_path, pretrained_cfg(_overlay) or cache_dir, which
# make timm read a file or contact the hub, and are never taken from a file
TIMM_KWARGS = frozenset({
    "drop_rate", "drop_block_rate", "proj_drop_rate", "attn_drop_rate", "pos_drop_rate",
    "global_pool", "output_stride", "act_layer", "norm_layer", "img_size", "patch_size", "embed_dim", "depth",
    "num_heads", "mlp_ratio", "qkv_bias", "class_token", "no_embed_class", "reg_tokens", "pos_embed",
    "dynamic_img_size", "dynamic_img_pad", "init_values", "layers", "stem_type", "stem_width", "avg_down",
    "down_kernel_size", "cardinality", "base_width", "width_multiplier", "channel_multiplier", "depth_multiplier",
    "dims", "depths", "kernel_sizes", "ls_init_value", "conv_mlp", "head_norm_first",
})
MAX_IN_CHANS = 64  # input channels an export may ask for (images have 1–4; a bound, not a format)


class PretrainedBackbone(nn.Module):
    """A pre-trained backbone with the normalisation of its training data.

    ``forward(x)``: images as floats in [0, 1] (``[B, C, H, W]``, ideally at ``image_size``) →
    pooled features ``[B, feature_dim]``, the features ssl-bench's own evaluations use.
    ``model``: the bare timm model (expects normalised input); ``prepare(uint8 images)``: the
    evaluation view (centre crop or resize to ``image_size``, scaled to [0, 1])."""

    def __init__(self, model: nn.Module, mean: Optional[torch.Tensor], std: Optional[torch.Tensor],
                 image_size: Optional[int], info: dict):
        super().__init__()
        self.model = model
        c = int(mean.numel()) if mean is not None else 1
        self.register_buffer("mean", (mean if mean is not None else torch.zeros(c)).reshape(1, -1, 1, 1).float())
        self.register_buffer("std", (std if std is not None else torch.ones(c)).reshape(1, -1, 1, 1).float())
        self.image_size = image_size
        self.info = info
        self.feature_dim = int(info.get("feature_dim") or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        from ssl_bench.augment import center_view

        return center_view(images, self.image_size) if self.image_size else images.float() / 255.0


def _backbone_block(recipe: dict) -> dict:
    return dict(recipe.get("backbone") or {})


def export_backbone(run: str | Path, out: str | Path, force: bool = False) -> dict:
    """Write the backbone of a run directory (or checkpoint file) to ``out``; returns what was written
    (without the weights)."""
    from ssl_bench import __version__, runs
    from ssl_bench.backbones import TimmBackbone
    from ssl_bench.run_loader import load_run

    out = runs.check_output(out, "--out", force)  # never a run's own file (its checkpoint), even with --force
    trained = load_run(run, "cpu")
    if out.resolve() == trained.path.resolve():
        raise SSLBenchError(f"--out {out} is the checkpoint being exported; choose another file")
    bb = trained.backbone
    block = _backbone_block(trained.recipe)
    if not isinstance(bb, TimmBackbone):
        raise SSLBenchError(
            f"backbone '{block.get('name')}' is not a timm model (registered by a plug-in); export writes timm "
            "backbones — save trained.backbone.state_dict() from ssl_bench.run_loader.load_run instead"
        )
    norm = trained.normalize
    info = {
        "format": FORMAT,
        "timm_name": bb.name,
        "in_chans": int(bb.in_chans),
        "small_image_stem": bool(block.get("small_image_stem", False)),
        "stem_pool": bool(block.get("stem_pool", False)),
        "timm_kwargs": dict(block.get("kwargs") or {}),
        "feature_dim": int(bb.num_features),
        "image_size": trained.view_size,
        "mean": norm.mean.flatten().tolist() if norm is not None else None,
        "std": norm.std.flatten().tolist() if norm is not None else None,
        "epoch": trained.epoch,
        "source": str(trained.path),
        "recipe": trained.recipe,
        "ssl_bench_version": __version__,
    }
    check_timm_kwargs(info["timm_kwargs"], f"run {run}: recipe key backbone.kwargs")  # what load_backbone accepts
    info["pretrained_cfg"] = run_pretrained_cfg(bb.model, info, tag=f"ssl-bench.{trained.recipe.get('name', 'run')}"
                                                f"-seed{trained.recipe.get('seed', 0)}-e{trained.epoch}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in bb.model.state_dict().items()}
    if out.suffix == ".safetensors":
        sidecar = runs.check_output(out.with_suffix(".json"), "--out (its .json beside it)", force)
        from safetensors.torch import save_file

        runs.atomic_write(
            out, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT, "ssl_bench": json.dumps(info)})
        )
        runs.atomic_write_text(sidecar, json.dumps(timm_config(info), indent=1) + "\n")
    else:
        runs.atomic_write(out, lambda tmp: torch.save({**info, "state_dict": state}, tmp))
    return info


def run_pretrained_cfg(model: nn.Module, info: dict, tag: str) -> dict:
    """timm's ``pretrained_cfg`` for a trained backbone: the run's normalisation, input size and a tag
    instead of ImageNet's, so that ``timm.data.resolve_data_config({}, model=model)`` makes the run's
    evaluation view; no ``url`` or ``hf_hub_id`` (nothing to download)."""
    base = dict(getattr(model, "pretrained_cfg", None) or {})
    size = info.get("image_size")
    cfg = {k: base[k] for k in ("first_conv", "classifier", "architecture") if k in base}
    cfg.update({"tag": tag, "num_classes": 0, "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"})
    if size:  # tuples, as timm's own configs (a JSON file holds them as lists)
        cfg["input_size"] = (int(info["in_chans"]), int(size), int(size))
    if info.get("mean") is not None:
        cfg["mean"], cfg["std"] = tuple(info["mean"]), tuple(info["std"])
    return cfg


def timm_config(info: dict) -> dict:
    """The ``.json`` beside a ``.safetensors`` export: the fields of a timm hub ``config.json``
    (``architecture``, ``num_classes``, ``pretrained_cfg``) and how ssl-bench rebuilds the stem."""
    keep = ("in_chans", "small_image_stem", "stem_pool", "timm_kwargs", "feature_dim", "image_size", "epoch")
    return {"architecture": info["timm_name"], "num_classes": 0, "in_chans": info["in_chans"],
            "num_features": info["feature_dim"], "pretrained_cfg": info["pretrained_cfg"],
            "ssl_bench": {"format": FORMAT, **{k: info[k] for k in keep},
                          "ssl_bench_version": info["ssl_bench_version"]}}


def load_backbone(path: str | Path, device: str | torch.device = "cpu") -> PretrainedBackbone:
    """The pre-trained backbone of a run directory, a run checkpoint, or an ``ssl-bench export`` file,
    in eval mode: ``load_backbone(p)(x)`` gives the features ssl-bench's evaluations use for images
    ``x`` in [0, 1] at the training view size (``.prepare(uint8 images)`` makes that view)."""
    from ssl_bench.backbones import TimmBackbone

    p = Path(path).expanduser()
    state = (_read_safetensors(p) if p.suffix == ".safetensors" else _try_export(p)) if p.is_file() else None
    if state is not None:  # an export file (read once), or else a run checkpoint
        _check_export(state, p)
        try:
            bb = TimmBackbone(state["timm_name"], in_chans=state["in_chans"],
                              small_image_stem=state.get("small_image_stem", False),
                              stem_pool=state.get("stem_pool", False), kwargs=state.get("timm_kwargs") or None)
            bb.model.load_state_dict(state["state_dict"])
        except Exception as e:  # options timm refuses, weights of another shape: the file does not fit itself
            lines = str(e).splitlines() or [""]
            first = next((ln.strip() for ln in lines if "size mismatch" in ln), lines[0])
            raise SSLBenchError(f"backbone export {p} does not rebuild timm '{state['timm_name']}': "
                                f"{type(e).__name__}: {first[:200]}") from None
        mean = torch.tensor(state["mean"]) if state.get("mean") is not None else None
        std = torch.tensor(state["std"]) if state.get("std") is not None else None
        info = {k: v for k, v in state.items() if k != "state_dict"}
        bb.model.pretrained_cfg = {**dict(bb.model.pretrained_cfg or {}),
                                   **run_pretrained_cfg(bb.model, info, tag=f"ssl-bench.{p.stem}")}
        net = PretrainedBackbone(bb.model, mean, std, state.get("image_size"), info)
    else:
        from ssl_bench.run_loader import load_run

        trained = load_run(p, "cpu")
        norm = trained.normalize
        info = {"source": str(trained.path), "recipe": trained.recipe, "epoch": trained.epoch,
                "feature_dim": int(getattr(trained.backbone, "num_features", 0) or 0)}
        model = getattr(trained.backbone, "model", None)
        if model is not None and hasattr(model, "pretrained_cfg"):  # timm's data config: the run's view
            cfg = {"in_chans": int(getattr(trained.backbone, "in_chans", 3)), "image_size": trained.view_size,
                   "mean": norm.mean.flatten().tolist() if norm else None,
                   "std": norm.std.flatten().tolist() if norm else None}
            model.pretrained_cfg = {
                **dict(model.pretrained_cfg or {}),
                **run_pretrained_cfg(model, cfg, tag=f"ssl-bench.{trained.recipe.get('name', 'run')}"),
            }
        # timm's model, as an export's
        bare = trained.backbone.model if isinstance(trained.backbone, TimmBackbone) else trained.backbone
        net = PretrainedBackbone(bare, norm.mean.flatten() if norm else None,
                                 norm.std.flatten() if norm else None, trained.view_size, info)
    net.requires_grad_(True)  # ready to fine-tune; eval mode for features
    return net.to(device).eval()


def check_timm_kwargs(kwargs, where: str) -> None:
    """Only :data:`TIMM_KWARGS`, with plain values (numbers, strings, booleans, lists of them)."""
    if kwargs is None:
        return
    if not isinstance(kwargs, dict):
        raise SSLBenchError(f"{where}: timm keyword arguments must be a mapping, got {type(kwargs).__name__}")
    for key, value in kwargs.items():
        if key not in TIMM_KWARGS:
            raise SSLBenchError(f"{where}: timm keyword argument '{key}' is not one an export may carry "
                                f"(architecture options only, e.g. drop_rate, global_pool, img_size)")
        plain = (str, int, float, bool, type(None))
        listed = isinstance(value, (list, tuple)) and all(isinstance(v, plain) for v in value)
        if not (isinstance(value, plain) or listed):
            raise SSLBenchError(f"{where}: timm keyword argument '{key}' must be a number, string or list of them")


def _check_export(state: dict, path: Path) -> None:
    """What an export file says about its backbone, checked before timm is called: a model in timm's
    local list (no ``hf-hub:`` or other prefixed name that timm would fetch), known keyword arguments
    only, channels, flags, statistics and weights of the right types.  One line naming the file."""
    import timm

    from ssl_bench import runs

    def bad(what: str) -> SSLBenchError:
        return SSLBenchError(f"backbone export {path}: {what}; not loaded")

    name = state.get("timm_name")
    if not isinstance(name, str) or ":" in name or not timm.is_model(name):
        raise bad(f"timm_name {_shown(name)} is not a model of timm's local list (timm.list_models())")
    check_timm_kwargs(state.get("timm_kwargs"), f"backbone export {path}")
    chans = state.get("in_chans")
    if isinstance(chans, bool) or not isinstance(chans, int) or not 1 <= chans <= MAX_IN_CHANS:
        raise bad(f"in_chans must be a whole number from 1 to {MAX_IN_CHANS}, got {_shown(chans)}")
    for flag in ("small_image_stem", "stem_pool"):
        if not isinstance(state.get(flag, False), bool):
            raise bad(f"{flag} must be true or false")
    size = state.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096):
        raise bad(f"image_size must be a whole number of pixels, got {_shown(size)}")
    for key in ("mean", "std"):
        values = state.get(key)
        if values is None:
            continue
        ok = isinstance(values, list) and len(values) == chans and all(runs.finite_float(v) is not None for v in values)
        if not ok or (key == "std" and min(values) <= 0):
            positive = ", all positive" if key == "std" else ""
            raise bad(f"{key} must be {chans} finite numbers (one per channel){positive}")
    weights = state.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise bad("state_dict must map parameter names to tensors")


def _shown(value) -> str:
    """A short text of a value read from a file (an integer too long to print is named by its type)."""
    try:
        return repr(value)[:60]
    except ValueError:
        return f"a {type(value).__name__} too long to print"


def _read_safetensors(path: Path) -> dict:
    """A ``.safetensors`` export: its weights and the description in its metadata (no pickle at all)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise SSLBenchError(f"backbone export {path} could not be read as safetensors: "
                            f"{(str(e).splitlines() or [type(e).__name__])[0][:160]}") from None
    if meta.get("format") != FORMAT or "ssl_bench" not in meta:
        raise SSLBenchError(f"{path} is a safetensors file without ssl-bench's description (metadata 'ssl_bench'); "
                            "load plain timm weights with backbone.weights: PATH or timm.create_model")
    from ssl_bench.safeyaml import load_json

    info = load_json(meta["ssl_bench"], f"backbone export {path} (metadata)")
    if not isinstance(info, dict):
        raise SSLBenchError(f"backbone export {path}: its metadata is not a mapping")
    return {**info, "state_dict": weights}


def _try_export(path: Path) -> Optional[dict]:
    """The contents of an export file (read with weights_only), or None for anything else (a run checkpoint)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None
