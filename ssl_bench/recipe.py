"""Recipes: YAML files naming one entry of each registry, with ``extends:`` and ``--set``.

A recipe is plain YAML (read with ``yaml.safe_load``)::

    extends: byol_breastmnist.yaml       # optional: path relative to this file
    name: byol_oracle_breastmnist
    seed: 0
    data:      {name: medmnist, flag: breastmnist, size: 28}
    augment:   {name: byol}
    backbone:  {name: resnet18, small_image_stem: true}
    objective: {name: byol}
    selector:  {name: oracle, k: 1}
    train:     {epochs: 10, batch_size: 128, lr: 0.1}
    evaluate:  [{name: linear}, {name: knn, k: 20}]

Merging (``extends:`` and ``--set a.b=c``) is OmegaConf's: mappings merge key by key, lists are
replaced, ``--set`` values are typed by YAML rules (``2`` → int, ``0.1`` → float, ``true`` → bool).
One rule is ours: when a child changes the ``name`` of a component block (``selector``,
``objective``, ...), the parent's options that the new component does not accept are dropped, so
``--set selector.name=none`` on a TracIn recipe just works.

Validation happens before anything is written: unknown keys, wrong types and unknown registry
names raise :class:`~ssl_bench.errors.SSLBenchError` whose one-line message names the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Literal, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_bench import safeyaml
from ssl_bench.catalog import EVALUATIONS, REGISTRIES
from ssl_bench.errors import SSLBenchError
from ssl_bench.registry import accepted_options, check_kwargs, load_plugin_file, option_defaults

__all__ = [
    "TrainConfig", "DEFAULTS", "TOP_LEVEL_TYPES", "Recipe", "Unchecked", "load_recipe", "check_structure", "validate",
    "unregistered_components",
]


@dataclass
class TrainConfig:
    """Optimisation and loop settings (recipe block ``train``)."""

    epochs: int = 100
    batch_size: int = 256
    # sgd, adamw, or lars (SGD with layer-wise trust ratios: lightly's LARS, BYOL's optimiser)
    optimizer: Literal["sgd", "adamw", "lars"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    # no weight decay on BatchNorm/LayerNorm parameters and biases (and, with LARS, no trust ratio for them)
    exclude_bn_bias_wd: bool = False
    lars_trust_coefficient: float = 0.001  # LARS's η (You et al. 2017; BYOL and solo-learn use 0.001)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    # clip every gradient element to ±clip_grad_value before the update (the t-SimCNE reference
    # trains with 4); null = no clipping
    clip_grad_value: Optional[float] = None
    # the learning rate during the warm-up epochs: a linear ramp to lr, or lr itself (BYOL-TracIn §4.1:
    # "lr 0.1 for the first 10 epochs, then cosine decay")
    warmup: Literal["linear", "constant"] = "linear"
    min_lr: float = 0.0
    checkpoint_every: int = 10
    # epochs whose network is also kept as checkpoints/epochNNNN.pt (weights, normalisation, recipe
    # and that epoch's last learning rate): what TracInCP (`selector.checkpoints`) and
    # `ssl-bench positives RUN/checkpoints/epochNNNN.pt` read; changes nothing the run computes
    save_epochs: list[int] = field(default_factory=list)
    device: str = "auto"
    # auto: bf16-mixed where the CPU (AVX512-BF16 / AMX) or GPU has native bf16, else 32-true; or one of
    # Lightning Fabric's precisions ("mixed" keeps weights in fp32 and autocasts the forward).  Positive
    # selection and the losses are fp32 in every precision
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: bool = True
    drop_last: bool = True
    threads: Optional[int] = None
    # data-parallel training (DDP through Lightning Fabric): processes per node × nodes; batch_size
    # is the global batch.  Under torchrun the defaults take torchrun's layout.
    devices: int = 1
    nodes: int = 1
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (CUDA only)
    # where the uint8 training split lives: on the training device, in host memory (each step's
    # images copied over asynchronously; for datasets larger than device memory), or auto (device
    # when it fits half the free device memory); see ssl_bench/data/feed.py
    data_on: Literal["device", "host", "auto"] = "auto"
    # every N epochs, the kNN accuracy (k = 20, cosine) of the backbone on the validation split,
    # logged beside the loss (a monitor; it changes nothing the run computes); 0 = never
    knn_every: int = 0
    # at most this many steps per epoch, each epoch a fresh random subset (Lightning's limit_train_batches):
    # smoke runs and throughput benchmarks on large data; null = every batch of the split
    limit_batches: Optional[int] = None

    def validate(self) -> None:
        if self.epochs < 0:
            raise SSLBenchError("recipe key train.epochs must be ≥ 0 (0 = no pre-training, the Random baseline), got "
                                f"{self.epochs}")
        positive = {"batch_size": self.batch_size, "checkpoint_every": self.checkpoint_every, "devices": self.devices,
                    "nodes": self.nodes}
        for k, v in positive.items():
            if v < 1:
                raise SSLBenchError(f"recipe key train.{k} must be ≥ 1, got {v}")
        if self.limit_batches is not None and self.limit_batches < 1:
            raise SSLBenchError("recipe key train.limit_batches must be ≥ 1 (or null: every batch), got "
                                f"{self.limit_batches}")
        if self.knn_every < 0:
            raise SSLBenchError(f"recipe key train.knn_every must be ≥ 0 (0 = never), got {self.knn_every}")
        for k in ("lr", "weight_decay", "warmup_epochs", "min_lr", "momentum", "lars_trust_coefficient"):
            if getattr(self, k) < 0:
                raise SSLBenchError(f"recipe key train.{k} must be ≥ 0, got {getattr(self, k)}")
        if self.batch_size < 2:
            raise SSLBenchError("recipe key train.batch_size must be ≥ 2 (contrastive losses need pairs)")
        bad = [e for e in self.save_epochs
               if not isinstance(e, int) or isinstance(e, bool) or not 1 <= e <= self.epochs]
        if bad:
            raise SSLBenchError("recipe key train.save_epochs: each entry must be an epoch from 1 to train.epochs "
                                f"({self.epochs}), got {bad[0]!r}")
        import re

        if self.device not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", self.device):
            raise SSLBenchError(f"recipe key train.device must be auto, cpu, cuda, cuda:N or mps, got '{self.device}'")
        if self.clip_grad_value is not None and not self.clip_grad_value > 0:
            raise SSLBenchError("recipe key train.clip_grad_value must be > 0 (or null: no clipping), got "
                                f"{self.clip_grad_value}")
        if self.threads is not None and self.threads < 1:
            raise SSLBenchError(f"recipe key train.threads must be ≥ 1 (or null for the default), got {self.threads}")


# Recipe top-level keys and their defaults.  Component blocks map to registries (see below).
DEFAULTS: dict[str, Any] = {
    "name": None,
    "method": None,
    "seed": 0,
    "out_dir": "runs",
    "plugins": [],
    "data": None,
    "augment": {"name": "byol"},
    "selection_augment": {"name": "light"},
    "backbone": {"name": "resnet18"},
    "objective": {"name": "byol"},
    "selector": {"name": "none"},
    "train": {},
    "evaluate": [{"name": "linear"}, {"name": "knn"}],
    # the metric the recipe's paper reports (BMA for ISIC, AUC for BreastMNIST/ChestX-ray14, the
    # silhouette for t-SimCNE): the run summary names it and `ssl-bench compare` tabulates it by default
    "headline_metric": "auc",
    # loggers besides metrics.jsonl: csv, tensorboard, wandb, mlflow (ssl_bench/loggers.py)
    "log": [],
}
TOP_LEVEL_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str, type(None)),
    "method": (str, type(None)),
    "seed": (int,),
    "out_dir": (str,),
    "plugins": (list,),
    "data": (dict,),
    "augment": (dict,),
    "selection_augment": (dict,),
    "backbone": (dict,),
    "objective": (dict,),
    "selector": (dict,),
    "train": (dict,),
    "evaluate": (list,),
    "headline_metric": (str,),
    "log": (list,),
}


# options ssl-bench fills in itself when a block leaves them null (the backbone's input channels: the data's)
FILLED_AT_BUILD = {"backbone": ("in_chans",)}


# -------------------------------------------------------------------------------------------------
# Loading and merging
# -------------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise SSLBenchError(f"recipe file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SSLBenchError(f"recipe {path} could not be read: {e.strerror or e}") from e
    raw = safeyaml.load(data, f"recipe {path}")  # safe types, bounded aliases, no key twice
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SSLBenchError(f"recipe {path} must be a YAML mapping, got {type(raw).__name__}")
    return raw


def _factory_accepts(block_key: str, name: str) -> Optional[set[str]]:
    """Option names accepted by component ``name`` of ``block_key`` (None = unknown/any)."""
    reg = REGISTRIES.get(block_key)
    if reg is None or name not in reg:
        return None
    return accepted_options(reg.get(name))


def _merge(parent: dict, child: dict, components: bool = True) -> dict:
    """OmegaConf merge, dropping parent options that a renamed component no longer accepts, and
    options of another mode when the child switches a component's mode (a selector's ``model:
    online`` drops the parent's ``checkpoint``).  ``components=False``: a plain merge, which imports
    no component (what :func:`check_structure` reads: it looks at no component's options)."""
    parent = dict(parent)
    for key in list(COMPONENT_KEYS) if components else ():
        p, c = parent.get(key), child.get(key)
        if isinstance(p, dict) and isinstance(c, dict) and "name" in c and c["name"] != p.get("name"):
            accepts = _factory_accepts(key, c["name"])
            parent[key] = {k: v for k, v in p.items() if k == "name" or accepts is None or k in accepts}
        p = parent.get(key)
        if isinstance(p, dict) and isinstance(c, dict):
            parent[key] = {k: v for k, v in p.items() if k not in _mode_dropped(key, p, c)}
        p = parent.get(key)
        if (
            key == "data" and isinstance(p, dict) and isinstance(c, dict)
            and any(k in c and c[k] != p.get(k) for k in DATA_SOURCE_KEYS)
        ):
            # another file: the parent's description of its classes does not carry over
            parent[key] = {k: v for k, v in p.items() if k not in DATA_DESCRIBED_BY_SOURCE or k in c}
    try:
        merged = OmegaConf.merge(OmegaConf.create(parent), OmegaConf.create(child))
        return OmegaConf.to_container(merged, resolve=False)
    except OmegaConfBaseException as e:
        raise SSLBenchError(f"cannot merge recipes: {_omegaconf_msg(e)}") from e


COMPONENT_KEYS = tuple(REGISTRIES)  # the component blocks, in recipe order
# a data block that names another file (or MedMNIST set) drops the class names it inherited
DATA_SOURCE_KEYS = ("path", "flag", "manifest")
DATA_DESCRIBED_BY_SOURCE = ("class_names",)


def _mode_dropped(block_key: str, parent: dict, child: dict) -> set[str]:
    """Parent options that the child's change of a mode key makes meaningless: the component's
    ``MODE_OPTIONS`` maps a key to {value: options that only that value takes}."""
    reg = REGISTRIES.get(block_key)
    name = child.get("name", parent.get("name"))
    if reg is None or not isinstance(name, str) or name not in reg:
        return set()
    modes = getattr(reg.get(name), "MODE_OPTIONS", None) or {}
    dropped: set[str] = set()
    for mode_key, by_value in modes.items():
        if mode_key in child and child[mode_key] != parent.get(mode_key):
            for value, options in by_value.items():
                if value != child[mode_key]:
                    dropped |= {o for o in options if o not in child}
    return dropped


def _omegaconf_msg(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = lines[0] if lines else type(e).__name__
    full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
    return f"{msg} (recipe key {full_key})" if full_key else msg


def _load_chain(path: Path, seen: tuple[Path, ...] = (), load_plugins: bool = True,
                components: bool = True) -> tuple[dict, list[Path]]:
    """Read ``path`` and, recursively, what it ``extends:``; return the merged mapping.  Each file's
    ``plugins`` are resolved relative to that file (and imported as it is read, when
    ``load_plugins``: merging may need their components); the merged recipe lists every plug-in of
    the chain by absolute path."""
    path = path.resolve()
    if path in seen:
        chain = " → ".join(str(p.name) for p in seen + (path,))
        raise SSLBenchError(f"recipe extends itself in a cycle: {chain}")
    raw = _read_yaml(path)
    if "plugins" in raw:
        raw["plugins"] = _plugin_files(raw["plugins"], path.parent, load_plugins)
    parents = raw.pop("extends", None)
    if parents is None:
        return raw, [path]
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise SSLBenchError(f"recipe key extends in {path} must be a path or a list of paths")
    merged: dict = {}
    files: list[Path] = []
    for parent in parents:
        ppath = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not ppath.is_file():
            raise SSLBenchError(f"recipe key extends in {path.name}: file not found: {ppath}")
        pdata, pfiles = _load_chain(ppath, seen + (path,), load_plugins, components)
        merged = _merge(merged, pdata, components) if merged else pdata
        files += pfiles
    plugins = list(dict.fromkeys((merged.get("plugins") or []) + (raw.get("plugins") or [])))
    out = _merge(merged, raw, components)
    if not seen and "name" not in raw:  # a derived recipe's runs go under its own file's name, not its parent's
        out["name"] = None
    if plugins:
        out["plugins"] = plugins
    return out, files + [path]


def _parse_overrides(overrides: list[str]) -> dict:
    for o in overrides:
        if "=" not in o:
            raise SSLBenchError(f"--set expects key=value, got '{o}'")
        key, value = o.split("=", 1)
        if not key.strip():
            raise SSLBenchError(f"--set expects key=value with a key, got '{o}'")
        if "\n" in o or "\r" in o:
            raise SSLBenchError(f"--set {key.strip()}: the value contains a line break; give one key=value per --set")
        if key.count(".") >= safeyaml.MAX_DEPTH:
            raise SSLBenchError(f"--set {key.strip()[:60]}…: nested more than {safeyaml.MAX_DEPTH} levels deep; "
                                "refused")
        digits = [p for p in key.strip().split(".") if p.strip().isdigit()]
        if digits:
            head = key.strip().split(".")[0]
            raise SSLBenchError(
                f"--set {key.strip()}: '{digits[0]}' names no key ({head} is a list: set it whole, "
                f"e.g. --set '{head}=[{{name: knn, k: 20}}]')"
            )
        safeyaml.load(value, f"--set {key.strip()}")  # a value YAML cannot read, or a python/ tag: one line
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=False)
    except OmegaConfBaseException as e:
        raise SSLBenchError(f"cannot parse --set: {_omegaconf_msg(e)}") from e


class _PlainDumper(yaml.SafeDumper):
    """Safe YAML without anchors and aliases: a shared value is written out where it is used."""

    def ignore_aliases(self, data) -> bool:
        return True


@dataclass
class Recipe:
    """A loaded, merged, validated recipe: ``cfg`` is a plain dict, ``path`` its file."""

    cfg: dict
    path: Optional[Path] = None
    files: list[Path] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # the --set list (a pretrained recipe inherits them)
    unchecked: list["Unchecked"] = field(default_factory=list)  # components of plug-ins that were not imported

    def __getitem__(self, key: str) -> Any:
        return self.cfg[key]

    @property
    def train(self) -> TrainConfig:
        return TrainConfig(**self.cfg["train"])

    @property
    def name(self) -> str:
        return self.cfg["name"]

    def to_yaml(self) -> str:
        return yaml.dump(self.cfg, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)


def load_recipe(
    path: str | Path | None = None, overrides: list[str] = (), data: Optional[dict] = None, load_plugins: bool = True
) -> Recipe:
    """Load a recipe file (or a mapping), apply ``extends:`` and ``--set`` overrides, validate.

    ``load_plugins``: import the plug-in files the recipe names (a file's relative to that file, a
    mapping's and ``--set``'s relative to the working directory).  False: import nothing (``ssl-bench
    show``, a run directory someone sent you); components only a plug-in would register are then left
    unchecked and listed in ``Recipe.unchecked``.

    Two passes: the recipe's structure (top-level keys, ``train``, ``log``, every component's name)
    is checked first from a plain merge, which imports no component (no torch: a typo costs
    ~0.1 s); then the components named are imported and the recipe merged and checked in full."""
    structure, _ = _assemble(path, overrides, data, load_plugins=False, components=False)
    check_structure(structure)
    merged, files = _assemble(path, overrides, data, load_plugins=load_plugins, components=True)
    unchecked = [] if load_plugins else unregistered_components(merged)
    validate(merged, skip=unchecked)
    fill_defaults(merged, skip=unchecked)
    return Recipe(
        cfg=merged, path=Path(path).resolve() if path is not None else None, files=files, overrides=list(overrides),
        unchecked=unchecked,
    )


def _assemble(
    path: str | Path | None, overrides: list[str], data: Optional[dict], load_plugins: bool, components: bool
) -> tuple[dict, list[Path]]:
    """The merged recipe (``extends``, defaults, ``--set``, interpolations; ``evaluate`` names as blocks)."""
    if path is not None:
        merged, files = _load_chain(Path(path), load_plugins=load_plugins, components=components)
    else:
        merged, files = dict(data or {}), []
        if "plugins" in merged:
            merged["plugins"] = _plugin_files(merged["plugins"], None, load_plugins)
    merged = _merge(DEFAULTS, merged, components)
    if overrides:
        ov = _parse_overrides(list(overrides))
        if "plugins" in ov:
            ov["plugins"] = list(dict.fromkeys(
                (merged.get("plugins") or []) + _plugin_files(ov["plugins"], None, load_plugins)
            ))
        merged = _merge(merged, ov, components)
    try:
        check_interpolations(merged)
        merged = OmegaConf.to_container(OmegaConf.create(merged), resolve=True)  # ${...} interpolation
    except OmegaConfBaseException as e:
        raise SSLBenchError(f"recipe interpolation failed: {_omegaconf_msg(e)}") from e
    if not merged.get("name"):
        merged["name"] = Path(path).stem if path is not None else "recipe"
    merged["evaluate"] = named_blocks(merged.get("evaluate"), "evaluate")
    return merged, files


_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
ENV_PREFIX = "SSL_BENCH_"


def named_blocks(value: Any, key: str) -> Any:
    """A list of component blocks in which a bare name stands for ``{name: NAME}`` (``evaluate: [linear,
    knn]``, as ``log: [csv]``); anything else in it is one line naming its place."""
    if not isinstance(value, list):
        return value  # validate() names the type the key needs
    out = []
    for i, entry in enumerate(value):
        block = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(block, dict) or not isinstance(block.get("name"), str):
            raise SSLBenchError(f"recipe key {key}[{i}] must be a name or {{name: …, options}}, got {entry!r}")
        out.append(block)
    return out


def check_interpolations(cfg: Any, key: str = "") -> None:
    """``${other.key}`` and ``${oc.env:SSL_BENCH_…[,default]}`` only: a recipe's values are written to
    ``recipe.yaml``, ``results.json`` and the run directory's name, so a recipe may not read other
    environment variables (secrets) or use other resolvers."""
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            check_interpolations(v, f"{key}.{k}" if key else str(k))
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg):
            check_interpolations(v, f"{key}[{i}]")
    elif isinstance(cfg, str) and "${" in cfg:
        for m in _INTERPOLATION.finditer(cfg):
            body = m.group(1).strip()
            if ":" in body:
                resolver, arg = (x.strip() for x in body.split(":", 1))
                if resolver != "oc.env":
                    raise SSLBenchError(
                        f"recipe key {key} uses the resolver '{resolver}'; recipes may use ${{{ENV_PREFIX}…}} "
                        "variables (${oc.env:SSL_BENCH_NAME,default}) and ${other.key} references only"
                    )
                var = arg.split(",", 1)[0].strip()
                if not re.fullmatch(ENV_PREFIX + r"[A-Za-z0-9_]+", var):
                    raise SSLBenchError(
                        f"recipe key {key} reads the environment variable '{var}'; recipes may read only {ENV_PREFIX}* "
                        "variables (a recipe's values are written to recipe.yaml and results.json)"
                    )
            elif not re.fullmatch(r"[\w.\-\[\]]+", body):
                raise SSLBenchError(f"recipe key {key}: '${{{body}}}' is not a ${{other.key}} reference")
        if "${" in _INTERPOLATION.sub("", cfg):
            raise SSLBenchError(f"recipe key {key}: nested or unclosed '${{' interpolation in {cfg!r}")


def _plugin_files(plugins: Any, base_dir: Optional[Path], load: bool) -> list[str]:
    """Absolute paths of a ``plugins`` list (relative to ``base_dir``, the recipe file's folder, or the
    working directory), imported when ``load``."""
    from ssl_bench.registry import plugin_path

    if not isinstance(plugins, list):
        raise SSLBenchError(f"recipe key plugins must be a list of Python file paths, got {plugins!r}")
    out = []
    for i, p in enumerate(plugins):
        if not isinstance(p, str):
            raise SSLBenchError(f"recipe key plugins[{i}] must be a file path, got {p!r}")
        if load:
            load_plugin_file(p, base_dir, key=f"plugins[{i}]")
            out.append(str(plugin_path(p, base_dir, key=f"plugins[{i}]")))
        else:  # not imported: recorded as named (resolved when it exists)
            q = Path(p).expanduser()
            q = q if q.is_absolute() else Path(base_dir or Path.cwd()) / q
            out.append(str(q.resolve()) if q.is_file() else str(q))
    return out


@dataclass(frozen=True)
class Unchecked:
    """A component no registry knows, in a recipe whose plug-in files were not imported (``show``): the
    recipe block (``selector``, ``evaluate[1]``) and the name it gives."""

    key: str
    name: str

    def __str__(self) -> str:
        return f"{self.key} '{self.name}'"


def unregistered_components(cfg: dict) -> list[Unchecked]:
    """Every component no registry knows (a plug-in's, not imported).  A recipe that names no plug-in
    file has none: an unknown name is then an error, as in ``run``."""
    if not cfg.get("plugins"):
        return []
    blocks = [(k, cfg.get(k), reg) for k, reg in REGISTRIES.items()]
    blocks += [(f"evaluate[{i}]", ev, EVALUATIONS) for i, ev in enumerate(cfg.get("evaluate") or [])]
    return [Unchecked(k, block.get("name")) for k, block, reg in blocks
            if isinstance(block, dict) and block.get("name") not in reg]


# -------------------------------------------------------------------------------------------------
# Validation
# -------------------------------------------------------------------------------------------------
RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


def check_structure(cfg: dict) -> None:
    """What can be checked without importing any component (torch, timm, scikit-learn): top-level keys
    and types, ``name``, ``seed``, ``log``, the ``train`` block, and that every component block names
    a member of its registry (a built-in's name is known without importing it, ssl_bench/catalog.py).
    A name no registry knows, in a recipe that names plug-in files, is left to :func:`validate` (the
    plug-in registers it when imported)."""
    for key, value in cfg.items():
        if key not in DEFAULTS:
            close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
            hint = f" — did you mean '{close[0]}'?" if close else f" (keys: {', '.join(DEFAULTS)})"
            raise SSLBenchError(f"unknown recipe key '{key}'{hint}")
        types_ = TOP_LEVEL_TYPES[key]
        if not isinstance(value, types_) or (int in types_ and isinstance(value, bool)):
            if key == "data" and value is None:
                raise SSLBenchError("recipe key data is missing (e.g. data: {name: medmnist, flag: breastmnist})")
            want = " or ".join(
                "null" if t is type(None) else {dict: "a mapping", list: "a list"}.get(t, t.__name__) for t in types_
            )
            raise SSLBenchError(f"recipe key {key} must be {want}, got {type(value).__name__} {value!r}")
    # the name becomes a directory under out_dir: one path component, nothing that climbs out of it
    if not RECIPE_NAME.fullmatch(cfg["name"]) or cfg["name"] in (".", ".."):
        raise SSLBenchError("recipe key name must be letters, digits and . _ + = - (it names the run's folder), got "
                            f"{cfg['name']!r}")
    if not 0 <= cfg["seed"] < 2**63:
        raise SSLBenchError(f"recipe key seed must be in [0, 2**63), got {cfg['seed']}")

    from ssl_bench.loggers import parse_log

    parse_log(cfg["log"])
    check_kwargs(TrainConfig, cfg["train"], key="train", what="train")
    TrainConfig(**cfg["train"]).validate()
    plugins = bool(cfg.get("plugins"))
    blocks = [(key, reg, cfg[key]) for key, reg in REGISTRIES.items()]
    blocks += [(f"evaluate[{i}]", EVALUATIONS, ev) for i, ev in enumerate(cfg["evaluate"])]
    for key, reg, block in blocks:
        if plugins and isinstance(block, dict) and isinstance(block.get("name"), str) and block["name"] not in reg:
            continue  # perhaps a plug-in's: checked once the plug-ins are imported (or listed as unchecked)
        reg.check_name(block, key)


def validate(cfg: dict, skip: Collection[Unchecked] = ()) -> None:
    """Check every component block of a merged recipe against its registry (after
    :func:`check_structure`, which :func:`load_recipe` runs first); raise a one-line SSLBenchError
    naming the first problem.  ``skip``: components left unchecked (of plug-ins that were not imported)."""
    skipped = {u.key for u in skip}
    regs = REGISTRIES
    for key, reg in regs.items():
        block = cfg[key]
        if key in skipped:
            continue
        unset = {k for k in FILLED_AT_BUILD.get(key, ()) if isinstance(block, dict) and block.get(k) is None}
        reg.check({k: v for k, v in block.items() if k not in unset} if unset else block, key=key)
    if not skipped & {"selector", "objective"}:
        check_selector_fits_objective(cfg)

    for i, ev in enumerate(cfg["evaluate"]):
        if f"evaluate[{i}]" not in skipped:
            EVALUATIONS.check(ev, key=f"evaluate[{i}]")

    sel_k = cfg["selector"].get("k", 1)
    bs = cfg["train"].get("batch_size", TrainConfig.batch_size)
    if isinstance(sel_k, int) and sel_k >= bs:
        raise SSLBenchError(f"recipe key selector.k ({sel_k}) must be smaller than train.batch_size ({bs})")


def check_selector_fits_objective(cfg: dict) -> None:
    """A selector that needs what the objective does not provide (TracIn on SimCLR: no predictor) is
    refused now, in one line naming both, not at the first loss."""
    from ssl_bench.objectives import OBJECTIVES
    from ssl_bench.selectors import SELECTORS
    from ssl_bench.selectors.base import check_compatible

    objective = OBJECTIVES.get(cfg["objective"]["name"], "objective.name")
    if not isinstance(objective, type):  # a factory function (plug-in): checked when it is built
        return
    selector = SELECTORS.build(cfg["selector"], key="selector")
    check_compatible(selector, objective, cfg["selector"]["name"], cfg["objective"]["name"])


def fill_defaults(cfg: dict, skip: Collection[Unchecked] = ()) -> None:
    """Write every default into ``cfg`` so that the saved recipe is fully resolved (components in
    ``skip`` — plug-ins not imported — are written as given)."""
    cfg["train"] = dataclasses.asdict(TrainConfig(**cfg["train"]))
    skipped = {u.key for u in skip}
    regs = REGISTRIES
    for key, reg in regs.items():
        block = cfg[key]
        if key in skipped:
            continue
        defaults = option_defaults(reg.get(block["name"]))
        defaults.update({k: None for k in FILLED_AT_BUILD.get(key, ()) if k in defaults})  # null: filled in at build
        cfg[key] = {"name": block["name"], **defaults, **block}
    from ssl_bench.evaluate import Evaluation

    resolved = []
    for i, ev in enumerate(cfg["evaluate"]):
        if f"evaluate[{i}]" in skipped:
            resolved.append(ev)
            continue
        factory = EVALUATIONS.get(ev["name"])
        block = {"name": ev["name"], **option_defaults(factory), **ev}
        # defaults that depend on the rest of the recipe (fine-tuning's augmentation), written in
        resolved.append(
            factory.resolve(block, cfg) if isinstance(factory, type) and issubclass(factory, Evaluation) else block
        )
    cfg["evaluate"] = resolved
