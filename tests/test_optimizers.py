"""train.optimizer: lars and train.exclude_bn_bias_wd, each checked against its definition."""

import math

import torch
from torch import nn

from ssl_bench.recipe import TrainConfig, load_recipe
from ssl_bench.schedule import build_optimizer, param_groups
from ssl_bench.train import training_step
from tests.test_hostile_input import BREAST


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3), nn.LayerNorm(3))


def test_exclude_bn_bias_wd_puts_norm_parameters_and_biases_in_a_group_without_decay():
    net = _net()
    groups = param_groups(net, TrainConfig(exclude_bn_bias_wd=True))
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[1]["weight_decay"] == 0.0 and "weight_decay" not in groups[0]
    assert decay == {id(net[0].weight), id(net[3].weight)}  # conv and linear weights only
    assert no_decay == {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias), id(net[4].weight),
                        id(net[4].bias)}
    assert len(param_groups(net, TrainConfig())) == 1  # off by default: one group, every parameter


def test_without_gradient_only_decayed_parameters_shrink():
    net = _net()
    cfg = TrainConfig(exclude_bn_bias_wd=True, lr=0.5, weight_decay=0.1, momentum=0.0)
    opt = build_optimizer(net, cfg)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in net.named_parameters():
        expected = before[n] * (1 - 0.5 * 0.1) if n in ("0.weight", "3.weight") else before[n]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7)


def test_lars_step_is_sgd_scaled_by_the_layerwise_trust_ratio():
    """You et al. 2017 (arXiv 1708.03888), Alg. 1: local lr = η‖w‖ / (‖∇w‖ + β‖w‖); the step is
    lr · local_lr · (∇w + βw).  Parameters without weight decay are not scaled (BYOL's exclusion)."""
    net = _net()
    lr, wd, eta = 0.2, 1e-3, 0.02
    opt = build_optimizer(net, TrainConfig(optimizer="lars", exclude_bn_bias_wd=True, lr=lr, weight_decay=wd,
                                           momentum=0.9, lars_trust_coefficient=eta))
    assert type(opt).__name__ == "LARS"
    torch.manual_seed(1)
    x = torch.randn(5, 1, 8, 8)
    net(x).square().sum().backward()
    before = {n: (p.detach().clone(), p.grad.detach().clone()) for n, p in net.named_parameters()}
    opt.step()
    for n, p in net.named_parameters():
        w, g = before[n]
        if n in ("0.weight", "3.weight"):
            local = eta * w.norm() / (g.norm() + wd * w.norm())
            expected = w - lr * local * (g + wd * w)  # first step: the momentum buffer is the update itself
        else:
            expected = w - lr * g
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)
    assert not math.isclose(float(net[0].weight.detach().norm()), float(before["0.weight"][0].norm()))


def test_a_recipe_trains_with_lars_and_the_split(tmp_path):
    recipe = load_recipe(BREAST, ["train.optimizer=lars", "train.exclude_bn_bias_wd=true", "backbone.name=resnet10t"])
    step, _ = training_step(recipe, device="cpu", total_steps=2)
    opt = getattr(step.optimizer, "optimizer", step.optimizer)
    assert type(opt).__name__ == "LARS" and len(opt.param_groups) == 2 and opt.param_groups[1]["weight_decay"] == 0.0
    trainable = {id(p) for p in step.objective.parameters() if p.requires_grad}
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable)  # every trainable parameter once, the EMA target none
