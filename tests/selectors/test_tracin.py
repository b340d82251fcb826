"""TracIn in closed form equals the Gram matrix of true per-sample gradients (autograd)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ssl_bench.objectives import OBJECTIVES
from ssl_bench.selectors import SELECTORS, SelectionContext
from ssl_bench.selectors.tracin import byol_loss_grad, tracin_matrix, tracin_matrix_views


def _byol_loss(q, z):
    return 2 - 2 * F.cosine_similarity(q, z, dim=-1)


def per_sample_weight_grads(layer: torch.nn.Linear, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """[B, d*m]: ∂ℓ_i/∂W of q_i = W a_i + b, by autograd (torch.func.vmap over samples)."""
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss_one(p, a_i, z_i):
        q = functional_call(layer, p, (a_i[None],))[0]
        return _byol_loss(q, z_i)

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, a, z)
    return g["weight"].flatten(1)


def test_loss_gradient_closed_form():
    torch.manual_seed(0)
    q = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 7, dtype=torch.float64)
    _byol_loss(q, z).sum().backward()
    assert torch.allclose(byol_loss_grad(q.detach(), z), q.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lr", [1.0, 0.03])
def test_tracin_matrix_equals_autograd_gram_random(lr):
    torch.manual_seed(0)
    b, m, d = 12, 9, 6
    layer = torch.nn.Linear(m, d).double()
    a = torch.randn(b, m, dtype=torch.float64)
    z = torch.randn(b, d, dtype=torch.float64)
    q = layer(a).detach()
    G = per_sample_weight_grads(layer, a, z)
    want = lr * G @ G.T
    got = tracin_matrix(q, z, a, lr=lr)
    rel = (got - want).norm() / want.norm()
    assert rel <= 1e-5, rel


def test_tracin_matrix_equals_autograd_gram_real_predictor(breast, tiny_resnet):
    """On a real BYOL predictor fed by a real backbone on real BreastMNIST images."""
    from tests.conftest import real_batch

    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 128}, tiny_resnet(1)).double()
    x1, _ = real_batch(breast, n=10, seed=1)
    x2, _ = real_batch(breast, n=10, seed=1)
    x2 = torch.flip(x2, dims=[3])
    with torch.no_grad():
        out = obj(x1.double(), x2.double())
    v1, v2 = out.views
    last = obj.predictor.layers[-1]
    G = per_sample_weight_grads(last, v1.a, v2.t)
    want = G @ G.T
    got = tracin_matrix(v1.p, v2.t, v1.a)
    assert (got - want).norm() / want.norm() <= 1e-5
    # symmetric loss ℓ = ℓ(q1, z2') + ℓ(q2, z1'): the gradients add up before the inner product
    G2 = per_sample_weight_grads(last, v2.a, v1.t)
    want_sym = (G + G2) @ (G + G2).T
    got_sym = tracin_matrix_views([v1.p, v2.p], [v2.t, v1.t], [v1.a, v2.a])
    assert (got_sym - want_sym).norm() / want_sym.norm() <= 1e-5


def _ctx(obj, data, idx, g, light=True):
    from ssl_bench.augment import AUGMENTATIONS

    x = data.train.images[idx]
    v1, v2 = AUGMENTATIONS.build({"name": "byol"})(x, g)
    v1, v2 = (v1 - 0.5) / 0.25, (v2 - 0.5) / 0.25
    out = obj(v1, v2)
    lv = AUGMENTATIONS.build({"name": "light"})
    return SelectionContext(
        out=out, labels=data.train.labels[idx], indices=idx, objective=obj, generator=g, lr=0.1,
        light_views=lambda: tuple((v - 0.5) / 0.25 for v in lv(x, g)), views=(v1, v2),
    )


@pytest.mark.parametrize("views", ["light", "train"])
def test_online_selector_is_the_argmax_of_the_matrix(views, breast, tiny_resnet):
    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 128}, tiny_resnet(1))
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(24)
    ctx = _ctx(obj, breast, idx, g)
    bn = [copy.deepcopy(m.running_mean) for m in obj.modules() if isinstance(m, torch.nn.BatchNorm2d)][:3]
    sel = SELECTORS.build({"name": "tracin", "k": 2, "views": views})
    sel.setup(obj, breast)
    extra = sel.select(ctx)
    assert extra.shape == (24, 2) and not (extra == idx[:, None]).any()
    if views == "train":  # reuses the step's forward and scores the symmetrised loss
        v1, v2 = ctx.out.views
        m = tracin_matrix_views([v1.p, v2.p], [v2.t, v1.t], [v1.a, v2.a], lr=0.1).detach()
    else:  # light views: the selector's own forward must leave BatchNorm statistics untouched
        after = [m.running_mean for m in obj.modules() if isinstance(m, torch.nn.BatchNorm2d)][:3]
        assert all(torch.equal(x, y) for x, y in zip(bn, after))
        with torch.no_grad():
            from ssl_bench.selectors.models import batchnorm_stats_frozen

            with batchnorm_stats_frozen(obj):
                x1, x2 = ctx.light_views()
                v1 = obj.online(x1)
                m = tracin_matrix(v1.p, obj.target(x2), v1.a, lr=0.1)  # light views: q(view 1) vs z'(view 2)
    m.fill_diagonal_(float("-inf"))
    assert torch.equal(extra[:, 0], m.argmax(1))


def test_pretrained_selector_never_changes_frozen_weights(breast, tiny_resnet, tmp_path):
    src = OBJECTIVES.build({"name": "byol", "hidden_dim": 128}, tiny_resnet(1))
    recipe = {"backbone": {"name": "resnet18", "small_image_stem": True}, "objective": {"name": "byol", "hidden_dim": 128}}
    torch.save({"objective": src.state_dict(), "recipe": recipe}, tmp_path / "last.pt")
    sel = SELECTORS.build({"name": "tracin", "model": "pretrained", "checkpoint": str(tmp_path / "last.pt")})
    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 128}, tiny_resnet(1))
    sel.setup(obj, breast)
    before = copy.deepcopy(sel.frozen.state_dict())
    assert all(torch.equal(before[k], v) for k, v in src.state_dict().items())
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(0)
    for step in range(2):
        ctx = _ctx(obj, breast, torch.arange(16) + 16 * step, g)
        extra = sel.select(ctx)
        loss = obj.loss(ctx.out, extra)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not any(p.requires_grad for p in sel.frozen.parameters())
    for k, v in sel.frozen.state_dict().items():
        assert torch.equal(before[k], v), k


def test_pretrained_needs_a_checkpoint_and_a_predictor(breast, tiny_resnet, tmp_path):
    from ssl_bench.errors import SSLBenchError

    with pytest.raises(SSLBenchError, match="selector.checkpoint is required"):
        SELECTORS.build({"name": "tracin", "model": "pretrained"})
    sel = SELECTORS.build({"name": "tracin", "model": "pretrained", "checkpoint": str(tmp_path / "none")})
    with pytest.raises(SSLBenchError, match="checkpoint not found"):
        sel.setup(None, breast)
    from ssl_bench.selectors.base import check_compatible

    simclr = OBJECTIVES.build({"name": "simclr"}, tiny_resnet(1))
    with pytest.raises(SSLBenchError, match=r"selector 'tracin' needs the objective's prediction p .* objective 'simclr' does not provide"):
        check_compatible(SELECTORS.build({"name": "tracin"}), simclr, "tracin", "simclr")
