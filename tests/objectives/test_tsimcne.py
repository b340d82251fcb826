"""t-SimCNE: the Cauchy InfoNCE loss and the three-stage schedule, on real BreastMNIST images."""

import copy

import pytest
import torch

from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives import OBJECTIVES, StepOutput, ViewOutput
from ssl_bench.objectives.tsimcne import cauchy_infonce
from ssl_bench.recipe import TrainConfig
from ssl_bench.schedule import check_stages, enter_epoch, staged_lr
from tests.helpers import breast_recipe, real_batch, real_step
from tests.objectives.test_objectives import _Flat, _views


@pytest.fixture
def resnet():
    """The recipes' ResNet-18 (3×3 stem, max-pool kept: 4× cheaper than without at 28 px)."""
    from ssl_bench.backbones import build_backbone

    torch.manual_seed(0)
    return build_backbone({"name": "resnet18", "small_image_stem": True, "stem_pool": True}, in_chans=1)


def _direct(z1, z2, extra=None, weight=1.0):
    """Term by term: ℓ_i = −log q(i, pos) / Σ_{k≠i} q(i, k), q = 1 / (1 + ‖z_i − z_k‖²)."""
    z = torch.cat([z1, z2]).double()
    n, b = len(z), len(z1)
    q = lambda i, k: 1.0 / (1.0 + ((z[i] - z[k]) ** 2).sum())  # noqa: E731
    total = 0.0
    for i in range(n):
        denom = sum(q(i, k) for k in range(n) if k != i)
        def other(j, i=i):  # the other view of sample j
            return j + b if i < b else j

        li = -torch.log(q(i, other(i % b)) / denom)
        if extra is not None:
            js = [int(j) for j in extra[i % b] if j >= 0]
            if js:
                li = li + weight * sum(-torch.log(q(i, other(j)) / denom) for j in js) / len(js)
        total = total + li
    return total / n


def test_cauchy_loss_matches_direct_computation():
    torch.manual_seed(0)
    for d in (2, 16):
        z1, z2 = torch.randn(5, d) * 2, torch.randn(5, d) * 2
        assert cauchy_infonce(z1, z2).double() == pytest.approx(float(_direct(z1, z2)), rel=1e-5)
        extra = torch.tensor([[3, -1], [-1, -1], [0, 4], [-1, -1], [2, -1]])
        got = cauchy_infonce(z1, z2, extra, weight=0.5)
        assert got.double() == pytest.approx(float(_direct(z1, z2, extra, 0.5)), rel=1e-5)
        # weight 1
        assert cauchy_infonce(z1, z2, extra).double() == pytest.approx(float(_direct(z1, z2, extra, 1.0)), rel=1e-5)
        obj = OBJECTIVES.build({"name": "tsimcne", "hidden_dim": 8}, _Flat())
        out = StepOutput((ViewOutput(h=z1, z=z1, t=z1), ViewOutput(h=z2, z=z2, t=z2)))
        assert obj.loss(out, extra).double() == pytest.approx(float(_direct(z1, z2, extra, 1.0)), rel=1e-5)
    # identical views far from everything else: the Cauchy loss tends to its lower bound 0
    z = torch.arange(8.0)[:, None] * torch.tensor([[100.0, 0.0]])
    assert float(cauchy_infonce(z, z)) < 1e-3


@pytest.mark.slow
def test_loss_decreases_on_a_real_batch(breast, resnet):
    obj = OBJECTIVES.build({"name": "tsimcne", "hidden_dim": 256, "stages": [3, 1, 1]}, resnet)
    obj.begin_epoch(1)
    x1, x2, _ = _views(breast, n=16)
    opt = torch.optim.SGD(obj.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        loss = obj.loss(obj(x1, x2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.slow
def test_three_stages_freeze_exactly_what_the_paper_freezes(breast):
    """The loop's own step and stage switch (one optimiser over all parameters, weight decay and
    momentum on) on real BreastMNIST images."""
    cfg = breast_recipe(
        augment={"name": "simclr"}, objective={"name": "tsimcne", "hidden_dim": 128, "stages": [1, 2, 1]},
        train={"epochs": 4, "batch_size": 16, "lr": 0.05, "weight_decay": 5e-4},
    )
    step, _ = real_step(cfg)
    obj, opt = step.objective, step.optimizer
    state = getattr(opt, "optimizer", opt).state
    batch = real_batch(breast, 16)
    x = step.prep(step.augment.view1(batch.images, torch.Generator().manual_seed(0)))

    def changed(before):
        after = obj.state_dict()
        return {k for k in after if not torch.equal(before[k], after[k])}

    # stage 1: 128-D pre-training; the 2-D layer is not used, so it does not move
    assert enter_epoch(obj, opt, 1).index == 0
    with torch.no_grad():
        assert obj.eval()(x, x).views[0].z.shape == (16, 128)
    obj.train()
    before = copy.deepcopy(obj.state_dict())
    step(batch, lr=0.05, step=0)
    moved = changed(before)
    assert not any(k.startswith("head_2d") for k in moved)
    assert any(k.startswith("backbone") and "running_mean" in k for k in moved)  # BN statistics update
    assert len(state) > 0  # momentum buffers of stage 1

    # stage 2 (two epochs): of the parameters only the new 2-D layer changes; the other weights and the
    # 128-D layer are bit-identical, although momentum and weight decay are on for them in the same
    # optimiser (the frozen parts stay in train mode, as in the reference: BatchNorm statistics move)
    before = copy.deepcopy(obj.state_dict())
    for epoch in (2, 3):
        st = enter_epoch(obj, opt, epoch)
        assert st.index == 1
        step(batch, lr=0.05, step=epoch - 1)
    params = {k for k, _ in obj.named_parameters()}
    assert changed(before) & params == {"head_2d.weight", "head_2d.bias"}
    assert obj.backbone.training is True and obj.head_2d.training is True
    with torch.no_grad():
        assert obj(x, x).views[0].z.shape == (16, 2)

    # stage 3: everything but the dropped 128-D layer is fine-tuned, from a fresh optimiser state
    before = copy.deepcopy(obj.state_dict())
    assert enter_epoch(obj, opt, 4).index == 2
    assert len(state) == 0
    assert obj.backbone.training and all(p.requires_grad for p in obj.backbone.parameters())
    step(batch, lr=0.05, step=3)
    moved = changed(before)
    assert {"head_2d.weight", "projector.layers.0.weight"} <= moved
    assert sum(k.startswith("backbone") and k.endswith("weight") for k in moved) > 10
    assert not any(k.startswith("projector.layers.2") for k in moved)

    # the stage depends on the epoch number only: a fresh objective (a resumed run) agrees
    fresh = OBJECTIVES.build({"name": "tsimcne", "hidden_dim": 128, "stages": [1, 2, 1]}, _identity())
    assert fresh.begin_epoch(3).index == 1 and not any(p.requires_grad for p in fresh.projector.parameters())
    assert fresh.begin_epoch(99).index == 2 and fresh.begin_epoch(0).index == 0


def _identity():
    bb = torch.nn.Identity()
    bb.num_features = 8
    return bb


def test_stage_learning_rates_and_epoch_check():
    obj = OBJECTIVES.build({"name": "tsimcne", "stages": [4, 2, 4], "stage_warmup": [1, 0, 1]}, _identity())
    stages = obj.stages()
    cfg = TrainConfig(epochs=10, lr=0.1)
    spe = 5
    lrs = [staged_lr(stages[(s // spe >= 4) + (s // spe >= 6)], s, 50, cfg, spe) for s in range(50)]
    assert lrs[0] == pytest.approx(0.1 / 5)  # linear warm-up of stage 1
    assert lrs[5] == pytest.approx(0.1)  # peak after one warm-up epoch
    assert lrs[20] == pytest.approx(0.1)  # stage 2: no warm-up, restarts at lr
    assert lrs[30] == pytest.approx(1e-4 / 5)  # stage 3: 1000× lower, own warm-up
    assert max(lrs[30:]) == pytest.approx(1e-4) and lrs[-1] > 0
    check_stages(obj, cfg)
    check_stages(obj, TrainConfig(epochs=0))  # the untrained baseline
    with pytest.raises(SSLBenchError, match=r"train.epochs is 8 but objective.stages \[4, 2, 4\] sum to 10"):
        check_stages(obj, TrainConfig(epochs=8))
    with pytest.raises(SSLBenchError, match="objective.stages"):
        OBJECTIVES.build({"name": "tsimcne", "stages": [0, 1, 1]}, _identity())


def test_the_stage_of_an_epoch_skips_empty_stages():
    """Stages of 0 epochs are skipped: an epoch belongs to the non-empty stage whose range holds it;
    epoch 0 (before training) to the first stage, epochs past the end to the last stage that ran."""
    from ssl_bench.objectives.base import make_stages, stage_at

    stages = make_stages([3, 0, 2, 0], [1.0, 0.5, 0.25, 0.1], [1, 0, 0, 0])
    assert [(s.first_epoch, s.last_epoch) for s in stages] == [(1, 3), (4, 3), (4, 5), (6, 5)]
    assert [stage_at(stages, e).index for e in range(0, 8)] == [0, 0, 0, 0, 2, 2, 2, 2]
    skipped_first = make_stages([0, 2], [1.0, 0.5], [0, 0])
    assert [stage_at(skipped_first, e).index for e in (1, 2, 3)] == [1, 1, 1]


@pytest.mark.parametrize("key, bad, good", [
    ("stages", [0, 1, 1], [1, 0, 0]), ("stages", [2, -1, 1], [2, 0, 1]), ("stages", [0, 0, 0], [1, 1, 1]),
    ("stage_lr", [1.0, 0.0, 1.0], [1.0, 1e-6, 1.0]), ("stage_warmup", [1.0, -0.5, 0.0], [0.0, 0.0, 0.0]),
    ("projection_dim", 0, 1), ("hidden_dim", 0, 1), ("output_dim", 0, 1),
])
def test_tsimcne_refuses_stages_rates_and_sizes_out_of_range(key, bad, good):
    """Each recipe key is checked at its bound: the value just inside is accepted."""
    with pytest.raises(SSLBenchError, match=rf"^recipe key objective.{key} must be "):
        OBJECTIVES.build({"name": "tsimcne", key: bad}, _Flat())
    assert OBJECTIVES.build({"name": "tsimcne", key: good}, _Flat()).stages()


def test_tsimcne_heads_before_training_and_in_the_2d_stages():
    """Built, it is in stage 1 (the projector's 128-D output); in stages 2 and 3 the 2-D layer reads
    the projector's hidden layer: head_2d(ReLU(W₁ h + b₁))."""
    obj = OBJECTIVES.build({"name": "tsimcne", "hidden_dim": 16, "stages": [1, 1, 1]}, _Flat()).eval()
    h = torch.randn(5, 8)
    with torch.no_grad():
        assert torch.equal(obj.online(h).z, obj.projector(h)) and obj.online(h).z.shape == (5, 128)
        for stage in (1, 2):
            obj.set_stage(stage)
            want = obj.head_2d(torch.relu(obj.projector.layers[0](h)))
            assert torch.allclose(obj.online(h).z, want) and want.shape == (5, 2)
