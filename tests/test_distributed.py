"""Data-parallel training on CPU: 2 processes, gloo, real BreastMNIST images.

* Global-batch selection: TracIn, FS, FNC and the oracle on 2 ranks choose exactly what one
  process chooses on the same global batch (even and uneven slices), and the objectives' losses
  (BYOL with targets gathered from the other rank; SimCLR with negatives gathered with gradients)
  sum over ranks to the single-process loss, with the same gradients.
* ``ssl-bench run --devices 2``: a 1-epoch BYOL+TracIn run completes and writes one run directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_bench.distributed import Shard, globalize, localize

REPO = Path(__file__).resolve().parents[1]
BREAST = str(REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml")
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_out(out, shard: Shard):
    """This rank's rows of a StepOutput computed for the whole global batch."""
    from ssl_bench.objectives.base import StepOutput, ViewOutput

    views = tuple(ViewOutput(**{f: None if getattr(v, f) is None else shard.local(getattr(v, f))
                                for f in ("h", "z", "t", "p", "a")})
                  for v in out.views)
    return StepOutput(views)


SELECTOR_CASES = [  # (recipe block, runs its own forward on light views)
    ({"name": "tracin", "k": 2, "views": "train"}, False),  # symmetric loss, the step's own forward
    ({"name": "tracin", "k": 1, "views": "light"}, True),  # the paper's light views, q(view 1) vs z'(view 2)
    ({"name": "tracin", "k": 1, "views": "train", "symmetric": False}, False),
    ({"name": "fs", "k": 2, "views": "light"}, True),
    ({"name": "fs", "k": 1, "views": "train", "feature": "projection"}, False),
    ({"name": "fnc", "k": 3, "threshold": 0.0}, False),
    ({"name": "oracle", "k": 2}, False),
]


def _selection_worker(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        from ssl_bench.augment import AUGMENTATIONS
        from ssl_bench.backbones import build_backbone
        from ssl_bench.data import DATASETS
        from ssl_bench.objectives import OBJECTIVES
        from ssl_bench.objectives.simclr import multi_positive_nt_xent
        from ssl_bench.selectors import SELECTORS, SelectionContext

        data = DATASETS.build({"name": "medmnist", "flag": "breastmnist", "download": False})
        torch.manual_seed(0)  # the same network on both ranks, as DDP makes it
        backbone = build_backbone({"name": "resnet18", "small_image_stem": True, "stem_pool": True}, in_chans=1)
        # float64 and eval-mode BatchNorm: a sample's outputs do not depend on the rest of its slice,
        # so one rank's forward of its slice equals those rows of the global forward
        obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 64, "projection_dim": 32}, backbone).double().eval()
        augment, light = AUGMENTATIONS.build({"name": "byol"}), AUGMENTATIONS.build({"name": "light"})

        def norm(v):
            return ((v - 0.5) / 0.25).double()

        for n in (24, 25):  # even slices (12 + 12) and uneven ones (13 + 12)
            idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(n))[:n]
            x, labels = data.train.images[idx], data.train.labels[idx]
            v1, v2 = (norm(v) for v in augment(x, torch.Generator().manual_seed(1)))
            with torch.no_grad():
                full = obj(v1, v2)
            shard = Shard.split(n, rank, WORLD)
            local = _local_out(full, shard)

            def ctx(out, xs, lab, sh, views, seed=7):
                return SelectionContext(
                    out=out, labels=lab, indices=torch.arange(len(lab)), objective=obj,
                    generator=torch.Generator().manual_seed(seed), lr=0.05, views=views,
                    light_views=lambda: tuple(norm(v) for v in light(xs, torch.Generator())), shard=sh,
                )

            for cfg, own_forward in SELECTOR_CASES:
                if own_forward and n % WORLD == 0:  # float64 forwards are slow on CPU: uneven slices only
                    continue
                sel = SELECTORS.build(dict(cfg))
                sel.setup(obj, data)
                want = sel.select(ctx(full, x, labels, None, (v1, v2)))  # one process, the global batch
                got = sel.select(ctx(local, shard.local(x), shard.local(labels), shard,
                                     (shard.local(v1), shard.local(v2))))
                assert got.shape == (shard.local_size, cfg["k"]), (cfg, got.shape)
                assert torch.equal(got, shard.local(want)), (cfg, n, rank, got, shard.local(want))
                assert not (got == torch.arange(shard.local_size)[:, None] + shard.offset).any()  # never itself
                if cfg["name"] == "tracin" and cfg["views"] == "train":
                    crosses = ((got >= 0) & ((got < shard.offset) | (got >= shard.offset + shard.local_size))).sum()
                    assert int(dist_sum(crosses.clone())) > 0, "no positive was chosen on the other rank"
                    # BYOL: the loss pulls towards targets held by the other rank (gathered, detached);
                    # summed over ranks with weights local/total it is the one-process loss
                    single = obj.loss(full, want)
                    part = obj.loss(replace(local, shard=shard), got) * (shard.local_size / shard.total)
                    assert torch.allclose(dist_sum(part.detach()), single, rtol=1e-10, atol=1e-12)
                    # a local sample pulled towards a remote target: differs from local-only indexing
                    assert crosses == 0 or not torch.allclose(part, obj.loss(local, localize(got, shard))
                                                              * (shard.local_size / shard.total))

            # SimCLR with extra positives across ranks: negatives gathered *with* gradients
            g = torch.Generator().manual_seed(n)
            z1, z2 = (torch.randn(n, 16, generator=g, dtype=torch.float64),
                      torch.randn(n, 16, generator=g, dtype=torch.float64))
            extra = torch.randint(0, n, (n, 2), generator=g)
            extra[extra == torch.arange(n)[:, None]] = -1
            zg1, zg2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
            single = multi_positive_nt_xent(zg1, zg2, 0.5, extra, 0.7)
            single.backward()
            zl1, zl2 = shard.local(z1).clone().requires_grad_(), shard.local(z2).clone().requires_grad_()
            part = multi_positive_nt_xent(zl1, zl2, 0.5, shard.local(extra), 0.7,
                                          shard=shard) * (shard.local_size / shard.total)
            part.backward()
            assert torch.allclose(dist_sum(part.detach()), single.detach(), rtol=1e-10)
            assert torch.allclose(zl1.grad, shard.local(zg1.grad), rtol=1e-8, atol=1e-12)
            assert torch.allclose(zl2.grad, shard.local(zg2.grad), rtol=1e-8, atol=1e-12)
    finally:
        dist.destroy_process_group()


def dist_sum(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t


@pytest.mark.slow
def test_global_batch_selection_equals_single_process():
    """2 gloo processes on real BreastMNIST: TracIn / FS / FNC / oracle choose what one process
    chooses on the same global batch; BYOL's and SimCLR's losses and gradients match."""
    mp.spawn(_selection_worker, args=(_free_port(),), nprocs=WORLD, join=True)


def test_shard_split_and_index_maps():
    sizes = [Shard.split(25, r, 2) for r in range(2)]
    assert [s.sizes for s in sizes] == [(13, 12), (13, 12)] and [s.offset for s in sizes] == [0, 13]
    s1 = sizes[1]
    assert torch.equal(s1.local(torch.arange(25)), torch.arange(13, 25))
    e = torch.tensor([[0, -1], [11, 3]])
    assert torch.equal(globalize(e, s1), torch.tensor([[13, -1], [24, 16]]))
    assert torch.equal(localize(torch.tensor([[13, 2], [-1, 24]]), s1), torch.tensor([[0, -1], [-1, 11]]))


def test_shard_plan_cuts_every_part_of_a_plan_and_keeps_global_extras():
    from ssl_bench.distributed import shard_plan
    from ssl_bench.selectors.base import BatchPlan

    view1, view2 = torch.arange(10, 15), torch.arange(20, 25)
    extra = torch.tensor([[3], [4], [-1], [0], [1]])  # global batch positions
    plan = BatchPlan(view1, view2, extra)
    assert shard_plan(plan, 0, 1) == (plan, None)
    p0, s0 = shard_plan(plan, 0, 2)
    p1, s1 = shard_plan(plan, 1, 2)
    assert (s0.sizes, s0.offset, s1.offset) == ((3, 2), 0, 3)
    assert p0.view1.tolist() == [10, 11, 12] and p1.view1.tolist() == [13, 14]
    assert p0.view2.tolist() == [20, 21, 22] and p1.view2.tolist() == [23, 24]
    assert p1.extra.tolist() == [[0], [1]]  # still global positions
    same = BatchPlan(view1, view1)
    q, _ = shard_plan(same, 1, 2)
    assert q.view2 is q.view1 and q.extra is None  # "same images for both views" survives the cut
    none, shard = shard_plan(BatchPlan(torch.arange(3), torch.arange(3)), 0, 2)
    assert none is None and shard.sizes == (2, 1)  # a rank would get one image: the batch is skipped


@pytest.mark.slow
@pytest.mark.e2e
def test_two_process_byol_tracin_run_writes_one_run_directory(tmp_path):
    """`ssl-bench run --devices 2` (Fabric DDP, gloo): 1 epoch of BYOL+TracIn on BreastMNIST."""
    out_dir = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "ssl_bench.cli", "run", BREAST, "--devices", "2", "--quiet",
        "--set", "train.epochs=1", "--set", "selector.name=tracin", "--set", "train.batch_size=128",
        "--set", "objective.hidden_dim=256", "--set", "train.threads=1", "--set", "evaluate=[{name: knn, k: 20}]",
        "--set", f"out_dir={out_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = [p for p in (out_dir / "byol_breastmnist").iterdir()]
    assert len(run_dirs) == 1, run_dirs  # rank 1 wrote nothing of its own
    run_dir = run_dirs[0]
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "loss.png", "metrics.jsonl", "recipe.yaml",
                                                         "results.json", "steps.jsonl"]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1  # one epoch, one line (not one per rank)
    m = metrics[0]
    # summed over ranks: 4 global batches of 128 (546 images, drop_last), anchors of both ranks
    assert m["step"] == 4 and m["selector_coverage"] == 1.0 and m["selector_precision"] is not None
    assert m["images_per_s"] * m["epoch_time_s"] == pytest.approx(512)
    res = json.loads((run_dir / "results.json").read_text())
    assert res["world_size"] == 2 and res["selector"] == "tracin" and res["eval"]["knn"]["auc"] > 0.55
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert proc.stdout.count("run directory:") == 1  # only rank 0 speaks


@pytest.mark.slow
@pytest.mark.e2e
def test_two_process_run_in_host_mode_equals_device_mode(tmp_path):
    """`--devices 2` with train.data_on: host (each rank gathers only its slice, one step ahead) gives
    the same epoch losses and weights as the same DDP run with the split on the device."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = {}
    for mode in ("device", "host"):
        out[mode] = tmp_path / mode
        cmd = [
            sys.executable, "-m", "ssl_bench.cli", "run", BREAST, "--devices", "2", "--quiet", "--out", str(out[mode]),
            "--set", "train.epochs=2", "--set", "selector.name=tracin", "--set", "train.batch_size=128",
            "--set", "objective.hidden_dim=256", "--set", "train.threads=1", "--set", "evaluate=[]",
            "--set", f"train.data_on={mode}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    loss = {m: [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()] for m, d in out.items()}
    assert len(loss["host"]) == 2 and loss["host"] == loss["device"]
    w = {m: torch.load(d / "checkpoints" / "last.pt", weights_only=True)["objective"] for m, d in out.items()}
    assert all(torch.equal(w["host"][k], w["device"][k]) for k in w["device"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--devices", "2", "--set", "train.sync_batchnorm=true", "--set", "train.device=cpu"],
         "train.sync_batchnorm needs CUDA"),
        (["--devices", "2", "--set", "train.batch_size=3"], "is the global batch: with 2 processes it must be ≥ 4"),
        (["--devices", "0"], "train.devices must be ≥ 1"),
    ],
)
def test_bad_distributed_settings_fail_in_one_line_before_any_write(args, message, tmp_path):
    from click.testing import CliRunner

    from ssl_bench.cli import main

    out = tmp_path / "never"
    res = CliRunner().invoke(main, ["run", BREAST, "--quiet", "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output
    assert not out.exists()
