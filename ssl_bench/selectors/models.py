"""Selectors that look at the batch through a network: the one being trained or a frozen one.

"On-the-fly" variants (``model: online``) use the model being trained; "pretrained" variants
(``model: pretrained``, ``checkpoint: RUN_DIR_OR_PT``, or the producing recipe's ``.yaml``, which
``ssl-bench run`` resolves to that recipe's finished run, see :mod:`ssl_bench.producer_runs`) load the
encoder and heads of an earlier run (e.g. a vanilla BYOL run of the same recipe) through
:func:`ssl_bench.run_loader.load_run` once, freeze them, and never train them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from ssl_bench.errors import SSLBenchError
from ssl_bench.selectors.base import SelectionContext, Selector

__all__ = ["batchnorm_stats_frozen", "load_frozen", "ModelSelector"]


@contextlib.contextmanager
def batchnorm_stats_frozen(model: nn.Module):
    """Forward in train mode without touching BatchNorm running statistics (momentum 0)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            m.num_batches_tracked.copy_(nbt)


def load_frozen(path, data, key: str):
    """A trained run to score with (:func:`ssl_bench.run_loader.load_run`), checked against the data it
    will see: another channel count is one line now, not a failure at the first step."""
    from ssl_bench.run_loader import load_run

    run = load_run(path, in_chans=data.channels, key=key)
    # (without its statistics it was built for the data)
    if run.normalize is not None and run.in_chans != data.channels:
        raise SSLBenchError(f"recipe key {key}: {run.path} was trained on {run.in_chans}-channel images and this "
                            f"recipe's data has {data.channels}; score with a run of the same data")
    return run


@dataclass(eq=False)
class ModelSelector(Selector):
    """Base of batch selectors that need network outputs on (light or training) views.

    Options shared by every such selector: ``model`` (``online``: the network being trained;
    ``pretrained``: the frozen network of ``checkpoint``) and ``views`` (``light``: the paper's light
    views; ``train``: the training step's augmented views — for ``online`` the step's own forward is
    reused, no extra cost)."""

    model: Literal["online", "pretrained"] = "online"  # online: the network being trained; pretrained: a frozen one
    checkpoint: Optional[str] = None  # model pretrained: a run directory, .pt file, or the recipe that produces it
    views: Literal["light", "train"] = "light"  # light: the paper's light views; train: the step's own views

    # options that only one value of ``model`` takes: switching ``model`` in an ``extends:`` child or
    # with ``--set`` drops the parent's (the on-the-fly baselines extend the pretrained flagship)
    MODE_OPTIONS: ClassVar[dict] = {"model": {"pretrained": ("checkpoint",)}}

    def __post_init__(self):
        super().__post_init__()
        if self.model not in ("online", "pretrained"):
            raise SSLBenchError(f"recipe key selector.model must be online or pretrained, got '{self.model}'")
        if self.views not in ("light", "train"):
            raise SSLBenchError(f"recipe key selector.views must be light or train, got '{self.views}'")
        if self.model == "pretrained" and not self.checkpoint:
            raise SSLBenchError("recipe key selector.checkpoint is required with selector.model: pretrained")
        if self.model == "online" and self.checkpoint:
            raise SSLBenchError("recipe key selector.checkpoint is only used with selector.model: pretrained")
        self.frozen: Optional[nn.Module] = None

    def variant(self) -> str:
        return "-pretrained" if self.model == "pretrained" else ""

    def setup(self, objective: nn.Module, data) -> None:
        if self.model == "pretrained":
            self.use_frozen(load_frozen(self.checkpoint, data, "selector.checkpoint").objective)

    def use_frozen(self, net: nn.Module) -> None:
        """Select with an already loaded frozen network (shared between selectors)."""
        lacking = self.missing(getattr(net, "provides", frozenset()))
        if lacking:
            raise SSLBenchError(f"selector.checkpoint: the frozen network ({type(net).__name__}) lacks the {lacking} "
                                "this selector needs")
        self.frozen = net

    def network(self, ctx: SelectionContext) -> nn.Module:
        if self.frozen is not None:
            return self.frozen
        return ctx.objective

    def reuses_step(self) -> bool:
        """True when the training step's own forward is what this selector scores (no extra cost)."""
        return self.model == "online" and self.views == "train"

    def inputs(self, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.views == "light":
            if ctx.light_views is None:
                raise SSLBenchError("this selector needs light views but the training loop provided none")
            return ctx.light_views()
        return ctx.views

    @contextlib.contextmanager
    def no_grad_forward(self, ctx: SelectionContext, net: Optional[nn.Module] = None):
        """No autograd at all (``torch.inference_mode``: ≈ 3 % of a BYOL step faster than
        ``no_grad`` for the two light-view passes on 2 CPU cores); a frozen network moves to the
        data's device once; the online network's BatchNorm statistics are left untouched by the
        selector's extra forward.  What the block computes are inference tensors: use them in the
        selection maths only (the indices a selector returns are made outside the block)."""
        online = ctx.objective if self.frozen is None else None
        net = net if net is not None else self.network(ctx)
        with torch.inference_mode(), ctx.autocast():  # the run's precision (bf16-mixed: bf16 forwards)
            if net is not online:  # a frozen network
                device = ctx.labels.device  # the training device
                if getattr(net, "_selector_device", None) != device:  # move once, not every step
                    net.to(device)
                    net._selector_device = device
                yield net
            else:
                with batchnorm_stats_frozen(net):
                    yield net
