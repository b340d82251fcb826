"""The path ``ssl-bench run`` executes: the loss the training step back-propagates is the objective's
loss with the selector's positives, the EMA follows the step, and every selector family changes the
loss that a run logs (a selector silently ignored would leave it unchanged)."""

import json

import pytest
import torch
from lightly.utils.scheduler import cosine_schedule

from ssl_bench.distributed import Shard
from ssl_bench.recipe import load_recipe
from ssl_bench.selectors.base import topk_excluding_self
from ssl_bench.selectors.tracin import tracin_matrix_views
from ssl_bench.train import run
from tests.data.layouts import ham_rows, write_ham10000
from tests.helpers import breast_recipe, real_batch, real_step


class Spy:
    """Records what the objective's loss got and returned, and what was back-propagated."""

    def __init__(self, step):
        self.loss_calls, self.backpropagated = [], []
        objective, loss, backward = step.objective, step.objective.loss, step.backward

        def spy_loss(out, extra=None, weight=1.0):
            value = loss(out, extra, weight)
            self.loss_calls.append((out, extra, weight, value))
            return value

        def spy_backward(value):
            self.backpropagated.append(value)
            backward(value)

        objective.loss = spy_loss
        step.backward = spy_backward


@pytest.mark.parametrize("views", ["train", "light"])
def test_the_step_backpropagates_the_loss_with_tracins_positives(breast, views):
    step, comp = real_step(breast_recipe(selector={"name": "tracin", "views": views, "weight": 0.7}), total_steps=50)
    spy = Spy(step)
    res = step(real_batch(breast, 32), lr=0.05, step=3)
    [(out, extra, weight, value)] = spy.loss_calls
    assert spy.backpropagated == [value] and res.loss is value  # what was back-propagated is the objective's loss …
    assert weight == 0.7 and extra is res.extra and extra.shape == (32, 1)  # … with the selector's positives
    if views == "train":  # TracIn on the step's own forward: the top-1 of the closed-form matrix of these outputs
        v1, v2 = out.views
        scores = tracin_matrix_views([v1.p, v2.p], [v2.t, v1.t], [v1.a, v2.a], lr=0.05)
        assert torch.equal(extra, topk_excluding_self(scores, 1))
    with torch.no_grad():
        without = step.objective.loss(out, extra, 0.0)  # the spy records this call too
    assert not torch.allclose(without, value)  # the extra positives are in the loss
    # the EMA after the update uses the momentum of step + 1 (BYOL: 0.99 → 1 cosine over the run)
    assert res.momentum == pytest.approx(cosine_schedule(4, 50, 0.99, 1.0))


@pytest.mark.parametrize("selector", [
    {"name": "fs", "views": "train"}, {"name": "oracle"}, {"name": "fnc", "k": 3, "threshold": -1.0},
])
def test_index_selectors_reach_the_loss(breast, selector):
    step, _ = real_step(breast_recipe(selector=selector))
    spy = Spy(step)
    res = step(real_batch(breast, 32), lr=0.05, step=0)
    [(out, extra, weight, value)] = spy.loss_calls
    assert extra is not None and extra is res.extra and (extra >= 0).any() and weight == 1.0
    assert not torch.allclose(step.objective.loss(out, None, weight), value)


def test_feature_selectors_change_the_targets_the_loss_sees(breast):
    step, _ = real_step(breast_recipe(selector={"name": "ft"}))
    spy = Spy(step)
    choose, raw = step.selector.choose, []
    step.selector.choose = lambda ctx: raw.append(ctx.out) or choose(ctx)  # the forward the selector saw
    step(real_batch(breast, 32), lr=0.05, step=0)
    [(out, extra, _, _)] = spy.loss_calls
    assert extra is None and not torch.allclose(out.views[0].t, raw[0].views[0].t)  # the loss got extrapolated targets
    assert torch.equal(out.views[0].p, raw[0].views[0].p)  # … and the step's own predictions


def test_a_data_parallel_step_scales_its_loss_by_its_share_of_the_global_batch(breast):
    """Rank 0 of 2 with 3 of 5 rows: its mean loss × 2·3/5, so that DDP's gradient average is the
    global batch's (no process group needed: no selector, nothing is gathered)."""
    step, _ = real_step(breast_recipe())
    spy = Spy(step)
    batch = real_batch(breast, 3)
    batch.shard = Shard(rank=0, sizes=(3, 2))
    step(batch, lr=0.05, step=0)
    [(_, _, _, value)] = spy.loss_calls
    assert torch.allclose(spy.backpropagated[0], value * 1.2)


def test_data_parallel_selection_is_global_only_across_ranks_and_for_objectives_that_gather(breast):
    """The selector sees the rank's shard (and chooses on the global batch) only with ≥ 2 ranks and an
    objective whose loss reaches other ranks' targets; otherwise it chooses among the local rows."""
    from ssl_bench.selectors.base import Selection

    step, _ = real_step(breast_recipe(selector={"name": "oracle"}))
    seen, planned_seen, pools_seen = [], [], []

    def choose(ctx):
        seen.append(ctx.shard)
        planned_seen.append(ctx.planned_extra)
        pools_seen.append(ctx.pool_labels)
        return Selection(None, ctx.out, torch.zeros(3, dtype=torch.long))

    step.selector.choose = choose
    spy = Spy(step)
    two, one = Shard(rank=1, sizes=(2, 3)), Shard(rank=0, sizes=(3,))
    planned = torch.tensor([[0], [3], [4]])  # global positions: row 0 is on rank 0, rows 3 and 4 here
    pool = torch.tensor([0, 1, 0, 1, 1])  # the labels of the global batch's 5 rows
    for shard in (two, one, None):
        batch = real_batch(breast, 3)
        batch.shard, batch.planned_extra, batch.pool_labels = shard, planned, pool
        step(batch, lr=0.05, step=0)
    assert seen == [two, None, None]
    assert pools_seen[0] is pool and pools_seen[1:] == [None, None]  # global labels only for a global choice
    assert [c[0].shard for c in spy.loss_calls] == [two, None, None]  # the loss gathers others' targets only then
    assert planned_seen[0] is planned and planned_seen[2] is planned  # planned on the global batch: kept global
    step.objective.global_positives = False  # e.g. a plug-in objective whose loss is rank-local
    batch = real_batch(breast, 3)
    batch.shard, batch.planned_extra = two, planned
    step(batch, lr=0.05, step=0)
    assert seen[-1] is None
    assert planned_seen[-1].tolist() == [[-1], [1], [2]]  # local positions; the other rank's sample: none


@pytest.fixture(scope="module")
def ham_folder(tmp_path_factory):
    """96 real HAM10000 JPEGs in the HAM10000 layout, with their lesion groups."""
    return write_ham10000(tmp_path_factory.mktemp("ham") / "ham", ham_rows(96))


@pytest.fixture(scope="module")
def logged_losses(ham_folder, module_dir):
    """The epoch losses `ssl-bench run` logs for one selector of each family, same seed and data."""
    root = module_dir / "families"
    root.mkdir()
    selectors = {
        "none": {"name": "none"},
        "tracin": {"name": "tracin", "views": "light"},  # batch: indices chosen by a network
        "oracle": {"name": "oracle"},  # batch: indices chosen by labels
        "micle": {"name": "micle", "mode": "replace"},  # dataset: the batch's view 2 changes
        "ft": {"name": "ft"},  # feature: the targets change
        "nn": {"name": "nn", "bank_size": 64},  # feature: virtual targets from a memory bank (from step 2)
    }
    out = {}
    threads = torch.get_num_threads()
    try:
        for name, sel in selectors.items():
            recipe = load_recipe(data={
                "name": name, "data": {"name": "isic", "root": str(ham_folder), "size": 24},
                "backbone": {"name": "resnet18", "small_image_stem": True, "stem_pool": True},
                "objective": {"name": "byol", "hidden_dim": 128, "projection_dim": 64},
                "selector": sel, "train": {"epochs": 1, "batch_size": 16, "threads": 1}, "evaluate": [],
            })
            d = run(recipe, out=root / name, progress=False, log=lambda *a: None)
            out[name] = [json.loads(x)["loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tracin", "oracle", "micle", "ft", "nn"])
def test_each_selector_family_changes_the_logged_loss(logged_losses, family):
    assert len(logged_losses[family]) == 1
    assert logged_losses[family] != logged_losses["none"], family
