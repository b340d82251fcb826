"""t-SimCNE in ssl-bench against the `tsimcne` package, same data, same wall-clock budget, same evaluation.

For each dataset (BreastMNIST; HAM10000 at 28 px, the real JPEGs through the isic adapter), both
systems fit a t-SimCNE map on the training split within ``--budget`` seconds (default 540, about 9
minutes on 2 CPU cores) and embed every image (train, val, test); both maps are then scored by the
medical t-SimCNE poster's protocol (Nwabufo et al., arXiv 2402.14566): kNN (k = 15) accuracy on a
seeded stratified 90 / 10 split of all points and the silhouette of all points by class — for ours
by ``ssl-bench run`` itself (``evaluate: embedding, protocol: poster``), for the package by the same
function on its coordinates, in the same point order, with the same split.

The budget is met by the schedule: each system first runs 2 epochs to measure its time per epoch
(process start and data loading included), then trains ``budget / (seconds per epoch)`` epochs split
as the paper's 1000 / 50 / 450 stages (warm-up 10 / 0 / 10 scaled alike).  ssl-bench runs its
shipped recipe (``recipes/tsimcne/tsimcne_breastmnist.yaml`` / ``tsimcne_ham28.yaml``: the
reference's CIFAR ResNet-18, N(0, 1) 2-D layer, gradient clipping); the package its defaults (its
ResNet-18, lr 0.03·batch/256, batch as ours, 2 data-loader workers on 2 cores).  Installing the
package: ``pip install -c <(echo torch==2.14.1) "tsimcne<0.4"`` (or ``pip install -e ".[bench]"``).

Prints per dataset and system: epochs (stages), wall time, ``knn_accuracy=`` and ``silhouette=``.

Usage:  python benchmarks/tsimcne_vs_package.py [--datasets breastmnist,ham28] [--budget 540]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SSL_BENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
RECIPES = {"breastmnist": "recipes/tsimcne/tsimcne_breastmnist.yaml", "ham28": "recipes/tsimcne/tsimcne_ham28.yaml"}
BATCH = {"breastmnist": 128, "ham28": 256}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "SSL_BENCH_MEDMNIST_ROOT": str(DATA / "medmnist"),
            "SSL_BENCH_HAM10000_ROOT": str(DATA / "subsets" / "ham10000_200x150_jpeg.zip")}


def stages_for(epochs: int) -> tuple[list[int], list[int]]:
    """The paper's 1000 / 50 / 450 proportions for ``epochs`` in all (each stage ≥ 1) and warm-ups
    10 / 0 / 10 scaled."""
    epochs = max(epochs, 3)
    s2 = max(1, round(epochs * 50 / 1500))
    s3 = max(1, round(epochs * 450 / 1500))
    s1 = max(1, epochs - s2 - s3)
    return [s1, s2, s3], [round(10 * s1 / 1000), 0, round(10 * s3 / 450)]


def load_images(dataset: str):
    """uint8 [N, C, H, W] and labels of every split, in the order train, val, test (the poster's points)."""
    sys.path.insert(0, str(REPO))
    os.environ.update({k: v for k, v in _env().items() if k.startswith("SSL_BENCH")})
    from ssl_bench.recipe import load_recipe

    from ssl_bench.data import DATASETS

    data = DATASETS.build(load_recipe(REPO / RECIPES[dataset]).cfg["data"])
    splits = [s for s in ("train", "val", "test") if getattr(data, s) is not None]
    return data, splits


# -------------------------------------------------------------------------------------------------
# The package (in its own process)
# -------------------------------------------------------------------------------------------------
def package_worker(dataset: str, stages: list[int], warmup: list[int], out: str) -> None:
    import torch
    from PIL import Image
    from tsimcne.tsimcne import TSimCNE

    torch.set_num_threads(2)
    data, splits = load_images(dataset)

    class PILSet(torch.utils.data.Dataset):
        def __init__(self, images, labels):
            self.images, self.labels = images.permute(0, 2, 3, 1).numpy(), labels.numpy().reshape(-1)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            a = self.images[i]
            img = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).convert("RGB")
            return img, int(self.labels[i])

    train = PILSet(data.train.images, data.train.labels)
    allsets = torch.utils.data.ConcatDataset([PILSet(data.split(s).images, data.split(s).labels) for s in splits])
    t0 = time.perf_counter()
    tsim = TSimCNE(total_epochs=stages, batch_size=BATCH[dataset], warmup=warmup, num_workers=2)
    tsim.fit(train)
    fit_s = time.perf_counter() - t0
    y = tsim.transform(allsets)
    total_s = time.perf_counter() - t0
    labels = np.concatenate([data.split(s).labels.numpy().reshape(-1) for s in splits])
    np.savez(out, xy=np.asarray(y), labels=labels, fit_s=fit_s, total_s=total_s)


def run_package(dataset: str, stages: list[int], warmup: list[int], tmp: Path) -> dict:
    out = tmp / f"package_{dataset}_{sum(stages)}.npz"
    cmd = [sys.executable, __file__, "--worker", dataset, "--stages", ",".join(map(str, stages)), "--warmup",
           ",".join(map(str, warmup)),
           "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"tsimcne package failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    z = np.load(out)
    return {"xy": z["xy"], "labels": z["labels"], "wall_s": wall, "fit_s": float(z["fit_s"])}


# -------------------------------------------------------------------------------------------------
# ssl-bench (`ssl-bench run`, as a user starts it)
# -------------------------------------------------------------------------------------------------
def run_ours(dataset: str, stages: list[int], warmup: list[int], tmp: Path, evaluate: bool = True) -> dict:
    out = tmp / f"ours_{dataset}_{sum(stages)}"
    sets = [f"objective.stages={stages}", f"objective.stage_warmup={warmup}", f"train.epochs={sum(stages)}",
            f"train.checkpoint_every={sum(stages)}", "train.threads=2"]
    if not evaluate:
        sets.append("evaluate=[]")
    cmd = [sys.executable, "-m", "ssl_bench.cli", "run", str(REPO / RECIPES[dataset]),
           *[x for s in sets for x in ("--set", s)],
           "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ssl-bench run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    res = json.loads((out / "results.json").read_text())
    return {"wall_s": wall, "train_s": res["train"]["wall_time_s"], "eval": res["eval"],
            "command": "ssl-bench " + " ".join(cmd[3:])}


def poster_metrics(xy: np.ndarray, labels: np.ndarray, num_classes: int, task: str, seed: int = 0) -> dict:
    """The poster's protocol on given coordinates (the function ssl-bench's own evaluation uses)."""
    from sklearn.model_selection import train_test_split

    from ssl_bench.evaluate.embedding import map_metrics

    tr, te = train_test_split(np.arange(len(labels)), test_size=0.1, stratify=labels, random_state=seed)
    return map_metrics(xy[tr], labels[tr], xy[te], labels[te], task, num_classes, 15)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="breastmnist,ham28")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds of training per system and dataset")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--stages", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        package_worker(args.worker, [int(s) for s in args.stages.split(",")], [int(s) for s in args.warmup.split(",")],
                       args.out)
        return 0
    try:
        import tsimcne  # noqa: F401
    except ImportError:
        sys.exit('the tsimcne package is not installed: pip install -c <(echo torch==2.14.1) "tsimcne<0.4"')
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for dataset in args.datasets.split(","):
            data, _ = load_images(dataset)
            print(f"== {dataset}: {len(data.train)} training images, budget {args.budget:.0f} s per system", flush=True)
            # 1. seconds per epoch of each system (2 epochs of stage 1, the process included)
            pkg_cal = run_package(dataset, [2], [0], tmp)
            ours_cal = run_ours(dataset, [2, 0, 0], [0, 0, 0], tmp, evaluate=False)
            per_epoch = {"package": pkg_cal["wall_s"] / 2, "ssl-bench": ours_cal["wall_s"] / 2}
            print(f"  seconds per epoch (2-epoch calibration, process and data loading included): "
                  f"package {per_epoch['package']:.1f}, ssl-bench {per_epoch['ssl-bench']:.1f}", flush=True)
            # 2. the budget's schedule, trained; every image embedded; the poster's metrics
            for system in ("package", "ssl-bench"):
                stages, warmup = stages_for(int(args.budget // per_epoch[system]))
                if system == "package":
                    r = run_package(dataset, stages, warmup, tmp)
                    m = poster_metrics(r["xy"], r["labels"], data.num_classes, data.task)
                    wall = r["wall_s"]
                else:
                    r = run_ours(dataset, stages, warmup, tmp)
                    m = r["eval"]["embedding@poster"]
                    wall = r["wall_s"]
                    print(f"  command: {r['command']}")
                print(f"  {system:9s} stages {stages} ({sum(stages)} epochs) · {wall:.0f} s wall · "
                      f"knn_accuracy={m['accuracy']:.3f} silhouette={m['silhouette']:.3f}", flush=True)
                summary.append((dataset, system, m["accuracy"], m["silhouette"], sum(stages), wall))
    print("dataset       system      epochs  wall_s  knn_accuracy  silhouette")
    for d, s, acc, sil, e, w in summary:
        print(f"{d:13s} {s:10s} {e:6d} {w:7.0f}  {acc:12.3f} {sil:11.3f}")
    for d in {x[0] for x in summary}:
        ours = next(x for x in summary if x[0] == d and x[1] == "ssl-bench")
        pkg = next(x for x in summary if x[0] == d and x[1] == "package")
        print(f"{d}: ours_ahead_knn={ours[2] > pkg[2]} ours_ahead_silhouette={ours[3] > pkg[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
