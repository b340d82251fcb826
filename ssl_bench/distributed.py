"""Data-parallel training: DDP through Lightning Fabric, and selection over the *global* batch.

``ssl-bench run RECIPE --devices N [--nodes M]`` (or the same command under ``torchrun``) trains
with DistributedDataParallel through Lightning Fabric (strategy ``ddp``: NCCL on GPUs, gloo on
CPU).  ``train.batch_size`` is the **global** batch: every rank draws the same seeded permutation
and takes its slice of each global batch (:class:`Shard`).

Batch selectors (FS, TracIn, FNC, the oracle) choose positives among the samples of *all* ranks:
each rank all-gathers the small per-sample tensors the selector scores (features; or TracIn's
loss gradients ``g`` and predictor inputs ``a``), scores its own rows against every column of
the global batch and returns indices into the global batch.  The objective then pulls each local
sample towards the (detached, gathered) targets of its positives, so gradients flow only through
the local samples, and the choice equals single-process selection on the same global batch
(``tests/test_distributed.py``).  As in SimCLR's and MoCo v3's large-batch training
(arXiv 2002.05709, 2104.02057), only small per-sample tensors cross the network, never images.

Only rank 0 writes the run directory; epoch metrics are summed over ranks first.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ssl_bench.errors import SSLBenchError

__all__ = [
    "Shard", "shard_plan", "globalize", "localize", "sum_epoch_stats", "gather_with_grad",
    "launched_by_torchrun", "resolve_world", "build_fabric", "launch", "convert_sync_batchnorm",
    "revert_sync_batchnorm", "broadcast_object",
]


# -------------------------------------------------------------------------------------------------
# The global batch and this rank's slice of it
# -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """This rank's rows ``[offset, offset + local_size)`` of a global batch of ``sum(sizes)``.

    Slices are as even as possible (the first ``n % world`` ranks take one more), so that a last
    batch smaller than the others (``train.drop_last: false``) is split too.
    """

    rank: int
    sizes: tuple[int, ...]

    @classmethod
    def split(cls, n: int, rank: int, world_size: int) -> Shard:
        base, extra = divmod(n, world_size)
        return cls(rank, tuple(base + (r < extra) for r in range(world_size)))

    @property
    def world_size(self) -> int:
        return len(self.sizes)

    @property
    def offset(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def local_size(self) -> int:
        return self.sizes[self.rank]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor that every rank holds for the whole global batch."""
        return x[self.offset : self.offset + self.local_size]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``t`` (``[local_size, …]``) in rank order: ``[total, …]``,
        detached (no gradient crosses ranks).  One ``all_gather``; uneven slices are padded."""
        t = t.detach().contiguous()
        if self.world_size == 1:
            return t
        if t.shape[0] != self.local_size:
            raise ValueError(f"rank {self.rank} holds {t.shape[0]} rows, its shard has {self.local_size}")
        rows = max(self.sizes)
        if t.shape[0] < rows:
            t = torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])])
        parts = [torch.empty_like(t) for _ in self.sizes]
        dist.all_gather(parts, t)
        return torch.cat([p[:s] for p, s in zip(parts, self.sizes)])


def shard_plan(plan, rank: int, world_size: int):
    """``(this rank's BatchPlan, Shard)`` of a global batch's plan; ``(plan, None)`` in one process;
    ``(None, shard)`` when a rank would get fewer than 2 images (the batch is skipped on all ranks).
    Planned extra positives keep their global batch positions."""
    if world_size == 1:
        return plan, None
    shard = Shard.split(len(plan.view1), rank, world_size)
    if min(shard.sizes) < 2:
        return None, shard
    view1 = shard.local(plan.view1)
    view2 = view1 if plan.view2 is plan.view1 else shard.local(plan.view2)
    return type(plan)(view1, view2, None if plan.extra is None else shard.local(plan.extra)), shard


def globalize(extra: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Local batch positions → global ones (−1 stays −1)."""
    return torch.where(extra >= 0, extra + shard.offset, extra)


def localize(extra: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Global batch positions → this rank's local ones; positives on other ranks become −1."""
    local = extra - shard.offset
    return torch.where((extra >= 0) & (local >= 0) & (local < shard.local_size), local, torch.full_like(extra, -1))


def sum_epoch_stats(loss_sum: torch.Tensor, counts: torch.Tensor, seen: int):
    """One all-reduce of an epoch's (loss sum, selector counts, images seen) over ranks."""
    stats = torch.cat([loss_sum.reshape(1).double(), counts.double(), loss_sum.new_tensor([seen], dtype=torch.float64)])
    stats = all_reduce_sum(stats)
    return stats[0], stats[1:-1].round().long(), int(stats[-1])


class _GatherRows(torch.autograd.Function):
    """:meth:`Shard.gather` with a backward: each rank gets the sum over ranks of the gradient of
    its own rows (what lightly's ``GatherLayer`` does, for uneven slices too)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, shard: Shard) -> torch.Tensor:
        ctx.shard = shard
        return shard.gather(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = all_reduce_sum(grad.contiguous().clone())
        return ctx.shard.local(grad), None


def gather_with_grad(t: torch.Tensor, shard: Shard) -> torch.Tensor:
    """``[total, …]``: every rank's ``t`` in rank order, differentiable (for losses whose negatives
    span the global batch, e.g. SimCLR with positives chosen across ranks)."""
    return t if shard.world_size == 1 else _GatherRows.apply(t, shard)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (no-op in a single process); returns ``t``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# -------------------------------------------------------------------------------------------------
# Fabric: one process, or DDP over devices × nodes
# -------------------------------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    return dist.is_available() and dist.is_torchelastic_launched()


def resolve_world(devices: int, nodes: int) -> tuple[int, int]:
    """``(devices per node, nodes)``; under ``torchrun`` the defaults (1, 1) take torchrun's layout."""
    if devices < 1 or nodes < 1:
        raise SSLBenchError("--devices and --nodes (recipe keys train.devices, train.nodes) must be ≥ 1, got "
                            f"{devices} and {nodes}")
    if launched_by_torchrun():
        import os

        world, local = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_WORLD_SIZE"])
        if (devices, nodes) == (1, 1):
            return local, max(world // local, 1)
        if devices * nodes != world:
            raise SSLBenchError(
                f"--devices {devices} × --nodes {nodes} does not match torchrun's world size {world}; "
                "leave them out under torchrun"
            )
    return devices, nodes


def build_fabric(
    device: torch.device, devices: int, nodes: int, precision: str, sync_batchnorm: bool = False,
    find_unused: bool = False
):
    """Lightning Fabric for ``devices`` × ``nodes`` processes (DDP), or the single ``device``.

    ``find_unused``: some parameters get no gradient in some steps (a staged objective such as
    t-SimCNE freezes parts and leaves its 2-D layer unused in stage 1), which DDP must be told."""
    from lightning_fabric import Fabric

    from ssl_bench.device import resolve_precision

    precision = resolve_precision(precision, device)  # auto: bf16-mixed where the device has native bf16
    devices, nodes = resolve_world(devices, nodes)
    if devices * nodes == 1:  # sync_batchnorm is moot: plain BatchNorm already sees the whole batch
        with _quiet_fabric():
            return Fabric(accelerator=device.type, devices=[device.index] if device.index is not None else 1,
                          precision=precision)
    if device.type not in ("cpu", "cuda"):
        raise SSLBenchError(f"--devices {devices}: data-parallel training runs on cpu or cuda, not {device.type}")
    if device.index is not None:
        raise SSLBenchError(f"recipe key train.device '{device}' pins one GPU; use train.device: cuda with --devices "
                            f"{devices}")
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise SSLBenchError(f"--devices {devices} but this machine has {torch.cuda.device_count()} GPU(s)")
    if nodes > 1 and not launched_by_torchrun():
        import os

        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if not os.environ.get(v)]
        if missing:  # else every process waits for peers that were never told where to meet, silently
            raise SSLBenchError(
                f"--nodes {nodes}: set {', '.join(missing)} on every node (MASTER_ADDR/MASTER_PORT: node 0's address "
                "and a free port; NODE_RANK: 0 … nodes−1), or launch with torchrun"
            )
    if sync_batchnorm and device.type != "cuda":
        raise SSLBenchError("recipe key train.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm does not run on "
                            "CPU)")
    try:
        from lightning_fabric.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=True) if find_unused else "ddp"
        with _quiet_fabric():
            return Fabric(accelerator=device.type, devices=devices, num_nodes=nodes, strategy=strategy,
                          precision=precision)
    except ValueError as e:  # e.g. a device count torchrun disagrees with
        raise SSLBenchError(f"cannot start {devices} × {nodes} processes: {e}") from e


@contextlib.contextmanager
def _quiet_fabric():
    """Without Fabric's "Using bfloat16 Automatic Mixed Precision (AMP)" line: the run's header names
    its precision, and a refused run stays one line."""
    logger = logging.getLogger("lightning_fabric.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def launch(fabric) -> None:
    """Start the other local processes (or join torchrun's) and the process group; no-op for one."""
    if fabric.world_size > 1 or launched_by_torchrun():
        fabric.launch()


def convert_sync_batchnorm(module: nn.Module, enabled: bool, world_size: int) -> nn.Module:
    """BatchNorm → SyncBatchNorm (statistics over the global batch) when asked and data-parallel."""
    if enabled and world_size > 1:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


class BatchNormAnyDim(nn.modules.batchnorm._BatchNorm):
    """Plain BatchNorm for inputs of any rank ≥ 2 (what :func:`revert_sync_batchnorm` makes)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm → plain BatchNorm with the same parameters and statistics (torch only has the
    forward conversion), for work rank 0 does alone (evaluation, fine-tuning)."""
    if isinstance(module, nn.SyncBatchNorm):
        bn = BatchNormAnyDim(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        return bn.to(next(iter(module.state_dict().values())).device) if module.state_dict() else bn
    for name, child in module.named_children():
        new = revert_sync_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled; small objects only)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]

