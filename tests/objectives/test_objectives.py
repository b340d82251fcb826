import pytest
import torch
import torch.nn.functional as F

from ssl_bench.objectives import OBJECTIVES
from ssl_bench.objectives.base import StepOutput, ViewOutput
from ssl_bench.objectives.simclr import multi_positive_infonce, multi_positive_nt_xent


class _Flat(torch.nn.Identity):
    """A backbone that passes 8-D rows through: for heads and losses tested on given features."""

    num_features = 8


def _views(data, n=16):
    from ssl_bench.augment import AUGMENTATIONS

    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.train), generator=g)[:n]
    v1, v2 = AUGMENTATIONS.build({"name": "byol"})(data.train.images[idx], g)
    return (v1 - 0.5) / 0.25, (v2 - 0.5) / 0.25, data.train.labels[idx]


@pytest.mark.slow
@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_one_training_step_on_real_data(name, breast, tiny_resnet):
    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1))
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.05)
    x1, x2, labels = _views(breast)
    before = {k: p.detach().clone() for k, p in obj.backbone.named_parameters()}  # parameters, not BN statistics
    out = obj(x1, x2)
    assert out.batch_size == 16
    for v in out.views:
        assert v.h.shape == (16, obj.backbone.num_features) and not v.t.requires_grad
    extra = torch.tensor([[(i + 1) % 16] for i in range(16)])
    loss = obj.loss(out, extra)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in obj.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # real gradients, not zeros (timm's ResNets start each block's last BatchNorm at γ = 0, so the
    # block's inner convolutions get none at the first step; the stem and the shortcuts do)
    nonzero = {k for k, p in obj.backbone.named_parameters() if p.grad.abs().sum() > 0}
    assert {"model.conv1.weight", "model.bn1.weight"} <= nonzero and len(nonzero) >= 20, nonzero
    opt.step()
    obj.momentum_update(1, 10)
    moved = {k for k, p in obj.backbone.named_parameters() if not torch.equal(before[k], p)}
    assert nonzero <= moved  # the update moved every weight that had a gradient


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_extra_positive_semantics(name, breast, tiny_resnet):
    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1)).eval()
    x1, x2, _ = _views(breast, n=8)
    with torch.no_grad():
        out = obj(x1, x2)
        base = obj.loss(out)
        none = torch.full((8, 2), -1)
        assert torch.allclose(obj.loss(out, none), base)  # all -1 == no extra positives
        extra = torch.tensor([[(i + 1) % 8, -1] for i in range(8)])
        assert torch.allclose(obj.loss(out, extra, weight=0.0), base)
        assert not torch.allclose(obj.loss(out, extra, weight=1.0), base)


def test_byol_loss_is_two_minus_two_cos(breast, tiny_resnet):
    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 256}, tiny_resnet(1)).eval()
    x1, x2, _ = _views(breast, n=8)
    with torch.no_grad():
        out = obj(x1, x2)
        v1, v2 = out.views
        want = 0.5 * ((2 - 2 * F.cosine_similarity(v1.p, v2.t)).mean()
                      + (2 - 2 * F.cosine_similarity(v2.p, v1.t)).mean())
        assert torch.allclose(obj.loss(out), want, atol=1e-6)
        extra = torch.tensor([[3]] * 8)
        ex = 0.5 * ((2 - 2 * F.cosine_similarity(v1.p, v2.t[3:4])).mean()
                    + (2 - 2 * F.cosine_similarity(v2.p, v1.t[3:4])).mean())
        assert torch.allclose(obj.loss(out, extra, weight=0.5), want + 0.5 * ex, atol=1e-6)
        # the predictor's last-layer input a really is what produced q = W a + b (TracIn needs it)
        last = obj.predictor.layers[-1]
        assert torch.allclose(last(v1.a), v1.p, atol=1e-6)


def test_byol_target_is_ema_with_cosine_momentum(tiny_resnet):
    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 64}, tiny_resnet(1))
    p_on = next(obj.backbone.parameters())
    p_tg = next(obj.target_backbone.parameters())
    assert torch.equal(p_on, p_tg) and not p_tg.requires_grad
    with torch.no_grad():
        p_on.add_(1.0)
    old = p_tg.clone()
    m = obj.momentum_update(0, 100)
    assert m == pytest.approx(0.99)
    assert torch.allclose(p_tg, 0.99 * old + 0.01 * p_on)
    assert obj.momentum_update(99, 100) == pytest.approx(1.0)


def test_simclr_without_extras_equals_lightly_ntxent():
    from lightly.loss import NTXentLoss

    torch.manual_seed(0)
    z1, z2 = torch.randn(12, 16), torch.randn(12, 16)
    for t in (0.1, 0.5):
        assert torch.allclose(multi_positive_nt_xent(z1, z2, t), NTXentLoss(temperature=t)(z1, z2), atol=1e-5)


def test_simclr_extra_positive_matches_direct_formula():
    torch.manual_seed(1)
    b, t = 6, 0.5
    z1, z2 = torch.randn(b, 8), torch.randn(b, 8)
    extra = torch.tensor([[2], [-1], [-1], [-1], [-1], [-1]])
    got = multi_positive_nt_xent(z1, z2, t, extra)  # weight 1 by default
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    by_logits = multi_positive_infonce(z @ z.T / t, extra)  # the InfoNCE on given logits (t-SimCNE's too)
    simclr = OBJECTIVES.build({"name": "simclr"}, _Flat())  # τ = 0.5 by default; the loss reads z only
    by_objective = simclr.loss(StepOutput((ViewOutput(h=z1, z=z1, t=z1), ViewOutput(h=z2, z=z2, t=z2))), extra)
    sim = z @ z.T / t
    sim.fill_diagonal_(float("-inf"))
    logp = sim.log_softmax(1)
    per = torch.stack([-logp[i, (i + b) % (2 * b)] for i in range(2 * b)])
    per[0] += -logp[0, 2 + b]  # anchor 0 (view 1) → other view of sample 2
    per[b] += -logp[b, 2]  # anchor 0 (view 2) → view 1 of sample 2
    for value in (got, by_logits, by_objective):
        assert torch.allclose(value, per.mean(), atol=1e-6)


@pytest.mark.parametrize("name, scale, offset", [("byol", 2.0, 2.0), ("simsiam", 1.0, 0.0)])
def test_virtual_extra_targets(name, scale, offset, breast, tiny_resnet):
    from ssl_bench.objectives.base import StepOutput

    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1)).eval()
    x1, x2, _ = _views(breast, n=8)
    with torch.no_grad():
        out = obj(x1, x2)
        e1, e2 = torch.randn(8, 3, out.views[0].t.shape[1]), torch.randn(8, 3, out.views[0].t.shape[1])
        got = obj.loss(StepOutput(out.views, extra_targets=(e1, e2)), weight=0.5)
        v1, v2 = out.views
        term = lambda p, t: offset - scale * F.cosine_similarity(p, t, dim=-1)  # noqa: E731
        own = 0.5 * (term(v1.p, v2.t).mean() + term(v2.p, v1.t).mean())
        ex = 0.5 * (term(v1.p[:, None], e1).mean(1).mean() + term(v2.p[:, None], e2).mean(1).mean())
        assert torch.allclose(got, own + 0.5 * ex, atol=1e-5)


@pytest.mark.parametrize("name, scale, offset", [("byol", 2.0, 2.0), ("simsiam", 1.0, 0.0)])
def test_index_extra_positives_average_over_the_valid_ones(name, scale, offset, breast, tiny_resnet):
    """k = 2 index positives padded with −1: each anchor's extra term is the mean of the cosine term
    over its valid positives (index 0 is a sample like any other), none for an all-padding row."""
    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1)).eval()
    x1, x2, _ = _views(breast, n=8)
    extra = torch.tensor([[0, 3], [0, -1], [5, 0], [-1, -1], [7, 6], [0, 1], [-1, 2], [4, 0]])
    with torch.no_grad():
        out = obj(x1, x2)
        got = obj.loss(out, extra, weight=0.7)
        by_default = obj.loss(out, extra)
    own, ex = _direct_terms(out, extra, scale, offset)
    assert torch.allclose(got, 0.5 * (own.mean() + 0.7 * ex.mean()), atol=1e-5)
    assert torch.allclose(by_default, 0.5 * (own.mean() + ex.mean()), atol=1e-5)  # weight 1 by default


def _direct_terms(out, extra, scale, offset, rows=None):
    """Per-anchor own and extra terms of the symmetric loss, written out: view u's prediction vs the
    other view's target, and the mean over the valid (≥ 0) extra indices of that view's targets."""
    v1, v2 = out.views
    rows = range(len(extra)) if rows is None else rows
    term = lambda p, t: offset - scale * F.cosine_similarity(p, t, dim=-1)  # noqa: E731

    def extra_terms(p, t):
        per = [[term(p[i], t[j]) for j in extra[r].tolist() if j >= 0] for r, i in enumerate(rows)]
        return torch.stack([torch.stack(x).mean() if x else torch.tensor(0.0) for x in per])

    own = torch.stack([term(v1.p[i], v2.t[i]) + term(v2.p[i], v1.t[i]) for i in rows])
    return own, extra_terms(v1.p, v2.t) + extra_terms(v2.p, v1.t)


@pytest.mark.parametrize("name, scale, offset", [("byol", 2.0, 2.0), ("simsiam", 1.0, 0.0)])
def test_data_parallel_loss_pulls_towards_positives_on_other_ranks(name, scale, offset, breast, tiny_resnet):
    """Rank 1 of 2 holds rows 4-7 of a global batch of 8; its extra positives index the global batch,
    and their targets come from one all-gather: its loss is the one-process formula on its rows."""
    from ssl_bench.distributed import Shard

    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1)).eval()
    x1, x2, _ = _views(breast, n=8)
    extra = torch.tensor([[0, 6], [3, -1], [-1, -1], [1, 2]])  # global rows; 6 is on this rank
    with torch.no_grad():
        full = obj(x1, x2)
    w1, w2 = full.views
    rank0 = torch.cat([w2.t[:4], w1.t[:4]], 1)
    calls = []
    shard = Shard(rank=1, sizes=(4, 4))
    object.__setattr__(shard, "gather", lambda t: calls.append(t.shape) or torch.cat([rank0, t]))
    local = tuple(ViewOutput(h=v.h[4:], z=v.z[4:], t=v.t[4:], p=v.p[4:], a=v.a[4:]) for v in full.views)
    got = obj.loss(StepOutput(local, shard=shard), extra)
    own, ex = _direct_terms(full, extra, scale, offset, rows=range(4, 8))
    assert torch.allclose(got, 0.5 * (own.mean() + ex.mean()), atol=1e-5)
    assert len(calls) == 1  # both views' targets in one call


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_the_embedder_module_gives_the_heads_output(name, breast, tiny_resnet):
    """``Embedder`` (what ``ssl-bench embed --features head`` and the evaluations' maps run) returns
    the objective's head output for the batch: the projection z of the online branch."""
    from ssl_bench.objectives import Embedder

    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1)).eval()
    x1, _, _ = _views(breast)
    with torch.no_grad():
        got, want = Embedder(obj)(x1), obj.online(x1).z
    assert got.shape == (16, want.shape[1]) and torch.equal(got, want)


def test_only_objectives_that_read_the_shard_get_global_positives():
    """Data-parallel training (2 ranks): BYOL, SimSiam and SimCLR pull towards positives on other
    ranks (their loss reads ``out.shard``); t-SimCNE and a user's objective that does not declare
    ``global_positives`` get positives chosen among the rank's own samples."""
    from types import SimpleNamespace

    from ssl_bench.distributed import Shard
    from ssl_bench.objectives import Objective
    from ssl_bench.step import TrainStep

    class Mine(Objective):  # a plugin objective written without data-parallel training in mind
        pass

    shard = Shard(rank=0, sizes=(4, 4))
    wants = {"byol": True, "simsiam": True, "simclr": True, "tsimcne": False}
    assert set(wants) == set(OBJECTIVES.names())
    for name, want in {**wants, "mine": False}.items():
        cls = Mine if name == "mine" else OBJECTIVES.get(name)
        step = SimpleNamespace(objective=cls)
        assert TrainStep.global_positives(step, shard) is want, name
        assert TrainStep.global_positives(step, Shard(rank=0, sizes=(8,))) is False  # one process


@pytest.mark.parametrize("name", ["byol", "simsiam"])
def test_prediction_and_predictor_input_are_those_of_the_prediction_head(name, breast, tiny_resnet):
    """``p`` is the prediction head's output for the projection and ``a`` the input of its last
    linear layer (what TracIn differentiates through), as the head's own forward computes them."""
    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1)).eval()
    x1, _, _ = _views(breast, n=8)
    seen = []
    obj.predictor.layers[-1].register_forward_hook(lambda mod, args, res: seen.append(args[0]))
    with torch.no_grad():
        v = obj.online(x1)
        p = obj.predictor(v.z)
    assert isinstance(obj.predictor.layers[-1], torch.nn.Linear) and len(seen) == 2
    assert torch.equal(v.p, p) and torch.equal(v.a, seen[1]) and torch.equal(seen[0], seen[1])


@pytest.mark.slow
@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_the_targets_of_a_step_are_the_target_branch(name, breast, tiny_resnet):
    """Each view's ``t`` in the step's output is what ``target`` gives for that view (selectors call
    ``target`` on their own views and must get what the loss pulls towards)."""
    obj = OBJECTIVES.build({"name": name}, tiny_resnet(1)).eval()
    x1, x2, _ = _views(breast, n=8)
    with torch.no_grad():
        out = obj(x1, x2)
        for v, x in zip(out.views, (x1, x2)):
            assert torch.allclose(v.t, obj.target(x), atol=1e-6)
