"""Selector semantics on hand-built inputs whose answer is known in advance."""

import pytest
import torch
from torch import nn

from ssl_bench.objectives.base import StepOutput, ViewOutput
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
    g1, g2 = _features(1)
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
            return ViewOutput(h=x, z=-x, t=None)

    net = Net()
    sel = SELECTORS.build({"name": "fs", "k": 1, "views": "light"})
    extra = sel.select(_ctx(light_views=lambda: (f1, f2), objective=net))
    assert torch.equal(extra[:, 0], (torch.arange(B) + 1) % B)


def test_oracle_on_multilabel_rows_picks_identical_label_vectors():
    labels = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]]).float()
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
        self.train = type("S", (), {"groups": torch.tensor([0, 0, 1, 2, 2, 3]), "labels": torch.tensor([0, 1, 1, 2, 2, 3])})()


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
