"""What the papers say, checked: the warm-up of BYOL-TracIn §4.1, fine-tuning on sharp views, the
method names and spread of its Table 1, TracIn's single-pair option, and t-SimCNE as its reference
implementation (N(0, 1) 2-D layer, BatchNorm in train mode in stage 2, gradients clipped by value)."""

import copy

import numpy as np
import pytest
import torch

from ssl_bench.compare import compare
from ssl_bench.errors import SSLBenchError
from ssl_bench.objectives import OBJECTIVES
from ssl_bench.recipe import TrainConfig, load_recipe
from ssl_bench.schedule import enter_epoch, lr_at
from ssl_bench.selectors.base import topk_excluding_self
from ssl_bench.selectors.tracin import tracin_matrix
from tests.helpers import breast_recipe, eval_context, real_batch, real_step
from tests.test_compare_tables import write_run


def test_constant_warmup_holds_the_learning_rate_then_decays():
    cfg = TrainConfig(lr=0.1, warmup_epochs=10, warmup="constant", epochs=300)
    spe, total = 5, 300 * 5
    assert [lr_at(s, total, cfg, spe) for s in (0, 1, 49)] == [0.1, 0.1, 0.1]  # "lr 0.1 for the first 10 epochs"
    assert lr_at(50, total, cfg, spe) == pytest.approx(0.1) and lr_at(51, total, cfg, spe) < 0.1  # then cosine
    linear = TrainConfig(lr=0.1, warmup_epochs=10, epochs=300)
    assert lr_at(0, total, linear, spe) == pytest.approx(0.1 / 50)  # the default ramp


def test_finetuning_views_are_written_into_the_recipe_and_the_paper_set_can_be_named(breast):
    """The fine-tuning views are the protocol's own, resolved in recipe.yaml (flips for ``finetune``,
    none for ``finetune_medmnist``), never the pre-training set unless named: the paper's "pre-training
    augmentations" are a recipe line away (docs/paper_fidelity.md says why they are not the default)."""
    paper = {"name": "byol", "blur": 0.0, "solarize": 0.0}
    recipe = load_recipe(data=breast_recipe(evaluate=[{"name": "finetune"}, {"name": "finetune_medmnist"},
                                                      {"name": "finetune", "augment": paper}]))
    auto, medmnist, named = recipe.cfg["evaluate"]
    assert auto["augment"] == {"name": "flip"} and medmnist["augment"] == {"name": "none"} and named["augment"] == paper
    assert recipe.cfg["augment"]["blur"] == [1.0, 0.1]  # the pre-training set keeps BYOL's
    from ssl_bench.evaluate import EVALUATIONS

    ctx = eval_context(breast, augment={"blur": [1.0, 1.0]})  # pre-training with blur on every view
    res = EVALUATIONS.build({"name": "finetune", "label_fraction": 0.1, "epochs": 1, "batch_size": 32,
                             "augment": paper}).run(ctx)
    assert res["augment"] == paper  # results.json says what it was
    view = ctx.view_of(res["augment"])
    x = breast.train.images[:8]
    blurred = ctx.view_of(ctx.augment_cfg)
    # same random numbers, with and without the blur: only the blur differs
    assert not torch.allclose(view(x, torch.Generator().manual_seed(0)), blurred(x, torch.Generator().manual_seed(0)))


def test_tracin_single_pair_on_the_steps_own_views(breast):
    step, _ = real_step(breast_recipe(selector={"name": "tracin", "views": "train", "symmetric": False}))
    seen = []
    loss = step.objective.loss
    step.objective.loss = lambda out, extra=None, weight=1.0: seen.append((out, extra)) or loss(out, extra, weight)
    step(real_batch(breast, 32), lr=0.05, step=0)
    [(out, extra)] = seen
    v1, v2 = out.views
    single = topk_excluding_self(tracin_matrix(v1.p, v2.t, v1.a, lr=0.05), 1)
    assert torch.equal(extra, single)  # q(view 1) against z'(view 2) only, as `symmetric: false` says


def test_method_names_follow_table_1():
    from ssl_bench.components import method_name
    from ssl_bench.selectors import SELECTORS

    byol = OBJECTIVES.get("byol")
    cases = [({"name": "tracin"}, "BYOL-TracIn"),
             ({"name": "tracin", "model": "pretrained", "checkpoint": "x"}, "BYOL-TracIn-pretrained"),
             ({"name": "fs", "model": "pretrained", "checkpoint": "x"}, "BYOL-FS-pretrained"),
             ({"name": "oracle"}, "BYOL-Sup"),
             ({"name": "none"}, "BYOL")]
    for sel, want in cases:
        assert method_name({"objective": {"name": "byol"}, "selector": sel}, SELECTORS.build(sel), byol) == want


def test_compare_never_averages_on_the_fly_and_pretrained_runs_of_one_name(tmp_path):
    write_run(tmp_path, "BYOL-TracIn", 0, {"knn": {"auc": 0.7}},
              recipe_extra={"selector": {"name": "tracin", "model": "online"}})
    write_run(tmp_path, "BYOL-TracIn", 1, {"knn": {"auc": 0.8}},
              recipe_extra={"selector": {"name": "tracin", "model": "pretrained"}})
    for allow in (False, True):
        with pytest.raises(SSLBenchError, match="mix selector.model online and pretrained"):
            compare([str(tmp_path)], metric="auc", allow_mixed=allow)


def test_one_pretraining_run_shows_the_std_of_its_finetuning_seeds(tmp_path):
    per_seed = [{"auc": v} for v in (0.70, 0.72, 0.75, 0.71, 0.77)]
    write_run(tmp_path, "BYOL", 0, {"finetune@0.1": {"auc": float(np.mean([0.70, 0.72, 0.75, 0.71, 0.77])),
                                                       "auc_std": float(np.std([0.70, 0.72, 0.75, 0.71, 0.77], ddof=1)),
                                                       "label_fraction": 0.1, "per_seed": per_seed}})
    table, md, _ = compare([str(tmp_path)], metric="auc", fmt="markdown")
    assert table.loc["BYOL", "HAM10000 · finetune@0.1"] == "0.730(.029)† n=1"
    assert "† one pre-training run: mean (std) over its 5 fine-tuning seeds" in md


def test_tsimcne_follows_its_reference_implementation(breast):
    from ssl_bench.backbones import build_backbone

    torch.manual_seed(0)
    obj = OBJECTIVES.build({"name": "tsimcne", "hidden_dim": 1024, "stages": [1, 1, 1]},
                           build_backbone({"name": "resnet18"}, in_chans=1))
    w = obj.head_2d.weight
    assert abs(float(w.std()) - 1.0) < 0.05  # N(0, 1), as mutate_model's nn.init.normal_(std=1)
    torch.manual_seed(0)
    old = OBJECTIVES.build({"name": "tsimcne", "hidden_dim": 1024, "stages": [1, 1, 1], "head_init": "default"},
                           build_backbone({"name": "resnet18"}, in_chans=1))
    assert float(old.head_2d.weight.std()) < 0.05  # PyTorch's default, ≈ 55× smaller
    # stage 2: gradients frozen, BatchNorm in train mode (its statistics keep updating), as the reference
    for mode, buffers_move in (("train", True), ("eval", False)):
        cfg = breast_recipe(augment={"name": "simclr"},
                            objective={"name": "tsimcne", "hidden_dim": 128, "stages": [1, 1, 1],
                            "stage2_batchnorm": mode}, train={"epochs": 3, "batch_size": 16})
        step, _ = real_step(cfg)
        enter_epoch(step.objective, step.optimizer, 2)
        before = copy.deepcopy(step.objective.state_dict())
        step(real_batch(breast, 16), lr=0.05, step=1)
        after = step.objective.state_dict()
        moved = {k for k in after if not torch.equal(before[k], after[k])}
        assert {k for k in moved if "running" not in k and "num_batches" not in k} == {"head_2d.weight", "head_2d.bias"}
        assert any("running_mean" in k for k in moved) == buffers_move, mode
        assert step.objective.backbone.training == (mode == "train")


def test_gradients_are_clipped_by_value_before_the_update(breast):
    step, _ = real_step(breast_recipe(train={"clip_grad_value": 1e-4}))
    seen = []
    update = step.optimizer.step
    step.optimizer.step = lambda *a, **k: seen.append(max(float(p.grad.abs().max()) for p in step.objective.parameters()
                                                          if p.grad is not None)) or update(*a, **k)
    step(real_batch(breast, 32), lr=0.05, step=0)
    assert seen and seen[0] <= 1e-4 + 1e-12
    with pytest.raises(SSLBenchError, match="train.clip_grad_value must be > 0"):
        load_recipe(data=breast_recipe(train={"clip_grad_value": 0.0}))


def test_poster_protocol_embeds_every_split_and_scores_a_stratified_90_10_split(breast, tmp_path):
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    from ssl_bench.evaluate import EVALUATIONS, EvalContext
    from tests.evaluate.test_embedding import _pca2
    from tests.evaluate.test_evaluate import _pixels

    ctx = EvalContext(data=breast, embed=_pixels, project=_pca2(breast), out_dir=tmp_path)
    ev = EVALUATIONS.build({"name": "embedding", "protocol": "poster", "seed": 3})
    m = ev.run(ctx)
    z = np.concatenate([ctx.projections(s)[0] for s in ("train", "val", "test")])
    y = np.concatenate([ctx.projections(s)[1].reshape(-1) for s in ("train", "val", "test")])
    tr, te = train_test_split(np.arange(len(y)), test_size=0.1, stratify=y, random_state=3)
    assert len(te) == 78  # 10 % of all 780 BreastMNIST images
    assert m["accuracy"] == pytest.approx((KNeighborsClassifier(15).fit(z[tr], y[tr]).predict(z[te]) == y[te]).mean())
    assert m["silhouette"] == pytest.approx(silhouette_score(z, y))  # on all points
    assert ev.key == "embedding@poster"
