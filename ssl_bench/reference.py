"""Options of every component, read from the code: ``ssl-bench list KIND NAME`` and the generated
``docs/recipe_reference.md`` (``ssl-bench list --markdown > docs/recipe_reference.md``; a test fails
when the file drifts from the code).

An option's type and default come from the signature (or dataclass field); its help line from the
docstrings (````name``: text``) or the comment above / beside the field in the source.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any, Callable

from ssl_bench.registry import factory_params

__all__ = ["plain", "option_rows", "is_built_in", "markdown_reference", "recipe_rows"]

_ROLE = re.compile(r":\w+:`~?([^`<]+?)(?:\s*<[^>]*>)?`")


def plain(text: str) -> str:
    """Docstring text without reST markup (``:func:`x``` → x, ````x```` → x)."""
    text = _ROLE.sub(lambda m: m.group(1).split(".")[-1] if m.group(0).find("~") >= 0 else m.group(1), text)
    return text.replace("``", "`").replace("`", "")


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    m = re.match(r"(.+?(?<!e\.g)(?<!i\.e)(?<!etc)(?<!et al)(?<!\bvs)(?<!\bcf)\.)(\s+[A-Z(`]|$)", text)
    return (m.group(1) if m else text).strip()


def _doc_help(obj: Any) -> dict[str, str]:
    """``name``: help pairs in the docstrings of a class, its __init__ and its bases."""
    out: dict[str, str] = {}
    targets = list(inspect.getmro(obj)) if inspect.isclass(obj) else [obj]
    for t in targets:
        for src in (t, getattr(t, "__init__", None)):
            doc = inspect.getdoc(src) if src is not None else None
            if not doc or src is object.__init__:
                continue
            for m in re.finditer(
                r"``(\w+)``\s*(?:\([^)]*\))?\s*:\s*(.+?)(?=(?:;\s*``\w+``\s*(?:\([^)]*\))?\s*:)|\n\n|$)",
                doc, flags=re.S,
            ):
                text = m.group(2)
                if doc[:m.start()].rstrip().endswith("("):  # "(``root``: a folder or a .zip)": the parenthesis only
                    text = _until_unbalanced_paren(text)
                out.setdefault(m.group(1), _first_sentence(plain(text)))
    return out


def _until_unbalanced_paren(text: str) -> str:
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return text[:i]
    return text


def _source_help(obj: Any) -> dict[str, str]:
    """Comments above or beside ``name: type = default`` lines (dataclass fields, ``__init__`` params)."""
    out: dict[str, str] = {}
    targets = [c for c in inspect.getmro(obj) if c is not object] if inspect.isclass(obj) else [obj]
    for t in targets:
        try:
            lines = inspect.getsource(t).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            s = line.strip()
            if s.startswith("#"):
                above.append(s.lstrip("# ").strip())
                continue
            m = re.match(r"(\w+)\s*:\s*[^=]+?(?:=\s*[^#]+?)?,?\s*(?:#\s*(.*))?$", s)
            if m and m.group(1) not in out:
                text = m.group(2) or " ".join(above)
                if text:
                    out[m.group(1)] = _first_sentence(plain(text))
            above = []
    return out


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    m = re.fullmatch(r"Optional\[(.*)\]", text)
    return f"{m.group(1)} | None" if m else text


def _default(value: Any) -> str:
    if value is inspect.Parameter.empty or value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(list(value)) if isinstance(value, tuple) else repr(value) if isinstance(value, str) else str(value)


def option_rows(factory: Callable[..., Any]) -> list[tuple[str, str, str, str]]:
    """``(option, type, default, help)`` for each option a component takes (positional arguments the
    framework passes, such as the backbone of an objective, are left out)."""
    import functools

    documented = factory.func if isinstance(factory, functools.partial) else factory  # timm models: TimmBackbone
    helps = {**_source_help(documented), **_doc_help(documented)}
    rows = []
    for name, p in factory_params(factory).items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty and name in ("backbone", "encoder", "data", "objective"):
            continue  # supplied by ssl-bench, not by the recipe
        ann = p.annotation
        for target in ((factory, factory.__init__) if inspect.isclass(factory) else (factory,)):
            try:  # a dataclass's hints resolve in its own module; a plain class's on its __init__
                hints = __import__("typing").get_type_hints(target)
            except Exception:
                continue
            if name in hints:
                ann = hints[name]
                break
        rows.append((name, _type_name(ann), _default(p.default), helps.get(name) or COMMON_HELP.get(name, "")))
    return rows


def train_rows() -> list[tuple[str, str, str, str]]:
    from ssl_bench.recipe import TrainConfig

    helps = _source_help(TrainConfig)
    rows = []
    import typing

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        default = (
            f.default if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        )
        rows.append((f.name, _type_name(hints.get(f.name, f.type)), _default(default),
                     helps.get(f.name) or COMMON_HELP.get(f.name, "")))
    return rows


# One line per option name, for components whose docstrings do not describe it (a component's own
# ``name``: text or field comment wins)
COMMON_HELP = {
    "size": "side in pixels (data: images are resized to it once; augment: the view size, null = the data's)",
    "crop": "random resized crop (false: the whole image)",
    "crop_scale": "area range of the random crop, as fractions of the image",
    "hflip": "probability of a horizontal flip",
    "vflip": "probability of a vertical flip",
    "rot90": "also rotate by a random multiple of 90°",
    "rotation": "maximum rotation angle in degrees (uniform in ±rotation)",
    "padding_mode": "how a rotation fills the corners",
    "jitter": "probability of colour jitter",
    "brightness": "colour jitter: brightness strength",
    "contrast": "colour jitter: contrast strength",
    "saturation": "colour jitter: saturation strength (RGB only)",
    "hue": "colour jitter: hue strength (RGB only)",
    "grayscale": "probability of converting to grayscale (RGB only)",
    "blur": "probability of a Gaussian blur (a pair: view 1, view 2)",
    "blur_sigma": "range of the blur's σ in pixels (kernel ≈ 10 % of the view size)",
    "solarize": "probability of solarization (a pair: view 1, view 2)",
    "projection_dim": "output size of the projection head",
    "hidden_dim": "hidden size of the projection (and prediction) MLP",
    "prediction_hidden_dim": "hidden size of the prediction MLP (null: hidden_dim)",
    "momentum_base": "EMA momentum of the target network at the start (cosine-increased to momentum_end)",
    "momentum_end": "EMA momentum at the end of training",
    "temperature": "softmax temperature",
    "output_dim": "dimension of the map (2 for a 2-D embedding)",
    "stages": "epochs of the three stages (their sum must equal train.epochs)",
    "stage_lr": "per-stage multiplier of train.lr",
    "stage_warmup": "per-stage warm-up epochs",
    "test_split": "split the metrics are reported on",
    "train_split": "split the classifier or neighbours are fitted on",
    "select_split": "split the best epoch / hyper-parameter is chosen on",
    "select_metric": "metric the best epoch is chosen by",
    "window": "how images of more than 8 bits (16-bit PNG/TIFF, DICOM) become 8-bit: percentile (0.5–99.5 % → 0–255; a "
              "DICOM's own window), minmax or full",
    "fit": "how an image becomes square: center_crop (shorter side to size, centre crop) or squash",
    "cache": "keep the decoded, resized images in a cache file (decoded once per size)",
    "cache_dir": "where decoded-image caches go (default: $SSL_BENCH_CACHE_DIR or ~/.cache/ssl-bench)",
    "skip_corrupt": "skip images that cannot be decoded (listed in results.json) instead of stopping",
    "workers": "threads that decode images in parallel (null: up to 8)",
    "split_seed": "seed of the random train / val / test split",
    "split_ratios": "train, val, test fractions of the split carved when the files give none",
    "val_fraction": "fraction of the training images held out for validation",
    "class_names": "names of the classes, in label order (null: from the files)",
    "task": "multi-class or multi-label (null: from the labels)",
    "display_name": "the dataset's name in tables and plots",
    "root": "folder (or .zip) holding the dataset's files",
    "flag": "MedMNIST dataset, e.g. breastmnist, pneumoniamnist, retinamnist",
    "download": "download the file when it is missing (never during tests)",
    "as_rgb": "repeat grayscale images to 3 channels",
    "channels": "1 (grayscale) or 3 (RGB); null: from the images",
    "layout": "which official file layout the folder holds",
    "manifest": "a CSV of image path, label (and group) instead of class folders",
    "path": "the .npz file",
    "images": "name of the images array in the file",
    "labels": "name of the labels array in the file",
    "group": "name of an array of group ids (patient, lesion): splits keep each group in one split",
    "split": "name of an array of split names (train / val / test) in the file",
    "drop_path_rate": "stochastic depth rate (timm)",
    "weights": "a local weights file to start from (never downloaded)",
    "k": "number of neighbours / positives",
    "epochs": "training epochs",
    "batch_size": "images per step",
    "lr": "learning rate",
    "weight_decay": "weight decay",
    "momentum": "SGD momentum",
    "optimizer": "sgd, adamw or lars",
    "schedule": "learning-rate schedule after the warm-up",
    "warmup_epochs": "epochs of warm-up (fractions allowed)",
    "min_lr": "learning rate at the end of the cosine decay",
    "checkpoint_every": "write checkpoints/last.pt every N epochs (and at the end)",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "channels_last": "channels-last memory format (faster convolutions)",
    "drop_last": "drop the last incomplete batch of an epoch",
    "threads": "CPU threads (null: PyTorch's default)",
    "nodes": "nodes for data-parallel training",
    "label_fraction": "fraction of the training labels used (stratified subset)",
    "seeds": "label subsets / fine-tuning runs averaged (their std is reported)",
    "from_scratch": "train the architecture from random weights instead (a baseline)",
    "C": "inverse regularisation strength (null: chosen on the validation split)",
    "max_iter": "iterations of the solver",
    "feature": "which features: backbone or head",
    "silhouette_samples": "images the silhouette score is computed on (subsampled)",
    "seed": "seed of the evaluation's own randomness",
    "plot": "save a PNG of the map in the run directory",
    "thumbnails": "image thumbnails drawn at cluster positions in the PNG",
    "protocol": "the evaluation protocol block run on the other dataset",
    "missing": "what to do when the other dataset's files are absent: fail or skip",
    "input": "what t-SNE embeds: backbone features or raw pixels",
    "perplexity": "t-SNE perplexity",
    "pca_dim": "PCA dimensions before t-SNE",
    "threshold": "similarity above which a sample counts as a false negative",
    "alpha": "strength of the feature transformation (interpolation / extrapolation)",
    "mode": "add the extra positive, or replace the second view by it",
    "bank_size": "size of the memory bank of past embeddings",
}

TOP_LEVEL_HELP = {
    "name": "the run's folder under out_dir (default: the recipe file's name)",
    "method": "the row name in compare's tables (default: from objective and selector, e.g. BYOL-TracIn)",
    "seed": "seeds the data order, augmentations, selector and initialisation",
    "out_dir": "where run directories go: <out_dir>/<name>/seed<seed>-<time>",
    "plugins": "Python files beside the recipe that register components",
    "extends": "a recipe file this one overrides (paths relative to this file)",
    "data": "the dataset block (see Datasets below)",
    "augment": "the pre-training views (see Augmentations)",
    "selection_augment": "the light views pretrained / TracIn selectors score (see Augmentations)",
    "backbone": "a timm model name or a registered backbone (see Backbones)",
    "objective": "the SSL loss (see Objectives)",
    "selector": "where extra positives come from (see Selectors)",
    "train": "the loop and optimiser (see train below)",
    "evaluate": "a list of evaluation blocks (see Evaluations)",
    "headline_metric": "the metric compare tabulates by default and the summary names",
    "log": "loggers besides metrics.jsonl: csv, tensorboard, wandb, mlflow (see ssl_bench/loggers.py)",
}


def _table(rows, header=("option", "type", "default", "help")) -> list[str]:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(f"`{cell(r[0])}`" if i == 0 else cell(v) for i, v in enumerate(r)) + " |" for r in rows]
    return out


def is_built_in(factory) -> bool:
    """Registered by ssl-bench itself (not by a plug-in file or another package)."""
    return getattr(factory, "__module__", "").split(".")[0] == "ssl_bench"


def markdown_reference() -> str:
    """The whole recipe reference as Markdown (deterministic: registries in a fixed order, names sorted)."""
    import ssl_bench.augment  # noqa: F401  (importing registers the built-in components)
    import ssl_bench.backbones  # noqa: F401
    import ssl_bench.data  # noqa: F401
    import ssl_bench.evaluate  # noqa: F401
    import ssl_bench.objectives  # noqa: F401
    import ssl_bench.selectors  # noqa: F401
    from ssl_bench.recipe import DEFAULTS
    from ssl_bench.registry import ALL_REGISTRIES

    lines = [
        "# Recipe reference",
        "",
        "Generated from the code by `ssl-bench list --markdown > docs/recipe_reference.md`;",
        "`tests/test_reference.py` fails when this file and the code disagree. `ssl-bench list KIND NAME`",
        "prints one component's table. Components registered by plug-ins are not listed here.",
        "",
        "## Top-level keys",
        "",
    ]
    from ssl_bench.recipe import TOP_LEVEL_TYPES

    def kind(k: str) -> str:
        names = {str: "str", int: "int", dict: "mapping", list: "list", type(None): "null"}
        return " | ".join(names.get(t, t.__name__) for t in TOP_LEVEL_TYPES.get(k, ()))

    top = [(k, kind(k),
            _default(v) if not isinstance(v, (dict, list))
            else (str(v) if v else "[]" if isinstance(v, list) else "{}"),
            TOP_LEVEL_HELP.get(k, "")) for k, v in DEFAULTS.items()]
    top.insert(0, ("extends", "str", "null", TOP_LEVEL_HELP["extends"]))
    lines += _table(top, header=("key", "type", "default", "help"))
    lines += ["", "## train", ""] + _table(train_rows())
    titles = {"datasets": "data", "augmentations": "augment / selection_augment", "backbones": "backbone",
              "objectives": "objective", "selectors": "selector", "evaluations": "evaluate[]"}
    for kind, key in titles.items():
        reg = ALL_REGISTRIES[kind]
        lines += ["", f"## {kind.capitalize()} (`{key}`)", ""]
        if kind == "backbones":
            lines += ["Any timm model by name (`ssl-bench list backbones 'resnet*'`), with these options:", ""]
        for e in sorted(reg.entries(), key=lambda e: e.name):
            if not is_built_in(e.factory):
                continue
            lines += [f"### `{e.name}`", "", plain(e.summary), ""]
            rows = option_rows(e.factory)
            lines += (_table(rows) if rows else ["No options."]) + [""]
        if kind == "backbones":
            from ssl_bench.backbones import TimmBackbone

            lines += ["### any timm model", "", plain(inspect.getdoc(TimmBackbone).splitlines()[0]), ""]
            lines += _table([r for r in option_rows(TimmBackbone) if r[0] != "name"]) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _method_of(cfg: dict) -> str:
    """The method name a run of ``cfg`` reports (``BYOL-TracIn-pretrained``): the recipe's ``method``, or
    the objective's and selector's display names, as ``ssl-bench run`` makes it (nothing trained)."""
    from ssl_bench.components import method_name
    from ssl_bench.objectives import OBJECTIVES
    from ssl_bench.selectors import SELECTORS

    if cfg.get("method"):
        return cfg["method"]
    return method_name(cfg, SELECTORS.build(cfg["selector"], key="selector"), OBJECTIVES.get(cfg["objective"]["name"]))


def recipe_rows(root: Path) -> list[tuple[str, str, str, str]]:
    """``(path, method, dataset, summary)`` of every recipe under ``root`` (read as data; nothing imported)."""
    from ssl_bench.recipe import load_recipe

    rows = []
    for p in sorted(root.rglob("*.yaml")):
        head, extends = [], None
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith("#"):
                head.append(line.lstrip("# ").strip())
                continue
            if line.startswith("extends:"):
                extends = line.split(":", 1)[1].strip()
            if line.strip() and not line.startswith("extends:"):
                break
        summary = _first_sentence(" ".join(head)) if head else (f"extends {extends}" if extends else "")
        summary = summary if len(summary) <= 110 else summary[:107].rstrip() + "…"
        try:
            cfg = load_recipe(p, load_plugins=False).cfg
            data = cfg["data"]
            dataset = data.get("flag") or data.get("name")
            method = _method_of(cfg)
        except Exception as e:  # a recipe that does not load here (e.g. needs a plug-in) is still listed
            dataset, method = "?", f"({type(e).__name__})"
        rows.append((str(p.relative_to(root.parent)) if root.parent in p.parents else str(p), method, str(dataset),
                     summary))
    return rows
