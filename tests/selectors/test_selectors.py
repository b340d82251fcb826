import pytest
import torch

from ssl_bench.objectives import OBJECTIVES
from ssl_bench.selectors import SELECTORS, SelectionContext, selection_counts
from ssl_bench.selectors.base import topk_excluding_self


@pytest.mark.slow
@pytest.mark.parametrize("name", SELECTORS.names())
def test_every_selector_in_the_real_training_step(name):
    """Each registered selector, with its defaults, in the step `ssl-bench run` trains with, on real
    HAM10000 images with lesion groups (MICLe's partners)."""
    from ssl_bench.step import Batch
    from tests.conftest import HAM_ZIP
    from tests.helpers import breast_recipe, real_step

    cfg = breast_recipe(data={"name": "isic", "root": str(HAM_ZIP), "size": 28}, selector={"name": name})
    step, comp = real_step(cfg)
    train = comp.data.train
    plan = step.selector.plan(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:32])
    images2 = None if plan.view2 is plan.view1 else train.images[plan.view2]
    batch = Batch(train.images[plan.view1], train.labels[plan.view1], plan.view1, train.groups[plan.view1],
                  images2=images2, indices2=None if images2 is None else plan.view2, planned_extra=plan.extra)
    res = step(batch, lr=0.05, step=0)
    b, extra = len(batch), res.extra
    if extra is not None:
        assert extra.shape == (b, step.selector.k) and extra.dtype == torch.long
        assert not (extra == torch.arange(b)[:, None]).any(), "a selector returned the anchor itself"
        assert ((extra >= -1) & (extra < b)).all()
    assert torch.isfinite(res.loss) and res.counts.shape == (3,)


@pytest.mark.parametrize("key", ["k", "weight"])
def test_augmentation_only_refuses_positive_options(key):
    """``selector: {name: none, weight: 0.5}`` would train plain BYOL while the recipe seems to ask
    for extra positives: refused, naming the key."""
    from ssl_bench.errors import SSLBenchError
    from ssl_bench.recipe import load_recipe
    from tests.helpers import breast_recipe

    with pytest.raises(SSLBenchError, match=rf"unknown recipe key selector\.{key} for selector 'none'"):
        load_recipe(data=breast_recipe(selector={"name": "none", key: 1}))


@pytest.mark.parametrize("k", [1, 3])
def test_oracle_picks_same_label_others(k, retina):
    sel = SELECTORS.build({"name": "oracle", "k": k})
    labels = retina.train.labels[:64]
    ctx = SelectionContext(out=None, labels=labels, indices=torch.arange(64), objective=None,
                           generator=torch.Generator().manual_seed(0))
    extra = sel.select(ctx)
    assert extra.shape == (64, k)
    valid = extra >= 0
    assert (labels[extra.clamp(min=0)] == labels[:, None])[valid].all()
    assert not (extra == torch.arange(64)[:, None]).any()
    # a sample whose class has fewer than k other members gets -1 for the rest
    counts = torch.bincount(labels, minlength=5)
    assert torch.equal(valid.sum(1), torch.clamp(counts[labels] - 1, max=k))
    same, chosen, anchors = selection_counts(extra, labels).tolist()
    assert same == chosen == int(valid.sum()) and anchors == int(valid.any(1).sum())
    # different generator state → different (random) partners
    again = sel.select(SelectionContext(out=None, labels=labels, indices=None, objective=None,
                                        generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(extra, again)


def test_topk_excluding_self_masks_and_pads():
    scores = torch.tensor([[9.0, 1.0, 2.0], [5.0, 9.0, 1.0], [0.0, 0.0, 9.0]])
    got = topk_excluding_self(scores, 2, allowed=torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool))
    assert got.tolist() == [[1, -1], [0, 2], [0, 1]] or got.tolist() == [[1, -1], [0, 2], [1, 0]]


def test_topk_excluding_self_pads_a_batch_smaller_than_k_plus_one():
    """A last batch of 2 with k = 3: one candidate per row, then −1 (the result is always [B, k])."""
    got = topk_excluding_self(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 3)
    assert got.tolist() == [[1, -1, -1], [0, -1, -1]]


def test_an_objective_that_declares_nothing_is_named_so():
    """A plug-in objective without ``provides``: the one-line error says it declares nothing."""
    from ssl_bench.errors import SSLBenchError
    from ssl_bench.selectors.base import check_compatible

    class Plain(torch.nn.Module):
        pass

    with pytest.raises(SSLBenchError,
                       match=r"objective 'plain' does not provide it \(it provides: nothing declared\)$"):
        check_compatible(SELECTORS.build({"name": "tracin"}), Plain, "tracin", "plain")


def test_selection_counts_multilabel():
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    extra = torch.tensor([[1], [2], [-1]])
    assert selection_counts(extra, labels).tolist() == [1, 2, 2]
    assert selection_counts(None, labels).tolist() == [0, 0, 0]


def test_selection_counts_a_positive_at_row_0_and_padding():
    """Row 2's positive is row 0 (same label), row 1 has none (−1): 2 same-label positives of 2,
    2 anchors with one; with k = 2, the padded second column counts nothing."""
    labels = torch.tensor([0, 1, 0])
    assert selection_counts(torch.tensor([[2], [-1], [0]]), labels).tolist() == [2, 2, 2]
    assert selection_counts(torch.tensor([[2, -1], [-1, -1], [0, 1]]), labels).tolist() == [2, 3, 2]


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_micle_partners_share_the_group(mode, ham, tiny_resnet):
    from ssl_bench.selectors.micle import GroupPartners

    sel = SELECTORS.build({"name": "micle", "mode": mode})
    sel.setup(None, ham)
    groups = ham.train.groups
    idx = torch.randperm(len(ham.train), generator=torch.Generator().manual_seed(0))[:512]
    plan = sel.plan(idx)
    if mode == "replace":
        assert torch.equal(plan.view1, idx) and plan.extra is None
        a, p = plan.view1, plan.view2
    else:
        half = 256
        assert torch.equal(plan.view1, plan.view2) and torch.equal(plan.view1[:half], idx[:half])
        lone = ~GroupPartners(groups).has_partner(idx[:half])
        want = torch.arange(half) + half
        assert torch.equal(plan.extra[:half, 0], torch.where(lone, -1, want))  # a copy of itself is no extra positive
        assert torch.equal(plan.extra[half:, 0], torch.where(lone, -1, torch.arange(half)))
        a, p = plan.view1[:half], plan.view1[half:]
    assert torch.equal(groups[a], groups[p])  # always the same lesion
    partnered = GroupPartners(groups).has_partner(a)
    assert (a[partnered] != p[partnered]).all()  # a different image whenever the lesion has one
    assert torch.equal(a[~partnered], p[~partnered])  # otherwise the image itself
    assert partnered.any() and (~partnered).any()
    # MICLe needs groups
    from ssl_bench.errors import SSLBenchError

    with pytest.raises(SSLBenchError, match="needs group ids"):
        SELECTORS.build({"name": "micle"}).setup(None, type("D", (), {"train": type("S", (), {"groups": None})(),
                                                                      "name": "X"})())


def test_micle_partner_sampling_is_uniform_over_other_members():
    from ssl_bench.selectors.micle import GroupPartners

    groups = torch.tensor([5, 5, 5, 9, 7, 7])
    gp = GroupPartners(groups)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([gp.sample(torch.tensor([0, 3, 4]), g) for _ in range(600)])
    assert set(draws[:, 0].tolist()) == {1, 2} and abs((draws[:, 0] == 1).float().mean() - 0.5) < 0.08
    assert (draws[:, 1] == 3).all() and (draws[:, 2] == 5).all()


def test_fnc_respects_topk_and_threshold():
    from ssl_bench.selectors.fnc import fnc_scores

    torch.manual_seed(0)
    z1, z2 = torch.randn(40, 16), torch.randn(40, 16)
    z2[:10] = z1[:10] + 0.05 * torch.randn(10, 16)
    z1[20:30] = z1[0] + 0.3 * torch.randn(10, 16)  # a cluster: many high-similarity candidates
    out = type("O", (), {})()
    v = lambda z: type("V", (), {"z": z, "h": z})()  # noqa: E731
    out.views = (v(z1), v(z2))
    ctx = SelectionContext(out=out, labels=torch.zeros(40), indices=torch.arange(40), objective=None,
                           generator=torch.Generator())
    for k, thr in [(10, 0.7), (3, 0.5), (10, 0.95)]:
        extra = SELECTORS.build({"name": "fnc", "k": k, "threshold": thr}).select(ctx)
        scores = fnc_scores([z1, z2], z1)
        scores.fill_diagonal_(float("-inf"))
        topk = scores.topk(k, dim=1).indices
        valid = extra >= 0
        assert extra.shape == (40, k)
        assert (scores.gather(1, extra.clamp(min=0))[valid] >= thr).all()  # threshold
        assert all(set(extra[i][valid[i]].tolist()) <= set(topk[i].tolist()) for i in range(40))  # top-k
        below = scores.gather(1, topk) < thr
        assert torch.equal(valid, ~below)  # everything in the top-k above the threshold is kept
    assert (SELECTORS.build({"name": "fnc", "k": 10, "threshold": 0.7}).select(ctx)[20] >= 0).sum() >= 5


def test_ft_extrapolates_targets_apart():
    from ssl_bench.objectives.base import StepOutput, ViewOutput

    torch.manual_seed(0)
    t1, t2, z = torch.randn(64, 8), torch.randn(64, 8), torch.randn(64, 8)
    byol_like = StepOutput((ViewOutput(h=z, z=z, t=t1, p=z), ViewOutput(h=z, z=z, t=t2, p=z)))
    ctx = SelectionContext(out=byol_like, labels=None, indices=None, objective=None,
                           generator=torch.Generator().manual_seed(0))
    sel = SELECTORS.build({"name": "ft", "alpha": 2.0})
    sel.setup(OBJECTIVES.get("byol"), None)  # a predictor objective: the targets are extrapolated
    assert sel.select(ctx) is None
    new = sel.transform_outputs(byol_like, ctx)
    n1, n2 = new.views[0].t, new.views[1].t
    # ẑ₁ − ẑ₂ = (2λ − 1)(z₁ − z₂) with λ ∈ [1, 2]: same direction, 1–3× farther apart
    ratio = (n1 - n2).norm(dim=1) / (t1 - t2).norm(dim=1)
    assert ((ratio >= 1 - 1e-5) & (ratio <= 3 + 1e-5)).all() and ratio.std() > 0.05
    assert torch.allclose(torch.nn.functional.cosine_similarity(n1 - n2, t1 - t2), torch.ones(64), atol=1e-5)
    assert torch.allclose(n1 + n2, t1 + t2, atol=1e-5)  # extrapolated about the pair's midpoint
    lam = (ratio + 1) / 2  # λ − 1 ~ Beta(2, 2): mean 0.5
    assert abs(float(lam.mean()) - 1.5) < 0.08
    # SimCLR (a contrastive loss): the projections themselves are extrapolated
    simclr_like = StepOutput((ViewOutput(h=z, z=t1, t=t1), ViewOutput(h=z, z=t2, t=t2)))
    sel.setup(OBJECTIVES.get("simclr"), None)
    new = sel.transform_outputs(simclr_like, ctx)
    assert not torch.allclose(new.views[0].z, t1)


def test_nn_bank_neighbours_and_fifo(breast, tiny_resnet):
    from ssl_bench.objectives.base import StepOutput, ViewOutput

    sel = SELECTORS.build({"name": "nn", "k": 2, "bank_size": 10})
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def out_of(t1, t2):
        return StepOutput((ViewOutput(h=t1, z=t1, t=t1, p=t1), ViewOutput(h=t2, z=t2, t=t2, p=t2)))

    labels = torch.arange(4)
    first = sel.transform_outputs(out_of(torch.randn(4, 8), torch.randn(4, 8)),
                                  SelectionContext(out=None, labels=labels, indices=None, objective=None, generator=g))
    assert first.extra_targets is None and sel.filled == 4  # empty bank: nothing to pull towards yet
    t1, t2 = torch.randn(4, 8), torch.randn(4, 8)
    bank_before = torch.nn.functional.normalize(sel.bank[:4].clone(), dim=1)
    res = sel.transform_outputs(out_of(t1, t2), SelectionContext(out=None, labels=labels + 10, indices=None,
                                                                 objective=None, generator=g))
    e1, e2 = res.extra_targets
    assert e1.shape == (4, 2, 8)
    want = (torch.nn.functional.normalize(t2, dim=1) @ bank_before.T).topk(2, dim=1).indices
    assert torch.allclose(e1, bank_before[want])  # view 1's prediction → view 2's neighbours
    assert sel.filled == 8
    from ssl_bench.selectors.nn import neighbour_counts

    # neighbours 0..3, anchors 10..13
    assert neighbour_counts(sel.bank_labels[:4][want], labels + 10).tolist() == [0, 8, 4]
    sel.transform_outputs(out_of(torch.randn(4, 8), torch.randn(4, 8)),
                          SelectionContext(out=None, labels=labels + 20, indices=None, objective=None, generator=g))
    assert sel.filled == 10 and sel.bank_labels.tolist()[8:] == [20, 21]  # FIFO cut at the end, as lightly does
    # the loss with virtual targets equals the direct formula
    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 64}, tiny_resnet(1))
    f = torch.nn.functional
    term = lambda p, t, dim=1: 2 - 2 * f.cosine_similarity(p, t, dim=dim)  # noqa: E731
    want = 0.5 * (term(t1, t2).mean() + term(t2, t1).mean())
    want = want + 0.5 * (term(t1[:, None], e1, -1).mean() + term(t2[:, None], e2, -1).mean())
    assert torch.allclose(obj.loss(res), want, atol=1e-5)  # predictions p = t here (see out_of)
    state = sel.state_dict()
    other = SELECTORS.build({"name": "nn", "k": 2, "bank_size": 10})
    other.load_state_dict(state)
    assert torch.equal(other.bank, sel.bank) and other.filled == 10


def test_a_rank_local_selector_gets_its_choice_moved_to_global_positions():
    """A plug-in selector that leaves ``selects_globally`` unset chooses among its rank's own rows;
    ``choose`` moves them to global-batch positions (rank 1 of 2, 2 rows before it), keeps −1 (no
    positive), and counts precision against the global batch's labels."""
    from dataclasses import dataclass

    from ssl_bench.distributed import Shard
    from ssl_bench.selectors.base import Selector

    @dataclass(eq=False)
    class Previous(Selector):  # each row's positive: the row before it on this rank
        def select(self, ctx):
            n = len(ctx.labels)
            return (torch.arange(n) - 1)[:, None]

    labels = torch.tensor([0, 1, 1])
    pool = torch.tensor([1, 0, 0, 1, 1])  # rows 0-1 on rank 0, rows 2-4 (= labels) here
    ctx = SelectionContext(out=None, labels=labels, lr=0.1, shard=Shard(rank=1, sizes=(2, 3)), pool_labels=pool)
    sel = Previous()
    assert sel.selects_globally is False
    chosen = sel.choose(ctx)
    assert chosen.extra.tolist() == [[-1], [2], [3]]
    assert chosen.counts.tolist() == [1, 2, 2]  # global row 2 (label 0) ≠ label 1; row 3 (label 1) = label 1
    one_process = sel.choose(SelectionContext(out=None, labels=labels, lr=0.1))
    assert one_process.extra.tolist() == [[-1], [0], [1]]
