"""How much does TracIn selection cost?  Step-time ratios and the closed form vs autograd.

Measures, in one process and interleaved (so that machine load hits every variant alike), on
real HAM10000 images at 28 px (the JPEG zip through the isic adapter), ResNet-18, batch 256:

1. step time of BYOL + TracIn (on-the-fly, reusing the step's forward)  ÷  BYOL      target ≤ 1.02
   (also printed: on-the-fly on the paper's light views, which needs one extra no-grad forward)
2. step time of BYOL + TracIn (pretrained, frozen network on light views)  ÷  BYOL   target ≤ 1.25
3. time of the TracIn matrix from per-sample autograd gradients (torch.func.vmap + Gram)
   ÷ time of ``tracin_matrix`` (two GEMMs)                                             target ≥ 100×

Also printed: where the extra time goes, timed inside the same steps (the selector's ``choose`` and
the objective's ``loss``, whose TracIn version adds the extra-positive terms), as a fraction of the
BYOL step; this direct cost is not subject to the step-to-step jitter of whole-step ratios.

Usage:  python benchmarks/tracin_overhead.py [--reps 40] [--batch 256] [--size 28] [--small-stem] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SSL_BENCH_MEDMNIST_ROOT", str(REPO.parent / "shared" / "data" / "medmnist"))
HAM = Path(os.environ.get("SSL_BENCH_SHARED_DATA",
                          REPO.parent / "shared" / "data")) / "subsets" / "ham10000_200x150_jpeg.zip"

from ssl_bench.device import reuse_freed_memory, select_device  # noqa: E402
from ssl_bench.recipe import load_recipe  # noqa: E402
from ssl_bench.step import Batch  # noqa: E402
from ssl_bench.train import training_step  # noqa: E402


def make_step(recipe_cfg: dict, device: torch.device, seed: int = 0):
    """The step `ssl-bench run` trains this recipe with (seeded network, Fabric, normalisation)."""
    return training_step(load_recipe(data={**recipe_cfg, "seed": seed}), device=str(device), total_steps=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=28, help="image size (px) the HAM10000 JPEGs are decoded to")
    ap.add_argument("--small-stem", action="store_true", help="3×3 stride-1 stem (heavier backbone → smaller ratios)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = select_device(args.device)
    if device.type == "cpu":  # the allocator setting `ssl-bench run` uses on a CPU
        reuse_freed_memory()

    base = {
        "data": {"name": "isic", "root": str(HAM), "size": args.size},
        "backbone": {"name": "resnet18", "small_image_stem": args.small_stem},
        "objective": {"name": "byol"},
        "augment": {"name": "byol"},
        "train": {"batch_size": args.batch, "epochs": 1},
        "evaluate": [],
    }
    variants = {
        "byol": {"selector": {"name": "none"}},
        "tracin_online": {"selector": {"name": "tracin", "views": "train"}},
        "tracin_online_light": {"selector": {"name": "tracin", "views": "light"}},
    }
    steps = {name: make_step({**base, **v}, device) for name, v in variants.items()}
    # a pretrained checkpoint: the BYOL objective itself, saved as a run checkpoint (weights do not
    # matter for timing; the frozen forward is the same)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "last.pt"
        byol_step, comp = steps["byol"]
        torch.save({"objective": byol_step.objective.state_dict(),
                    "recipe": load_recipe(data={**base, **variants["byol"]}).cfg}, ckpt)
        steps["tracin_pretrained"] = make_step({**base, "selector": {"name": "tracin", "model": "pretrained",
                                                                     "checkpoint": str(ckpt)}}, device)

    data = comp.data.train
    g = torch.Generator().manual_seed(0)
    times = {name: [] for name in steps}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # every part of the real step, timed inside it: (object, attribute) per part
    part_of = {"augment": ("augment",), "forward": ("model",), "choose": ("selector", "choose"),
               "loss": ("objective", "loss"),
               "backward": ("backward",), "update": ("optimizer", "step"), "ema": ("objective", "momentum_update")}
    parts = {name: {p: [] for p in part_of} for name in steps}
    for name, (step, _) in steps.items():
        for part, path in part_of.items():
            owner = step if len(path) == 1 else getattr(step, path[0])
            _timed(owner, path[-1], parts[name][part], sync)
    names = list(steps)
    for rep in range(args.reps + 1):  # first round = warm-up
        idx = torch.randperm(len(data), generator=g)[: args.batch]
        x, y = data.images[idx].to(device), data.labels[idx].to(device)
        k = rep % len(names)
        for name in names[k:] + names[:k]:  # the order rotates, so that no variant always runs first
            step = steps[name][0]
            sync()
            t = time.perf_counter()
            step(Batch(x, y, idx.to(device)), 0.1, rep)
            sync()
            if rep:
                times[name].append(time.perf_counter() - t)
            else:
                for v in parts[name].values():
                    v.clear()
    med = {k: statistics.median(v) for k, v in times.items()}
    # each variant against the BYOL step of the same repetition (same batch, same machine state): the
    # median of these paired ratios is what is reported
    ratio = {k: statistics.median(a / b for a, b in zip(v, times["byol"])) for k, v in times.items()}
    print(f"device {device}, batch {args.batch}, resnet18 {'small stem' if args.small_stem else 'standard stem'}, "
          f"{args.size} px HAM10000, {args.reps} interleaved reps (median; "
          f"ratio = median of per-repetition ratios to byol)")
    # the extra work itself: selection + loss beyond BYOL's own loss, per step, over BYOL's step time
    part_ms = {k: {p: statistics.median(v) * 1000 for p, v in d.items()} for k, d in parts.items()}
    direct = {k: (d["choose"] + d["loss"] - part_ms["byol"]["choose"] - part_ms["byol"]["loss"]) / (med["byol"] * 1000)
              for k, d in part_ms.items()}
    print("  parts (median ms): " + ", ".join(part_of))
    for k in med:
        print(f"  {k:22s} " + " ".join(f"{part_ms[k][p]:7.1f}" for p in part_of))
    for k, v in med.items():
        r = sorted(a / b for a, b in zip(times[k], times["byol"]))
        q1, q3 = r[len(r) // 4], r[(3 * len(r)) // 4]
        print(f"  {k:22s} {v * 1000:8.1f} ms/step  {args.batch / v:7.1f} img/s  ratio {ratio[k]:.3f} (IQR "
              f"{q1:.3f}-{q3:.3f})"
              f"  selection {part_ms[k]['choose']:6.1f} ms, loss {part_ms[k]['loss']:4.1f} ms: "
              f"direct cost {100 * direct[k]:+.2f} %")

    # 3. closed form vs per-sample autograd on a real predictor output
    from torch.func import functional_call, grad, vmap

    from ssl_bench.selectors.tracin import tracin_matrix

    step0 = steps["byol"][0]
    obj = step0.objective
    with torch.no_grad():  # the paper's light views of the last batch
        x1, x2 = (step0.prep(v) for v in step0.selection_augment(x, None))
        v1 = obj.online(x1)
        q, z, a = v1.p.float(), obj.target(x2).float(), v1.a.float()
    last = obj.predictor.layers[-1]
    params = {k: p.detach() for k, p in last.named_parameters()}

    def loss_one(p, a_i, z_i):
        qi = functional_call(last, p, (a_i[None],))[0]
        return 2 - 2 * torch.nn.functional.cosine_similarity(qi, z_i, dim=0)

    def autograd_matrix():
        G = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, a, z)["weight"].flatten(1)
        return G @ G.T

    def closed():
        return tracin_matrix(q, z, a)

    for f in (autograd_matrix, closed):
        f()
    t_auto = statistics.median(_time(autograd_matrix, sync) for _ in range(3))
    t_closed = statistics.median(_time(closed, sync) for _ in range(20))
    M_auto, M_closed = autograd_matrix(), closed()
    rel = float((M_auto - M_closed).norm() / M_auto.norm())
    same_argmax = bool(torch.equal(M_auto.fill_diagonal_(-float("inf")).argmax(1),
                                   M_closed.fill_diagonal_(-float("inf")).argmax(1)))
    print(f"  per-sample autograd TracIn {t_auto * 1000:.1f} ms vs closed form {t_closed * 1000:.3f} ms; "
          f"relative difference {rel:.2e}; same top-1 for every row: {same_argmax}")
    print(f"tracin_overhead_ratio={ratio['tracin_online']:.3f}")
    print(f"tracin_direct_cost={1 + direct['tracin_online']:.3f}")
    print(f"tracin_light_ratio={ratio['tracin_online_light']:.3f}")
    print(f"tracin_pretrained_ratio={ratio['tracin_pretrained']:.3f}")
    print(f"per_sample_speedup={t_auto / t_closed:.0f}")


def _timed(obj, attr: str, sink: list, sync) -> None:
    """Wrap ``obj.attr`` so that each call's wall time is appended to ``sink`` (seconds)."""
    f = getattr(obj, attr)

    def wrapper(*a, **k):
        sync()
        t = time.perf_counter()
        out = f(*a, **k)
        sync()
        sink.append(time.perf_counter() - t)
        return out

    setattr(obj, attr, wrapper)


def _time(f, sync):
    sync()
    t = time.perf_counter()
    f()
    sync()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
