"""``ssl-bench embed``: map new images with a trained run's network (what makes t-SimCNE parametric).

Unlike t-SNE, a trained t-SimCNE network places images it has never seen: they go through the
backbone and the 2-D head exactly as the training images did at evaluation time (the run's
normalisation statistics, the deterministic centre view at the training size).  Any other run
works too: its head's output (z, e.g. 128-D for SimCLR) is written instead of 2-D coordinates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ssl_bench import runs, safeyaml
from ssl_bench.errors import SSLBenchError

__all__ = ["select_option_device", "embed_outputs", "embed_run"]

SPLITS = ("train", "val", "test")


def parse_data_spec(spec: Optional[str], run_data: dict) -> dict:
    """The data block for ``--data``: None → the run's own; a YAML/recipe file → its ``data`` block
    (or the file itself if it is a data block); an inline mapping ``{name: …, …}``; or a MedMNIST flag
    (``pneumoniamnist``) at the run's image size.  YAML is read by the project's safe loader (no alias
    bombs, no key given twice), as recipes are."""
    if spec is None:
        return dict(run_data)
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SSLBenchError(f"--data: file not found: {path}")
        from ssl_bench.recipe import load_recipe

        try:
            text = path.read_bytes()
        except OSError as e:
            raise SSLBenchError(f"--data: cannot read {path}: {e.strerror or e}") from e
        raw = safeyaml.load(text, f"--data {path}") or {}
        if isinstance(raw, dict) and "name" in raw and "data" not in raw and "extends" not in raw:
            return raw  # the file is a data block
        block = load_recipe(str(path)).cfg.get("data")
        if not isinstance(block, dict):
            raise SSLBenchError(f"--data: recipe {path} has no data block")
        return block
    value = safeyaml.load(spec, "--data")
    if isinstance(value, dict):
        if "name" not in value:
            raise SSLBenchError(f"--data mapping needs a 'name' (a dataset of `ssl-bench list datasets`), got {spec!r}")
        return value
    if isinstance(value, str):
        return {"name": "medmnist", "flag": value, "size": run_data.get("size", 28)}
    raise SSLBenchError(f"--data must be a data block, a recipe file or a MedMNIST flag, got {spec!r}")


def select_option_device(name: str, option: str = "--device") -> torch.device:
    """:func:`ssl_bench.device.select_device` for a command-line option: a name torch does not know
    (``--device bogus``) or a device this machine lacks is one line naming ``option``."""
    from ssl_bench.device import select_device

    try:
        return select_device(name)
    except SSLBenchError as e:  # it names the recipe key; here the option was given
        raise SSLBenchError(str(e).replace("recipe key train.device", option)) from None
    except RuntimeError:
        raise SSLBenchError(f"{option} {name!r} is not a device: give auto, cpu, cuda, cuda:N or mps") from None


OUT_SUFFIXES = (".csv", ".npy", ".parquet")


def embed_outputs(out: str | Path, png: Optional[str | Path], force: bool = False) -> None:
    """``--out`` and ``--png``, checked before anything is loaded: known suffixes, two different files,
    never a run's own file, an existing one only with ``force``."""
    from ssl_bench.plots import check_figure_path

    runs.check_output(out, "--out", force)
    if Path(out).suffix.lower() not in OUT_SUFFIXES:
        raise SSLBenchError(f"--out must end in .csv, .npy or .parquet, got '{Path(out).name}'")
    if png is not None:
        runs.check_output(png, "--png", force)
        check_figure_path(png, "--png")  # a figure suffix: never the --out file


MAP_OBJECTIVES = ("tsimcne",)  # objectives whose head output is the 2-D map itself


def write_features(path: Path, parts: dict) -> Path:
    """``parts`` (split → (features, labels)) to ``path`` as .csv, .npy or .parquet, atomically."""
    from ssl_bench.evaluate.embedding import embedding_frame, write_embedding_csv

    suffix = path.suffix.lower()
    if suffix == ".csv":
        return write_embedding_csv(path, parts)
    if suffix == ".npy":
        features = np.concatenate([z for z, _ in parts.values()]).astype(np.float32)
        return runs.atomic_write(path, lambda tmp: _save_npy(tmp, features))
    return runs.atomic_write(path, lambda tmp: embedding_frame(parts).to_parquet(tmp, index=False))


def _save_npy(path: Path, features: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save appends no ".npy" to the temporary name
        np.save(f, features)


def embed_run(
    run_dir: str | Path,
    out: str | Path,
    data: Optional[str] = None,
    split: str = "all",
    png: Optional[str | Path] = None,
    thumbnails: int = 0,
    device: str = "auto",
    batch_size: int = 512,
    features: Optional[str] = None,
    force: bool = False,
) -> dict:
    """Embed the images of ``data`` (default: the run's own) with the run's network; write ``out`` and
    optionally a scatter PNG.  Returns a summary dict.

    ``features``: ``backbone`` (the pooled features evaluations use; the default except for 2-D map
    objectives such as t-SimCNE) or ``head`` (the objective's output: the 2-D map, BYOL's projection).
    ``out`` by suffix: ``.csv`` (split, index, label, x, y or z0…), ``.npy`` (the features only, rows in
    the order train, val, test) or ``.parquet`` (as the CSV; needs pyarrow)."""
    from ssl_bench.augment import center_view
    from ssl_bench.data import DATASETS
    from ssl_bench.evaluate import extract_features
    from ssl_bench.objectives import Embedder
    from ssl_bench.run_loader import load_run

    embed_outputs(out, png, force)  # before anything is loaded or written
    if Path(out).suffix.lower() == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
            raise SSLBenchError("--out .parquet needs pyarrow (pip install pyarrow); or write .csv / .npy")
    if features not in (None, "backbone", "head"):
        raise SSLBenchError(f"--features must be backbone or head, got '{features}'")
    if split not in (*SPLITS, "all"):
        raise SSLBenchError(f"--split must be train, val, test or all, got '{split}'")
    dev = select_option_device(device)
    if not (Path(run_dir) / runs.RECIPE_FILE).is_file():
        raise SSLBenchError(f"{run_dir} is not a finished run directory (needs {runs.RECIPE_FILE} and "
                            f"{runs.CHECKPOINT_DIR}/{runs.LAST_CHECKPOINT})")
    trained = load_run(run_dir, dev)  # weights only; plug-ins load only when the user passes them
    objective, normalize, cfg, epoch = trained.objective, trained.normalize, trained.recipe, trained.epoch
    block = parse_data_spec(data, cfg["data"])
    dataset = DATASETS.build(block, key="--data")
    if dataset.channels != normalize.mean.shape[1]:
        raise SSLBenchError(
            f"--data has {dataset.channels}-channel images but run {run_dir} was trained on "
            f"{normalize.mean.shape[1]}-channel ones"
        )
    view_size = cfg["augment"].get("size") or cfg["data"].get("size") or dataset.image_size
    channels_last = bool(cfg.get("train", {}).get("channels_last", False))
    if channels_last:
        objective.to(memory_format=torch.channels_last)
    if features is None:  # a 2-D map objective's map; otherwise what downstream work uses
        features = "head" if cfg["objective"]["name"] in MAP_OBJECTIVES else "backbone"
    net = Embedder(objective) if features == "head" else objective.backbone
    wanted = [s for s in SPLITS if getattr(dataset, s, None) is not None] if split == "all" else [split]
    if png is not None:  # the output size from two images: a wrong --png is refused before the whole feature pass
        probe = extract_features(net, dataset.split(wanted[0]).images[:2],
                                 lambda x: normalize(center_view(x, view_size)), dev, batch_size=2,
                                 channels_last=channels_last)
        if probe.shape[1] != 2:
            what = "head outputs" if features == "head" else "backbone features"
            raise SSLBenchError(f"--png needs a 2-D embedding; the {what} of run {run_dir} are {probe.shape[1]}-D "
                                "(a 2-D map objective such as t-SimCNE has a 2-D head)")
    parts = {}
    for s in wanted:
        images = dataset.split(s)
        z = extract_features(
            net, images.images, lambda x: normalize(center_view(x, view_size)), dev,
            batch_size=batch_size, channels_last=channels_last,
        )
        parts[s] = (z, images.labels.numpy())
    dim = next(iter(parts.values()))[0].shape[1]
    out = write_features(Path(out), parts)
    summary = {"csv": out, "out": out, "images": sum(len(z) for z, _ in parts.values()), "dim": dim,
               "dataset": dataset.name, "epoch": epoch, "features": features,
               "splits": {s: len(z) for s, (z, _) in parts.items()}}
    if png is not None:
        from ssl_bench.scatter import scatter_embedding

        xy = np.concatenate([z for z, _ in parts.values()])
        labels = np.concatenate([y.reshape(len(y), -1)[:, 0] for _, y in parts.values()])
        imgs = torch.cat([dataset.split(s).images for s in parts]) if thumbnails else None
        title = f"{dataset.name} ({', '.join(parts)}) embedded by {Path(run_dir).name}"
        splits = [s for s, (z, _) in parts.items() for _ in range(len(z))]
        summary["png"] = scatter_embedding(xy, labels, png, dataset.class_names, title, imgs, thumbnails, splits=splits)
    return summary
