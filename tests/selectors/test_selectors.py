import pytest
import torch

from ssl_bench.objectives import OBJECTIVES
from ssl_bench.selectors import SELECTORS, SelectionContext, selection_counts
from ssl_bench.selectors.base import topk_excluding_self


def _context(data, backbone, n=32, seed=0):
    from ssl_bench.augment import AUGMENTATIONS

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[:n]
    x = data.train.images[idx]
    v1, v2 = AUGMENTATIONS.build({"name": "byol"})(x, g)
    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 256}, backbone)
    out = obj((v1 - 0.5) / 0.25, (v2 - 0.5) / 0.25)
    light = AUGMENTATIONS.build({"name": "light"})
    return obj, out, SelectionContext(
        out=out, labels=data.train.labels[idx], indices=idx, objective=obj, generator=g,
        light_views=lambda: light(x, g),
    )


@pytest.mark.parametrize("name", SELECTORS.names())
def test_every_selector_in_a_training_step(name, breast, tiny_resnet):
    sel = SELECTORS.build({"name": name})
    obj, out, ctx = _context(breast, tiny_resnet(1))
    sel.setup(obj, breast)
    extra = sel.select(ctx)
    if extra is not None:
        assert extra.shape == (32, sel.k) and extra.dtype == torch.long
        assert not (extra == torch.arange(32)[:, None]).any(), "a selector returned the anchor itself"
        assert ((extra >= -1) & (extra < 32)).all()
    loss = obj.loss(out, extra, sel.weight)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("k", [1, 3])
def test_oracle_picks_same_label_others(k, retina):
    sel = SELECTORS.build({"name": "oracle", "k": k})
    labels = retina.train.labels[:64]
    ctx = SelectionContext(out=None, labels=labels, indices=torch.arange(64), objective=None, generator=torch.Generator().manual_seed(0))
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
    again = sel.select(SelectionContext(out=None, labels=labels, indices=None, objective=None, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(extra, again)


def test_topk_excluding_self_masks_and_pads():
    scores = torch.tensor([[9.0, 1.0, 2.0], [5.0, 9.0, 1.0], [0.0, 0.0, 9.0]])
    got = topk_excluding_self(scores, 2, allowed=torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=torch.bool))
    assert got.tolist() == [[1, -1], [0, 2], [0, 1]] or got.tolist() == [[1, -1], [0, 2], [1, 0]]


def test_selection_counts_multilabel():
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    extra = torch.tensor([[1], [2], [-1]])
    assert selection_counts(extra, labels).tolist() == [1, 2, 2]
    assert selection_counts(None, labels).tolist() == [0, 0, 0]
