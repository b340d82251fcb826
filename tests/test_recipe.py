import pytest

from ssl_bench.errors import SSLBenchError
from ssl_bench.recipe import load_recipe

BASE = """
name: base
data: {name: medmnist, flag: breastmnist}
backbone: {name: resnet18, small_image_stem: true}
objective: {name: byol, hidden_dim: 512}
selector: {name: oracle, k: 2, weight: 0.5}
train: {epochs: 3, batch_size: 32}
"""


@pytest.fixture
def base(tmp_path):
    p = tmp_path / "base.yaml"
    p.write_text(BASE)
    return p


def test_defaults_are_filled_and_saved_recipe_reloads(base, tmp_path):
    r = load_recipe(base)
    cfg = r.cfg
    assert cfg["train"]["lr"] == 0.1 and cfg["train"]["epochs"] == 3
    assert cfg["objective"]["momentum_base"] == 0.99 and cfg["objective"]["hidden_dim"] == 512
    assert cfg["augment"]["name"] == "byol" and cfg["evaluate"][0]["name"] == "linear"
    again = tmp_path / "resolved.yaml"
    again.write_text(r.to_yaml())
    assert load_recipe(again).cfg == cfg


def test_extends_and_typed_overrides(base, tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\ntrain: {epochs: 5}\n")
    r = load_recipe(child, ["train.lr=0.05", "seed=3", "train.channels_last=false", "selector.k=1"])
    assert r.name == "child"
    assert r.cfg["train"]["epochs"] == 5 and r.cfg["train"]["batch_size"] == 32
    assert r.cfg["train"]["lr"] == 0.05 and isinstance(r.cfg["train"]["lr"], float)
    assert r.cfg["seed"] == 3 and r.cfg["train"]["channels_last"] is False
    assert r.cfg["selector"] == {"name": "oracle", "k": 1, "weight": 0.5}


def test_changing_a_component_drops_options_it_does_not_take(base):
    r = load_recipe(base, ["selector.name=none", "objective.name=simclr"])
    assert r.cfg["selector"] == {"name": "none"}
    assert r.cfg["objective"]["name"] == "simclr" and r.cfg["objective"]["hidden_dim"] == 512
    assert "momentum_base" not in r.cfg["objective"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("trian.epochs=2", r"unknown recipe key 'trian' — did you mean 'train'\?"),
        ("train.epocs=2", r"unknown recipe key train\.epocs for train — did you mean 'epochs'\?"),
        ("train.epochs=two", r"recipe key train\.epochs must be int, got str 'two'"),
        ("train.epochs=-1", r"recipe key train\.epochs must be ≥ 0"),
        ("train.optimizer=lamb", r"recipe key train\.optimizer must be Literal\['sgd', 'adamw', 'lars'\]"),
        ("selector.name=tracn", r"unknown selector 'tracn' \(recipe key selector\.name\)"),
        ("objective.temperature=0.1", r"unknown recipe key objective\.temperature for objective 'byol'"),
        ("backbone.name=resnt18", r"unknown backbone 'resnt18'.*did you mean 'resnet18'"),
        ("backbone.small_image_stem=3", r"recipe key backbone\.small_image_stem must be bool"),
        ("selector.k=32", r"selector\.k \(32\) must be smaller than train\.batch_size \(32\)"),
        ("augment.name=byl", r"unknown augmentation 'byl'.*did you mean 'byol'"),
        ("seed=abc", r"recipe key seed must be int"),
        ("plugins=[nothere.py]", r"plugin file not found: nothere\.py"),
        ("evaluate=[{name: knn, kk: 3}]", r"unknown recipe key evaluate\[0\]\.kk for evaluation 'knn'"),
        ("train.device=tpu", r"train\.device must be auto, cpu"),
        ("train.device=cuda:x", r"train\.device must be auto, cpu"),
        ("train.precision=fp17", r"recipe key train\.precision must be Literal"),
        ("train.threads=0", r"train\.threads must be ≥ 1"),
        ("evaluate=[{name: linear, test_split: tset}]", r"evaluate\[0\]\.test_split must be Literal"),
    ],
)
def test_bad_recipes_raise_one_line(base, override, message):
    with pytest.raises(SSLBenchError, match=message) as e:
        load_recipe(base, [override])
    assert "\n" not in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(SSLBenchError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: medmnist\n")
    with pytest.raises(SSLBenchError, match="not valid YAML"):
        load_recipe(bad)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\n")
    b.write_text("extends: a.yaml\n")
    with pytest.raises(SSLBenchError, match="cycle"):
        load_recipe(a)
    nodata = tmp_path / "nodata.yaml"
    nodata.write_text("seed: 1\n")
    with pytest.raises(SSLBenchError, match="recipe key data is missing"):
        load_recipe(nodata)


@pytest.mark.slow
def test_shipped_recipes_load_and_their_resolved_form_reloads(tmp_path):
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[1] / "recipes").rglob("*.yaml"))
    assert len(recipes) >= 12
    for path in recipes:
        r = load_recipe(path)
        saved = tmp_path / f"{path.stem}.yaml"
        saved.write_text(r.to_yaml())
        assert load_recipe(saved).cfg == r.cfg, path


PLUGIN = '''
import torch
from ssl_bench.backbones import BACKBONES
from ssl_bench.selectors import SELECTORS, Selector


@BACKBONES.register("tiny_cnn_test")
class Tiny(torch.nn.Module):
    """A two-layer CNN."""

    def __init__(self, in_chans: int = 3, width: int = 8):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(in_chans, width, 3), torch.nn.AdaptiveAvgPool2d(1), \
torch.nn.Flatten())
        self.num_features = width

    def forward(self, x):
        return self.net(x)


@SELECTORS.register("plain_test")
class Plain(Selector):
    """Nothing."""

    def __init__(self, weight: float = 1.0):
        super().__init__(weight=weight)

    def select(self, ctx):
        return None
'''


def test_plugin_components_in_an_extending_recipe(base, tmp_path):
    """A plug-in backbone and selector named by a recipe that extends another (plug-ins load first)."""
    plug = tmp_path / "plug.py"
    plug.write_text(PLUGIN)
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: base.yaml\nplugins: [{plug}]\n"
                     "backbone: {name: tiny_cnn_test, width: 4}\nselector: {name: plain_test}\n")
    r = load_recipe(child)
    assert r.cfg["backbone"] == {"name": "tiny_cnn_test", "in_chans": None, "width": 4}
    assert r.cfg["selector"] == {"name": "plain_test", "weight": 0.5}  # k dropped, weight kept
    from ssl_bench.backbones import build_backbone

    net = build_backbone(r.cfg["backbone"], in_chans=1)
    assert net.num_features == 4 and net.net[0].in_channels == 1  # the data's channels
    with pytest.raises(SSLBenchError, match=r"unknown recipe key backbone\.depth for backbone 'tiny_cnn_test'"):
        load_recipe(child, ["backbone.depth=2"])


def test_a_parent_recipes_relative_plugin_is_found_from_a_child_elsewhere(base, tmp_path, monkeypatch):
    """Plug-in paths are relative to the file that names them, also when a child in another folder extends it."""
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "plug.py").write_text(PLUGIN.replace("_test", "_parent_test"))  # names of its own
    (tmp_path / "parent" / "p.yaml").write_text(f"extends: {tmp_path / 'base.yaml'}\nplugins: [plug.py]\n"
                                                "selector: {name: plain_parent_test}\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.yaml").write_text("extends: ../parent/p.yaml\nname: c\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_recipe(tmp_path / "elsewhere" / "c.yaml").cfg["selector"]["name"] == "plain_parent_test"


def test_another_data_file_drops_inherited_class_names(tmp_path):
    """A recipe extending an npz recipe with class_names, on a file with another class count."""
    import numpy as np

    from tests.conftest import MEDMNIST_ROOT

    z = np.load(MEDMNIST_ROOT / "breastmnist.npz")
    np.savez(tmp_path / "two.npz", images=z["train_images"][:60], labels=z["train_labels"][:60])
    (tmp_path / "base.yaml").write_text(
        "data: {name: npz, path: seven.npz, class_names: [a, b, c, d, e, f, g]}\n"
        "train: {epochs: 1}\n")
    (tmp_path / "child.yaml").write_text(f"extends: base.yaml\ndata: {{path: {tmp_path / 'two.npz'}}}\n")
    r = load_recipe(tmp_path / "child.yaml")
    assert "class_names" not in r.cfg["data"] or r.cfg["data"]["class_names"] is None
    from ssl_bench.data import DATASETS

    assert DATASETS.build(r.cfg["data"]).class_names == ["0", "1"]
    # the same file elsewhere (data.root / a --set of other keys) keeps them
    keep = load_recipe(tmp_path / "base.yaml", ["data.group=null"])
    assert keep.cfg["data"]["class_names"] == list("abcdefg")
