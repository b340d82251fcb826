"""Selector semantics on hand-built inputs whose answer is known in advance."""

import pytest
import torch
from torch import nn

from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives.base import CAPABILITIES, StepOutput, ViewOutput
from ssl_bench.selectors import SELECTORS, SelectionContext

B, D = 8, 64


def _features(seed: int = 0):
    """f1: nearly orthogonal rows; f2[j] = f1[j−1] + 0.6·f1[j−2], so for anchor i the candidates by
    cosine are i+1 (≈ 0.86), then i+2 (≈ 0.51), then the rest (≈ 0): top-2 = [i+1, i+2] (mod B)."""
    g = torch.Generator().manual_seed(seed)
    f1 = torch.nn.functional.normalize(torch.randn(B, D, generator=g), dim=1)
    f2 = torch.stack([f1[(j - 1) % B] + 0.6 * f1[(j - 2) % B] for j in range(B)])
    return f1, f2


def _ctx(out=None, labels=None, **kw):
    return SelectionContext(out=out, labels=labels if labels is not None else torch.zeros(B, dtype=torch.long),
                            indices=torch.arange(B), objective=kw.pop("objective", None),
                            generator=torch.Generator().manual_seed(0), **kw)


def _out(h1, h2, z1, z2):
    return StepOutput((ViewOutput(h=h1, z=z1, t=z1), ViewOutput(h=h2, z=z2, t=z2)))


@pytest.mark.parametrize("feature", ["backbone", "projection"])
def test_fs_picks_the_most_similar_candidates_in_order(feature):
    f1, f2 = _features(0)
    g1, _ = _features(1)
    g2 = torch.stack([g1[(j + 1) % B] + 0.6 * g1[(j + 2) % B] for j in range(B)])  # by g: i − 1, then i − 2
    # backbone features follow f, projections follow g: each option must read its own
    out = _out(f1, f2, g1, g2) if feature == "backbone" else _out(g1, g2, f1, f2)
    sel = SELECTORS.build({"name": "fs", "k": 2, "views": "train", "feature": feature})
    extra = sel.select(_ctx(out))
    want = torch.stack([(torch.arange(B) + 1) % B, (torch.arange(B) + 2) % B], 1)
    assert torch.equal(extra, want)


def test_fs_on_light_views_runs_the_network_on_them():
    f1, f2 = _features(2)

    class Net(nn.Module):  # backbone = identity on [B, D] "images"; a projection that scrambles them
        def __init__(self):
            super().__init__()
            self.backbone = nn.Identity()

        def online(self, x):
            return ViewOutput(h=x, z=x.flip(0), t=None)  # rows reversed: other neighbours

    net = Net()
    sel = SELECTORS.build({"name": "fs", "k": 1, "views": "light"})
    extra = sel.select(_ctx(light_views=lambda: (f1, f2), objective=net))
    assert torch.equal(extra[:, 0], (torch.arange(B) + 1) % B)


def test_oracle_on_multilabel_rows_picks_identical_label_vectors():
    labels = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0],
                           [0, 0, 0]]).float()
    sel = SELECTORS.build({"name": "oracle", "k": 2})
    extra = sel.select(_ctx(labels=labels))
    groups = {0: {1, 3}, 1: {0, 3}, 3: {0, 1}, 2: {4}, 4: {2}, 5: set(), 6: {7}, 7: {6}}
    for i, allowed in groups.items():
        chosen = {int(j) for j in extra[i] if j >= 0}
        assert chosen == allowed, (i, chosen)  # every identical vector (up to k), nothing else, never itself
    same, chosen, anchors = sel.counts(extra, _ctx(labels=labels)).tolist()
    assert same == chosen == 2 + 2 + 2 + 1 + 1 + 0 + 1 + 1 and anchors == 7


class _Data:
    """A 6-image dataset: lesions (groups) 0:{0,1} 1:{2} 2:{3,4} 3:{5}; image 1 mislabelled in its lesion."""

    name = "toy"

    def __init__(self):
        self.train = type("S", (),
                          {"groups": torch.tensor([0, 0, 1, 2, 2, 3]), "labels": torch.tensor([0, 1, 1, 2, 2, 3])})()


def test_micle_replace_scores_the_partner_that_became_view_2():
    data = _Data()
    sel = SELECTORS.build({"name": "micle", "mode": "replace"})
    sel.setup(None, data)
    idx = torch.arange(6)
    plan = sel.plan(idx)
    assert torch.equal(plan.view1, idx)
    assert plan.view2.tolist() == [1, 0, 2, 4, 3, 5]  # the other image of the lesion, or the image itself
    labels = data.train.labels[idx]
    ctx = _ctx(labels=labels, planned_view2=plan.view2)
    ctx.indices = idx
    assert sel.select(ctx) is None
    # partners that exist: 0↔1 (labels differ), 3↔4 (same); lone images 2 and 5 are not counted
    assert sel.counts(None, ctx).tolist() == [2, 4, 4]
    assert sel.choose(ctx).counts.tolist() == [2, 4, 4]  # what the training step logs


def test_micle_add_makes_each_partners_slot_an_extra_positive():
    data = _Data()
    sel = SELECTORS.build({"name": "micle", "mode": "add"})
    sel.setup(None, data)
    plan = sel.plan(torch.tensor([0, 3, 2, 5, 1, 4]))  # anchors: the first half (0, 3, 2)
    assert plan.view1.tolist() == [0, 3, 2, 1, 4, 2] and torch.equal(plan.view1, plan.view2)
    # slot i's extra positive is its partner's slot; lone image 2 appears twice but is nobody's extra positive
    assert plan.extra[:, 0].tolist() == [3, 4, -1, 0, 1, -1]
    labels = data.train.labels[plan.view1]
    ctx = _ctx(labels=labels, planned_extra=plan.extra)
    assert sel.select(ctx) is plan.extra
    assert sel.choose(ctx).counts.tolist() == [2, 4, 4]  # 0↔1 differ, 3↔4 agree, counted both ways


# ---------------------------------------------------------------------------------------------------
# FT: virtual positives λ·a + (1 − λ)·b with λ − 1 ~ Beta(α, α), one λ per sample
# ---------------------------------------------------------------------------------------------------
def _pair_out(n: int, seed: int = 0, device: str = "cpu") -> StepOutput:
    g = torch.Generator().manual_seed(seed)
    z1, t1, z2, t2 = (torch.randn(n, 4, generator=g).to(device) for _ in range(4))
    return StepOutput((ViewOutput(h=None, z=z1, t=t1), ViewOutput(h=None, z=z2, t=t2)))


def _lam(new: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """λ of new = λ·a + (1 − λ)·b, per row (the same in every column, or the row was not one mix)."""
    d = a - b
    lam = 1 + ((new - a) * d).sum(1) / (d * d).sum(1)  # least squares per row
    assert torch.allclose(new, lam[:, None] * a + (1 - lam[:, None]) * b, atol=1e-4)
    return lam


def _ft(objective: str, **kw):
    from ssl_bench.objectives import OBJECTIVES

    sel = SELECTORS.build({"name": "ft", **kw})
    sel.setup(OBJECTIVES.get(objective), None)
    return sel


@pytest.mark.parametrize("objective, moved, kept", [("byol", "t", "z"), ("simclr", "z", "t")])
def test_ft_extrapolates_the_pair_with_lambda_drawn_from_beta_plus_one(objective, moved, kept):
    from scipy import stats

    n = 4000
    out = _pair_out(n)
    sel = _ft(objective, alpha=2.0)
    ctx = SelectionContext(out=out, labels=torch.zeros(n, dtype=torch.long))
    new = sel.transform_outputs(out, ctx)
    (v1, v2), (n1, n2) = out.views, new.views
    lam = _lam(getattr(n1, moved), getattr(v1, moved), getattr(v2, moved))
    # view 2 is pushed the other way with the same λ; the other outputs are left alone
    assert torch.allclose(_lam(getattr(n2, moved), getattr(v2, moved), getattr(v1, moved)), lam, atol=1e-3)
    assert getattr(n1, kept) is getattr(v1, kept) and getattr(n2, kept) is getattr(v2, kept)
    assert lam.min() >= 1 - 1e-4 and lam.max() <= 2 + 1e-4  # extrapolation, never interpolation
    x = (lam - 1).double().numpy()
    assert stats.kstest(x, stats.beta(2, 2).cdf).pvalue > 1e-3
    assert stats.kstest(x, stats.beta(1, 1).cdf).pvalue < 1e-6  # α matters: not uniform
    # a fresh λ each step
    again = _lam(getattr(sel.transform_outputs(out, ctx).views[0], moved), getattr(v1, moved), getattr(v2, moved))
    assert not torch.allclose(again, lam)


def test_ft_state_dict_resumes_the_same_draws():
    out = _pair_out(64)
    ctx = SelectionContext(out=out, labels=torch.zeros(64, dtype=torch.long))
    v1, v2 = out.views

    def lam(sel):
        return _lam(sel.transform_outputs(out, ctx).views[0].t, v1.t, v2.t)

    a = _ft("byol")
    a.seed(3)
    first = lam(a)
    state = a.state_dict()
    second = lam(a)
    resumed = _ft("byol")
    resumed.seed(3)  # a resumed run seeds, then loads the checkpoint's state
    resumed.load_state_dict(state)
    assert torch.equal(lam(resumed), second)
    fresh = _ft("byol")
    fresh.seed(3)
    assert torch.equal(lam(fresh), first) and not torch.equal(first, second)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_ft_refuses_a_non_positive_alpha(alpha):
    with pytest.raises(SSLBenchError, match="selector.alpha must be > 0"):
        SELECTORS.build({"name": "ft", "alpha": alpha})
    assert SELECTORS.build({"name": "ft", "alpha": 0.5}).alpha == 0.5  # any α > 0: Beta(0.5, 0.5) is U-shaped


def test_ft_needs_targets_or_a_contrastive_loss():
    from ssl_bench.objectives import OBJECTIVES

    sel = SELECTORS.build({"name": "ft"})
    for name in ("byol", "simsiam", "simclr", "tsimcne"):
        assert sel.missing(OBJECTIVES.get(name).provides) is None, name
    lacking = sel.missing(frozenset({"features", "projection"}))  # a user's objective with neither
    assert lacking and "contrastive" in lacking and "target" in lacking


@pytest.mark.parametrize("name", ["fnc", "fs"])
@pytest.mark.parametrize("feature, needed", [("projection", "projection"), ("backbone", "features")])
def test_feature_selectors_need_the_feature_they_compare(name, feature, needed):
    sel = SELECTORS.build({"name": name, "feature": feature})
    every = frozenset({"features", "projection", "index_positives"})
    assert sel.missing(every) is None
    assert sel.missing(every - {needed}) == CAPABILITIES[needed]
    other = ({"features", "projection"} - {needed}).pop()
    assert sel.missing(every - {other}) is None


@pytest.mark.parametrize("name", ["fs", "fnc", "oracle"])
def test_a_global_selector_picks_a_positive_on_another_rank(name):
    """Data-parallel training, rank 1 of 2: the candidates are the global batch (rank 0's rows
    first).  Rank 0 holds a copy of each anchor (same features, or the only other sample of its
    label), so each anchor's positive is global row i, not a row of its own rank."""
    from ssl_bench.distributed import Shard

    f1, f2 = _features(4)
    f2 = torch.randn(B, D, generator=torch.Generator().manual_seed(5))  # view 2: unrelated to view 1
    labels = torch.arange(B)
    out = _out(f1, f2, f1, f2)
    rank0 = {"fs": torch.nn.functional.normalize(f1, dim=1), "fnc": f1, "oracle": labels}[name]
    shard = Shard(rank=1, sizes=(B, B))
    object.__setattr__(shard, "gather", lambda t: torch.cat([rank0.to(t.dtype), t]))
    cfg = {"name": name, "k": 1, **({"feature": "projection", "views": "train"} if name == "fs" else {})}
    sel = SELECTORS.build(cfg)
    ctx = _ctx(out=out, labels=labels, shard=shard, pool_labels=torch.cat([labels, labels]))
    chosen = sel.choose(ctx)
    assert chosen.extra[:, 0].tolist() == list(range(B))
    assert chosen.counts.tolist() == [B, B, B]  # every positive shares its anchor's label


@pytest.mark.parametrize("a_dtype, gathers", [(torch.float32, 1), (torch.bfloat16, 2)])
def test_tracin_picks_a_positive_on_another_rank(a_dtype, gathers):
    """Data-parallel TracIn-cos, rank 1 of 2: rank 0 holds copies of rank 1's samples (same
    gradients g and predictor inputs a), so each anchor's cosine is 1 with global row i (its copy)
    and the positive must be that row, not one shifted by the rank's offset.  g and a travel in one
    all-gather; two when mixed precision gives them different dtypes."""
    from ssl_bench.distributed import Shard

    g = torch.Generator().manual_seed(9)
    views = [ViewOutput(h=torch.randn(B, D, generator=g), z=torch.randn(B, D, generator=g),
                        t=torch.randn(B, D, generator=g),
                        p=torch.randn(B, D, generator=g), a=torch.randn(B, 16, generator=g).to(a_dtype))
             for _ in range(2)]
    shard = Shard(rank=1, sizes=(B, B))
    calls = []
    # rank 0's rows first: the copies
    object.__setattr__(shard, "gather", lambda t: calls.append(t.dtype) or torch.cat([t, t]))
    labels = torch.arange(B)
    sel = SELECTORS.build({"name": "tracin", "k": 1, "views": "train", "normalize": True})
    ctx = _ctx(out=StepOutput(tuple(views)), labels=labels, shard=shard, pool_labels=torch.cat([labels, labels]))
    chosen = sel.choose(ctx)
    assert chosen.extra[:, 0].tolist() == list(range(B))
    assert chosen.counts.tolist() == [B, B, B]
    assert len(calls) == gathers and set(calls) == {torch.float32, a_dtype}


@pytest.mark.parametrize("feature", ["backbone", "projection"])
def test_fnc_compares_the_feature_it_is_told_to(feature):
    """Backbone features and projections rank the candidates in opposite orders: for anchor i the
    best candidate is i − 1 by h and i + 1 by z (FNC's candidates are view 1; its support, both views)."""
    h1, h2 = _features(6)  # by h: view 2 of anchor i ≈ view 1 of i − 1
    z1 = torch.nn.functional.normalize(torch.randn(B, D, generator=torch.Generator().manual_seed(7)), dim=1)
    z2 = torch.stack([z1[(j + 1) % B] for j in range(B)])  # by z: view 2 of anchor i = view 1 of i + 1
    sel = SELECTORS.build({"name": "fnc", "k": 1, "feature": feature})
    extra = sel.select(_ctx(out=_out(h1, h2, z1, z2)))
    step = -1 if feature == "backbone" else 1
    assert extra[:, 0].tolist() == [(i + step) % B for i in range(B)]


def test_fnc_threshold_is_a_cosine():
    for ok in (-1.0, 0.7, 1.0):
        assert SELECTORS.build({"name": "fnc", "threshold": ok}).threshold == ok
    for bad in (-1.5, 1.5):
        with pytest.raises(SSLBenchError, match=r"selector.threshold must be a cosine in \[-1, 1\]"):
            SELECTORS.build({"name": "fnc", "threshold": bad})


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_micle_state_dict_resumes_the_same_partners(mode):
    """Lesions of three images each, so that a partner is drawn: a resumed run (seed, then the
    checkpoint's state) draws the partners the uninterrupted run draws."""
    data = _Data()
    data.train.groups = torch.arange(30) // 3
    data.train.labels = torch.zeros(30, dtype=torch.long)
    idx = torch.arange(0, 30, 2)

    def made(seed):
        sel = SELECTORS.build({"name": "micle", "mode": mode})
        sel.setup(None, data)
        sel.seed(seed)
        return sel

    run = made(3)
    first = run.plan(idx).view2 if mode == "replace" else run.plan(idx).view1
    state = run.state_dict()
    second = run.plan(idx).view2 if mode == "replace" else run.plan(idx).view1
    assert not torch.equal(first, second)
    resumed = made(3)
    resumed.load_state_dict(state)
    again = resumed.plan(idx).view2 if mode == "replace" else resumed.plan(idx).view1
    assert torch.equal(again, second)


def test_micle_replace_counts_multilabel_partners_with_identical_label_vectors():
    data = _Data()
    # lesions 0:{0,1} 1:{2} 2:{3,4} 3:{5}; multi-label rows: 0 and 1 differ in one finding, 3 and 4 agree
    data.train.labels = torch.tensor([[1, 0, 1], [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 1, 1], [1, 1, 1]])
    sel = SELECTORS.build({"name": "micle", "mode": "replace"})
    sel.setup(None, data)
    idx = torch.arange(6)
    plan = sel.plan(idx)
    ctx = _ctx(labels=data.train.labels[idx], planned_view2=plan.view2)
    ctx.indices = idx
    assert sel.counts(None, ctx).tolist() == [2, 4, 4]  # 3↔4 agree both ways; 0↔1 do not; 2 and 5 are alone


def test_fs_with_a_frozen_network_on_the_training_views_runs_that_network_on_them():
    """``model: pretrained, views: train``: the frozen network scores the step's augmented views —
    not the network being trained, and not the step's own forward."""
    f1, f2 = _features(8)

    class Net(nn.Module):
        provides = frozenset({"features", "projection", "index_positives"})

        def __init__(self, flip):
            super().__init__()
            self.flip = flip
            self.backbone = self._features

        def _features(self, x):  # the network being trained: rows reversed, so anchor i would get i − 1
            return x.flip(0) if self.flip else x

        def online(self, x):
            return ViewOutput(h=self._features(x), z=self._features(x), t=None)

    sel = SELECTORS.build({"name": "fs", "k": 1, "model": "pretrained", "checkpoint": "unused.pt", "views": "train"})
    sel.use_frozen(Net(flip=False))
    scrambled = torch.roll(f1, 3, 0)
    ctx = _ctx(out=_out(scrambled, scrambled, scrambled, scrambled), views=(f1, f2), objective=Net(flip=True))
    assert sel.select(ctx)[:, 0].tolist() == [(i + 1) % B for i in range(B)]


# ---------------------------------------------------------------------------------------------------
# NN: a memory bank of past view-1 targets; neighbours once it holds k of them
# ---------------------------------------------------------------------------------------------------
def test_nn_pulls_towards_neighbours_as_soon_as_the_bank_holds_k():
    sel = SELECTORS.build({"name": "nn", "k": 2, "bank_size": 2})  # a bank of exactly k is allowed
    ctx = SelectionContext(out=None, labels=torch.arange(2))
    first = sel.transform_outputs(_pair_out(2, 0), ctx)
    assert first.extra_targets is None and sel.filled == 2  # nothing stored before the first batch
    second = sel.transform_outputs(_pair_out(2, 1), ctx)
    assert second.extra_targets is not None and second.extra_targets[0].shape == (2, 2, 4)
    one = SELECTORS.build({"name": "nn", "k": 1, "bank_size": 8})
    # an empty bank, even for k = 1
    assert one.transform_outputs(_pair_out(3, 2),
                                 SelectionContext(out=None, labels=torch.arange(3))).extra_targets is None
    with pytest.raises(SSLBenchError, match=r"selector.bank_size \(1\) must be ≥ selector.k \(2\)"):
        SELECTORS.build({"name": "nn", "k": 2, "bank_size": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nn_bank_resumed_from_a_cpu_checkpoint_moves_to_the_training_device():
    sel = SELECTORS.build({"name": "nn", "k": 1, "bank_size": 8})
    ctx = SelectionContext(out=None, labels=torch.arange(4))
    sel.transform_outputs(_pair_out(4, 0), ctx)
    resumed = SELECTORS.build({"name": "nn", "k": 1, "bank_size": 8})
    resumed.load_state_dict(sel.state_dict())  # a checkpoint is loaded on the CPU
    ctx_cuda = SelectionContext(out=None, labels=torch.arange(4, device="cuda"))
    out = resumed.transform_outputs(_pair_out(4, 1, "cuda"), ctx_cuda)
    assert out.extra_targets[0].device.type == "cuda" and resumed.bank.device.type == "cuda"


def test_micle_keeps_its_planned_positives_in_global_positions():
    """Data-parallel: the plan is made for the global batch on every rank, so its extra positives
    are already global positions; choosing must not shift them by the rank's offset."""
    from ssl_bench.distributed import Shard

    data = _Data()
    sel = SELECTORS.build({"name": "micle", "mode": "add"})
    sel.setup(None, data)
    plan = sel.plan(torch.tensor([0, 3, 2, 5, 1, 4]))
    extra = plan.extra[3:]  # rank 1 of 2 holds slots 3-5
    ctx = _ctx(labels=data.train.labels[plan.view1[3:]], planned_extra=extra, shard=Shard(rank=1, sizes=(3, 3)),
               pool_labels=data.train.labels[plan.view1])
    assert torch.equal(sel.choose(ctx).extra, extra)


def test_micle_add_needs_index_positives_and_replace_needs_nothing():
    plain = frozenset({"features", "projection"})
    assert "extra positives given as batch indices" in SELECTORS.build({"name": "micle", "mode": "add"}).missing(plain)
    assert SELECTORS.build({"name": "micle", "mode": "replace"}).missing(plain) is None  # plain BYOL with other pairs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_frozen_network_loaded_on_the_cpu_moves_to_the_training_device():
    f1, f2 = (t.cuda() for t in _features(9))

    class Net(nn.Module):
        provides = frozenset({"features", "projection", "index_positives"})

        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(D, D)

        def online(self, x):
            h = self.backbone(x)
            return ViewOutput(h=h, z=h, t=None)

    net = Net()
    sel = SELECTORS.build({"name": "fs", "k": 1, "model": "pretrained", "checkpoint": "unused.pt", "views": "train"})
    sel.use_frozen(net)
    ctx = _ctx(out=None, labels=torch.zeros(B, dtype=torch.long, device="cuda"), views=(f1, f2))
    assert sel.select(ctx).shape == (B, 1)
    assert next(net.parameters()).device.type == "cuda"


def test_nn_bank_is_a_ring_the_oldest_targets_are_replaced_first():
    """Bank of 10, batches of 4: slots 0-3, 4-7, 8-9 (the batch cut, the pointer wraps), then 0-3 again."""
    sel = SELECTORS.build({"name": "nn", "k": 1, "bank_size": 10})
    for step in range(4):
        labels = torch.arange(4) + 10 * step
        sel.transform_outputs(_pair_out(4, step), SelectionContext(out=None, labels=labels))
    assert sel.bank_labels.tolist() == [30, 31, 32, 33, 10, 11, 12, 13, 20, 21] and sel.filled == 10
    want = torch.nn.functional.normalize(_pair_out(4, 3).views[0].t, dim=1)
    assert torch.allclose(sel.bank[:4], want)
    exact = SELECTORS.build({"name": "nn", "k": 1, "bank_size": 8})  # batches that fill the bank exactly
    for step in range(3):
        exact.transform_outputs(_pair_out(4, step), SelectionContext(out=None, labels=torch.arange(4) + 10 * step))
    assert exact.bank_labels.tolist() == [20, 21, 22, 23, 10, 11, 12, 13]


def test_nn_on_multilabel_rows_counts_neighbours_with_identical_label_vectors():
    sel = SELECTORS.build({"name": "nn", "k": 1, "bank_size": 8})
    first = torch.tensor([[1, 0], [0, 1], [1, 1]])
    sel.choose(SelectionContext(out=_pair_out(3, 0), labels=first))
    assert sel.bank_labels[:3].tolist() == first.tolist()
    # the same targets again: each anchor's nearest stored target is view 1 of itself or another row
    second = torch.tensor([[1, 0], [1, 0], [1, 1]])
    chosen = sel.choose(SelectionContext(out=_pair_out(3, 0), labels=second))
    t1, t2 = (torch.nn.functional.normalize(v.t, dim=1) for v in _pair_out(3, 0).views)
    nearest = (t2 @ t1.T).argmax(1)  # view 1's positives: view 2's neighbours in the bank
    same = (first[nearest] == second).all(1)
    assert chosen.counts.tolist() == [int(same.sum()), 3, 3]


def test_micle_replace_counts_partners_sharing_the_label():
    data = _Data()
    data.train.labels = torch.tensor([0, 0, 1, 2, 2, 3])  # both lesions with two images agree
    sel = SELECTORS.build({"name": "micle", "mode": "replace"})
    sel.setup(None, data)
    idx = torch.arange(6)
    ctx = _ctx(labels=data.train.labels, planned_view2=sel.plan(idx).view2)
    ctx.indices = idx
    assert sel.counts(None, ctx).tolist() == [4, 4, 4]
