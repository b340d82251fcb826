"""Every shipped recipe builds — selector, objective, augmentations, evaluations — on a tiny real
dataset in place of its own; the on-the-fly ISIC and ChestX-ray14 rows run end to end without
training a producer."""

import json
from pathlib import Path

import pytest
import torch

from ssl_bench.components import build_components
from ssl_bench.recipe import load_recipe
from tests.data.layouts import ham_rows, write_ham10000
from tests.data.test_chestxray import write_chestxray14

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml"))


@pytest.fixture(scope="module")
def tiny(module_dir):
    """Small folders in the official layouts (real HAM10000 JPEGs with lesion groups; real chest X-rays
    as ChestX-ray14) and one frozen BYOL checkpoint per channel count, for the pretrained rows."""
    from ssl_bench.backbones import build_backbone
    from ssl_bench.objectives import OBJECTIVES

    root = module_dir / "tiny"
    root.mkdir()
    ham = write_ham10000(root / "ham", ham_rows(48))
    write_chestxray14(root / "cxr", n=40)
    ckpts = {}
    for channels in (1, 3):
        torch.manual_seed(0)
        cfg = load_recipe(data={"data": {"name": "medmnist", "flag": "breastmnist"},
                                "objective": {"name": "byol", "hidden_dim": 64}}).cfg
        obj = OBJECTIVES.build(cfg["objective"], build_backbone(cfg["backbone"], in_chans=channels))
        ckpts[channels] = root / f"frozen{channels}.pt"
        torch.save({"objective": obj.state_dict(), "recipe": cfg, "epoch": 1,
                    "normalize": {"mean": torch.full((channels,), 0.5), "std": torch.full((channels,), 0.25)}},
                   ckpts[channels])
    return {"isic": ham, "chestxray14": root / "cxr", "ckpt": ckpts}


def _tiny_overrides(path: str, tiny) -> list[str]:
    cfg = load_recipe(REPO / path).cfg
    sets = []
    name = cfg["data"]["name"]
    if name in ("isic", "chestxray14"):
        sets.append(f"data.root={tiny[name]}")
        if name == "isic":
            sets.append("data.layout=ham10000")
    if cfg["selector"].get("model") == "pretrained":
        channels = 1 if name == "chestxray14" or cfg["data"].get("flag") in ("breastmnist", "pneumoniamnist") else 3
        ckpt = tiny["ckpt"][channels]
        if cfg["selector"].get("checkpoints"):  # TracInCP: a run directory keeping those epochs' networks
            from ssl_bench.checkpoint import epoch_path

            ckpt = ckpt.parent / f"run{channels}"
            for e in cfg["selector"]["checkpoints"]:
                epoch_path(ckpt, e).parent.mkdir(parents=True, exist_ok=True)
                state = torch.load(tiny["ckpt"][channels], weights_only=True)
                torch.save({**state, "epoch": e, "lr": 0.1}, epoch_path(ckpt, e))
            torch.save(state, epoch_path(ckpt, 1).parent / "last.pt")
        sets.append(f"selector.checkpoint={ckpt}")
    return sets


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES)
def test_every_shipped_recipe_builds_its_components(path, tiny):
    recipe = load_recipe(REPO / path, _tiny_overrides(path, tiny))  # also: the selector fits the objective
    cfg = recipe.cfg
    torch.manual_seed(0)
    comp = build_components(recipe)  # data, views, backbone, objective, selector (a frozen network loaded), evaluations
    assert len(comp.evaluations) == len(cfg["evaluate"])
    assert [ev.registered_name for ev in comp.evaluations] == [e["name"] for e in cfg["evaluate"]]
    x = comp.data.train.images[:4]
    v1, v2 = comp.augment(x, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == (4, comp.data.channels, comp.view_size, comp.view_size)
    if cfg["selector"].get("model") == "pretrained":
        assert comp.selector.frozen is not None and not any(p.requires_grad for p in comp.selector.frozen.parameters())


ON_THE_FLY = ["recipes/isic/tracin_isic.yaml", "recipes/isic/fs_isic.yaml",
              "recipes/chestxray/tracin_chestxray14.yaml", "recipes/chestxray/fs_chestxray14.yaml"]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("path", ON_THE_FLY)
def test_on_the_fly_rows_run_without_a_producer(path, tiny, tmp_path):
    from ssl_bench.train import run

    out_dir = tmp_path / "runs"
    sets = _tiny_overrides(path, tiny) + [
        "train.epochs=1", "train.batch_size=16", "train.threads=2", "objective.hidden_dim=256", "data.size=36",
        "augment.size=32", "evaluate=[{name: knn, k: 5}]", f"out_dir={out_dir}",
    ]
    recipe = load_recipe(REPO / path, sets)
    assert recipe.cfg["selector"]["model"] == "online" and recipe.cfg["selector"]["checkpoint"] is None
    said = []
    threads = torch.get_num_threads()
    try:
        run_dir = run(recipe, progress=False, log=said.append)
    finally:
        torch.set_num_threads(threads)
    assert not any("pretrained checkpoint" in s for s in said), said  # no producer was looked for or run
    assert [p.name for p in out_dir.iterdir()] == [recipe.cfg["name"]]  # this run only, no producer's
    res = json.loads((run_dir / "results.json").read_text())
    assert res["method"] in ("BYOL-TracIn", "FS") and res["train"]["selector_precision"] is not None
