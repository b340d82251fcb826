"""TracIn in closed form equals the Gram matrix of true per-sample gradients (autograd)."""

import copy
from pathlib import Path

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


@pytest.mark.slow
@pytest.mark.parametrize("views, symmetric", [("light", None), ("light", True), ("train", None)])
def test_online_selector_is_the_argmax_of_the_matrix(views, symmetric, breast, tiny_resnet):
    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 128}, tiny_resnet(1))
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(24)
    ctx = _ctx(obj, breast, idx, g)
    bn = [copy.deepcopy(m.running_mean) for m in obj.modules() if isinstance(m, torch.nn.BatchNorm2d)][:3]
    sel = SELECTORS.build({"name": "tracin", "k": 2, "views": views, "symmetric": symmetric})
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
                if symmetric:  # both orders on the light views: 4 passes
                    v2 = obj.online(x2)
                    m = tracin_matrix_views([v1.p, v2.p], [obj.target(x2), obj.target(x1)], [v1.a, v2.a], lr=0.1)
                else:  # the default on light views: q(view 1) vs z'(view 2)
                    m = tracin_matrix(v1.p, obj.target(x2), v1.a, lr=0.1)
    m.fill_diagonal_(float("-inf"))
    assert torch.equal(extra[:, 0], m.argmax(1))


@pytest.mark.slow
def test_producer_runs_selector_never_changes_frozen_weights(breast, tiny_resnet, tmp_path):
    src = OBJECTIVES.build({"name": "byol", "hidden_dim": 128}, tiny_resnet(1))
    recipe = {"backbone": {"name": "resnet18", "small_image_stem": True},
              "objective": {"name": "byol", "hidden_dim": 128}}
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


def test_producer_runs_needs_a_checkpoint_and_a_predictor(breast, tiny_resnet, tmp_path):
    from ssl_bench.errors import SSLBenchError

    with pytest.raises(SSLBenchError, match="selector.checkpoint is required"):
        SELECTORS.build({"name": "tracin", "model": "pretrained"})
    sel = SELECTORS.build({"name": "tracin", "model": "pretrained", "checkpoint": str(tmp_path / "none")})
    with pytest.raises(SSLBenchError, match="checkpoint not found"):
        sel.setup(None, breast)
    from ssl_bench.selectors.base import check_compatible

    simclr = OBJECTIVES.build({"name": "simclr"}, tiny_resnet(1))
    with pytest.raises(SSLBenchError, match=r"selector 'tracin' needs the objective's prediction p .* objective "
                                            r"'simclr' does not provide"):
        check_compatible(SELECTORS.build({"name": "tracin"}), simclr, "tracin", "simclr")


@pytest.mark.parametrize("symmetric", [False, True])
def test_normalized_tracin_is_the_cosine_of_autograd_gradients(breast, tiny_resnet, symmetric):
    """``normalize: true`` (TracIn-cos) equals the cosine of true per-sample last-layer gradients,
    in the one-process matrix and in the data-parallel rectangular form."""
    from tests.conftest import real_batch

    from ssl_bench.selectors.tracin import tracin_cross

    obj = OBJECTIVES.build({"name": "byol", "hidden_dim": 128}, tiny_resnet(1)).double()
    x1, _ = real_batch(breast, n=12, seed=3)
    x2 = torch.flip(x1, dims=[3])
    with torch.no_grad():
        v1, v2 = obj(x1.double(), x2.double()).views
    last = obj.predictor.layers[-1]
    G = per_sample_weight_grads(last, v1.a, v2.t)
    if symmetric:
        G = G + per_sample_weight_grads(last, v2.a, v1.t)
        q, z, a = [v1.p, v2.p], [v2.t, v1.t], [v1.a, v2.a]
    else:
        q, z, a = [v1.p], [v2.t], [v1.a]
    Gn = G / G.norm(dim=1, keepdim=True)
    want = Gn @ Gn.T
    got = tracin_matrix_views(q, z, a, lr=0.3, normalize=True)  # lr cancels in a cosine
    assert (got - want).abs().max() <= 1e-9
    assert torch.allclose(got.diagonal(), torch.ones(12, dtype=torch.float64))
    gs = [byol_loss_grad(q_, z_) for q_, z_ in zip(q, z)]
    rect = tracin_cross([g[:5] for g in gs], [t[:5] for t in a], gs, a, normalize=True)  # rank 0's 5 anchors
    assert (rect - want[:5]).abs().max() <= 1e-9


def test_rectangular_form_is_rows_of_the_batch_matrix_with_the_same_defaults():
    """``tracin_cross`` (data-parallel ranks) scores B anchors against N candidates: the anchors'
    rows of :func:`tracin_matrix_views`, called alike, with its defaults (lr 1, raw inner product).
    Small predictor inputs (squared gradient norms ≪ 1) still give a cosine: 1 on the diagonal."""
    from ssl_bench.selectors.tracin import tracin_cross

    g = torch.Generator().manual_seed(4)
    q, z, a = ([torch.randn(10, d, generator=g, dtype=torch.float64) * s for _ in range(2)]
               for d, s in ((6, 1), (6, 1), (9, 0.1)))
    gs = [byol_loss_grad(q_, z_) for q_, z_ in zip(q, z)]
    rows = slice(4, 7)  # a rank holding global rows 4-6
    for kw in ({}, {"lr": 0.3}, {"normalize": True}):
        want = tracin_matrix_views(q, z, a, **kw)[rows]
        got = tracin_cross([t[rows] for t in gs], [t[rows] for t in a], gs, a, **kw)
        assert (got - want).abs().max() <= 1e-12 * want.abs().max(), kw
    cos = tracin_matrix_views(q, z, a, normalize=True)
    assert torch.allclose(cos.diagonal(), torch.ones(10, dtype=torch.float64)) and cos.abs().max() <= 1 + 1e-12


@pytest.mark.slow
def test_tracincp_sums_the_kept_checkpoints_weighted_by_their_learning_rate(tmp_path):
    """A consumer naming its producer recipe with ``checkpoints: [1, 2]`` has the producer keep those
    epochs; its scores equal Σ_c lr_c · (G_c G_cᵀ) of per-sample autograd gradients of each kept
    network, with lr_c the learning rate the producer logged at epoch c."""
    import json

    import yaml

    from ssl_bench.recipe import load_recipe
    from ssl_bench.train import run
    from tests.helpers import breast_recipe

    producer = breast_recipe(name="producer", train={"epochs": 2, "batch_size": 64, "lr": 0.05, "threads": 2})
    producer["out_dir"] = str(tmp_path / "runs")
    (tmp_path / "producer.yaml").write_text(yaml.safe_dump(producer))
    consumer = breast_recipe(name="consumer",
                             selector={"name": "tracin", "model": "pretrained", "checkpoint": "producer.yaml",
                                                        "checkpoints": [1, 2]})
    consumer["out_dir"] = str(tmp_path / "runs")
    consumer["train"]["epochs"] = 1
    (tmp_path / "consumer.yaml").write_text(yaml.safe_dump(consumer))
    cons_dir = run(load_recipe(tmp_path / "consumer.yaml"), out=tmp_path / "consumer", progress=False,
                   log=lambda m: None)
    res = json.loads((cons_dir / "results.json").read_text())
    assert res["method"] == "BYOL-TracInCP-pretrained"
    prod_dir = Path(yaml.safe_load((cons_dir / "recipe.yaml").read_text())["selector"]["checkpoint"])
    assert sorted(p.name for p in (prod_dir / "checkpoints").glob("epoch*.pt")) == ["epoch0001.pt", "epoch0002.pt"]
    lrs = [json.loads(line)["lr"] for line in (prod_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(lrs) == 2 and lrs[0] != lrs[1]

    from ssl_bench.data import DATASETS
    from ssl_bench.run_loader import load_run

    data = DATASETS.build({"name": "medmnist", "flag": "breastmnist", "download": False})
    sel = SELECTORS.build({"name": "tracin", "model": "pretrained", "checkpoint": str(prod_dir), "checkpoints": [1, 2]})
    sel.setup(None, data)
    x = (data.train.images[:16].float() / 255 - 0.5) / 0.25
    x1, x2 = x, torch.flip(x, dims=[3])
    ctx = SelectionContext(out=None, labels=data.train.labels[:16], indices=torch.arange(16), objective=None,
                           generator=torch.Generator().manual_seed(0), lr=0.1, light_views=lambda: (x1, x2),
                           views=(x1, x2))
    got = sel.scores(ctx)
    cos = SELECTORS.build({"name": "tracin", "model": "pretrained", "checkpoint": str(prod_dir), "checkpoints": [1, 2],
                           "normalize": True})
    cos.setup(None, data)
    got_cos = cos.scores(ctx)
    want = torch.zeros(16, 16, dtype=torch.float64)
    want_cos = torch.zeros(16, 16, dtype=torch.float64)  # normalize: Σ_c lr_c · cos_c
    for epoch, lr in zip((1, 2), lrs):
        net = load_run(prod_dir / "checkpoints" / f"epoch{epoch:04d}.pt", in_chans=1).objective.double()
        with torch.no_grad():
            o1 = net.online(x1.double())
            z = net.target(x2.double())
        G = per_sample_weight_grads(net.predictor.layers[-1], o1.a, z)
        want += lr * G @ G.T
        Gn = G / G.norm(dim=1, keepdim=True)
        want_cos += lr * Gn @ Gn.T
    assert (got.double() - want).norm() / want.norm() <= 1e-4
    assert (got_cos.double() - want_cos).norm() / want_cos.norm() <= 1e-4
    with pytest.raises(Exception, match=r"kept no checkpoint of epoch 3 \(epoch0003.pt\); "
                                        r"train it with train.save_epochs=\[1, 3\]"):
        SELECTORS.build({"name": "tracin", "model": "pretrained", "checkpoint": str(prod_dir),
                         "checkpoints": [1, 3]}).setup(None, data)


@pytest.mark.parametrize("epochs", [[], [0], [2, -1], ["2"], [True], [1.5]])
def test_tracincp_refuses_what_is_not_a_list_of_epochs(epochs, tmp_path):
    from ssl_bench.errors import SSLBenchError

    with pytest.raises(SSLBenchError,
                       match=r"^recipe key selector.checkpoints must list epochs ≥ 1 of the pretrained run, got "):
        SELECTORS.build({"name": "tracin", "model": "pretrained", "checkpoint": str(tmp_path), "checkpoints": epochs})


def test_tracincp_needs_a_pretrained_model():
    from ssl_bench.errors import SSLBenchError

    with pytest.raises(SSLBenchError,
                       match=r"^recipe key selector.checkpoints \(TracInCP\) needs selector.model: pretrained$"):
        SELECTORS.build({"name": "tracin", "checkpoints": [1, 2]})
    assert SELECTORS.build({"name": "tracin"}).display == "TracIn"
