"""The ISIC / ChestX-ray14 recipes: valid, paper hyper-parameters, baselines change one thing."""

from pathlib import Path

import pytest

from ssl_bench.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
FLAGSHIPS = {
    "isic": REPO / "recipes" / "byol_tracin_isic.yaml",
    "chestxray": REPO / "recipes" / "chestxray" / "byol_tracin_chestxray14.yaml",
}


@pytest.mark.parametrize("family", sorted(FLAGSHIPS))
def test_flagship_and_baselines(family):
    flag = load_recipe(FLAGSHIPS[family]).cfg
    t = flag["train"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["momentum"], t["weight_decay"],
            t["warmup_epochs"]) == (300, 256, 0.1, 0.9, 1e-5, 10)
    assert flag["backbone"]["name"] == "resnet18" and flag["data"]["size"] == 140 and flag["augment"]["size"] == 128
    assert (flag["objective"]["projection_dim"], flag["objective"]["momentum_base"],
            flag["objective"]["momentum_end"]) == (256, 0.99, 1.0)
    sel = flag["selector"]
    assert (sel["name"], sel["k"], sel["model"], sel["views"]) == ("tracin", 1, "pretrained", "light")
    producer = load_recipe(REPO / sel["checkpoint"]).cfg
    assert producer["selector"]["name"] == "none"
    finetunes = [e for e in flag["evaluate"] if e["name"] == "finetune"]
    assert [e["label_fraction"] for e in finetunes] == [0.1, 0.5, 1.0]
    assert all(e["seeds"] == 5 and e["epochs"] == 100 for e in finetunes)  # §4.1: 100 epochs, 5 seeds
    [transfer] = [e for e in flag["evaluate"] if e["name"] == "transfer"]
    assert transfer["protocol"]["epochs"] == 50  # transfer: 50 epochs
    # §4.1's augmentations: crop, h/v flips, rotation, colour jitter — no grayscale, blur, solarize
    aug = flag["augment"]
    assert (aug["crop"], aug["hflip"], aug["vflip"], aug["jitter"]) == (True, 0.5, 0.5, 0.8) and aug["rotation"] > 0
    assert (aug["grayscale"], aug["blur"], aug["solarize"]) == (0.0, 0.0, 0.0)
    for e in finetunes + [transfer["protocol"]]:  # fine-tuning: the validated protocol's own views (docs/validation.md)
        assert e["augment"] == {"name": "flip"}
    assert all(e["optimizer"] == "adam" and e["class_weight"] == "balanced" for e in finetunes)
    assert (t["warmup"], t["schedule"]) == ("constant", "cosine")  # lr 0.1 for 10 epochs, then cosine
    assert flag["method"] == "BYOL-TracIn-pretrained"
    folder = FLAGSHIPS[family].parent / family if family == "isic" else FLAGSHIPS[family].parent
    baselines = [p for p in sorted(folder.glob("*.yaml")) if p != FLAGSHIPS[family]]
    assert len(baselines) == 9
    methods = {}
    for p in baselines:
        cfg = load_recipe(p).cfg
        changed = {k for k in flag if cfg[k] != flag[k]}
        assert changed <= {"name", "method", "selector", "train"}, (p.name, changed)
        if "train" in changed:
            assert cfg["train"]["epochs"] == 0 and cfg["method"] == "Random"
        methods[cfg["method"]] = cfg["selector"]
        if cfg["selector"].get("model") == "online":  # an on-the-fly row inherits no producer
            assert cfg["selector"]["checkpoint"] is None, p.name
    # the rows of the paper's Table 1, named as there
    assert set(methods) == {"Random", "BYOL", "FS", "FS-pretrained", "BYOL-TracIn", "FNC", "FT", "MICLe", "BYOL-Sup"}
    assert methods["BYOL-TracIn"]["model"] == "online" and methods["FS-pretrained"]["model"] == "pretrained"


def test_data_root_from_the_environment(monkeypatch):
    monkeypatch.setenv("SSL_BENCH_ISIC_ROOT", "/data/isic2019")
    assert load_recipe(FLAGSHIPS["isic"]).cfg["data"]["root"] == "/data/isic2019"
    assert load_recipe(FLAGSHIPS["isic"], ["data.root=/elsewhere"]).cfg["data"]["root"] == "/elsewhere"


def test_breastmnist_table1_rows_change_one_thing():
    base = load_recipe(REPO / "recipes" / "medmnist" / "table1_breastmnist.yaml").cfg
    rows = sorted((REPO / "recipes" / "medmnist" / "table1").glob("*.yaml"))
    methods = set()
    for p in rows:
        cfg = load_recipe(p).cfg
        changed = {k for k in base if cfg[k] != base[k]}
        assert changed <= {"name", "method", "selector", "train"}, (p.name, changed)
        methods.add(cfg["method"])
        if cfg["selector"].get("model") == "pretrained":  # the producer is the vanilla BYOL base recipe
            assert load_recipe(REPO / cfg["selector"]["checkpoint"]).cfg["name"] == base["name"]
    assert {"Random", "FS", "FS-pretrained", "BYOL-TracIn", "BYOL-TracIn-pretrained", "BYOL-Sup", "FNC",
            "FT"} <= methods
