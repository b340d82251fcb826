"""Malformed recipes through `ssl-bench run`: exit 2, one line naming the problem, no traceback,
no run directory (each case is checked where a user meets it: the command line)."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench.cli import main

BASE = """
name: base
out_dir: {runs}
data: {{name: medmnist, flag: breastmnist}}
backbone: {{name: resnet18}}
objective: {{name: byol, hidden_dim: 256}}
train: {{epochs: 1, batch_size: 32, threads: 1}}
evaluate: [{{name: knn}}]
"""
FILES = {
    "raises.py": "raise RuntimeError('plug-in broken on purpose')\n",
    "notyaml.yaml": "name: x\ntrain: {epochs: 1\n",
    "list.yaml": "- a\n- b\n",
    "cycle_a.yaml": "extends: cycle_b.yaml\n",
    "cycle_b.yaml": "extends: cycle_a.yaml\n",
    "ext_missing.yaml": "extends: nothere.yaml\n",
    "nodata.yaml": "name: nodata\n",
}

# (id, recipe file, arguments, the one line's expected text ({d}: the folder of the files))
CASES = [
    ("unknown-top-key", "base.yaml", ["--set", "trian.epochs=2"], "unknown recipe key 'trian' — did you mean 'train'?"),
    ("unknown-train-key", "base.yaml", ["--set", "train.epohcs=2"],
     "unknown recipe key train.epohcs for train — did you mean 'epochs'?"),
    ("wrong-type", "base.yaml", ["--set", "train.batch_size=big"],
     "recipe key train.batch_size must be int, got str 'big'"),
    ("float-for-int", "base.yaml", ["--set", "train.epochs=1.5"], "recipe key train.epochs must be int, got float 1.5"),
    ("negative-epochs", "base.yaml", ["--set", "train.epochs=-3"], "recipe key train.epochs must be ≥ 0"),
    ("negative-lr", "base.yaml", ["--set", "train.lr=-0.1"], "recipe key train.lr must be ≥ 0, got -0.1"),
    ("batch-of-one", "base.yaml", ["--set", "train.batch_size=1"], "recipe key train.batch_size must be ≥ 2"),
    ("k-larger-than-batch", "base.yaml", ["--set", "selector.name=oracle", "--set", "selector.k=40"],
     "recipe key selector.k (40) must be smaller than train.batch_size (32)"),
    ("k-zero", "base.yaml", ["--set", "selector.name=oracle", "--set", "selector.k=0"],
     "recipe key selector.k must be ≥ 1, got 0"),
    ("negative-weight", "base.yaml", ["--set", "selector.name=oracle", "--set", "selector.weight=-1"],
     "recipe key selector.weight must be ≥ 0, got -1"),
    ("unknown-selector", "base.yaml", ["--set", "selector.name=orcle"],
     "unknown selector 'orcle' (recipe key selector.name) — did you mean 'oracle'"),
    ("unknown-objective", "base.yaml", ["--set", "objective.name=byl"],
     "unknown objective 'byl' (recipe key objective.name) — did you mean 'byol'?"),
    ("unknown-backbone", "base.yaml", ["--set", "backbone.name=resnt18"],
     "unknown backbone 'resnt18' (recipe key backbone.name"),
    ("unknown-augmentation", "base.yaml", ["--set", "augment.name=byl"],
     "unknown augmentation 'byl' (recipe key augment.name)"),
    ("unknown-dataset", "base.yaml", ["--set", "data.name=folderx"],
     "unknown dataset 'folderx' (recipe key data.name)"),
    ("unknown-dataset-flag", "base.yaml", ["--set", "data.flag=breastmnst"],
     "unknown MedMNIST flag 'breastmnst' (recipe key data.flag)"),
    ("unsupported-image-size", "base.yaml", ["--set", "data.size=17"],
     "recipe key data.size must be one of (28, 64, 128, 224)"),
    ("missing-npz", "base.yaml", ["--set", "data.name=npz", "--set", "data.path=/nonexistent/x.npz"],
     "npz file not found: /nonexistent/x.npz (recipe key data.path)"),
    ("pretrained-without-checkpoint", "base.yaml",
     ["--set", "selector.name=tracin", "--set", "selector.model=pretrained"],
     "recipe key selector.checkpoint is required with selector.model: pretrained"),
    ("pretrained-checkpoint-missing", "base.yaml",
     ["--set", "selector.name=tracin", "--set", "selector.model=pretrained", "--set",
      "selector.checkpoint=/nonexistent/run"],
     "checkpoint not found: /nonexistent/run (recipe key selector.checkpoint)"),
    ("plugin-missing", "base.yaml", ["--set", "plugins=[nothere.py]"],
     "plugin file not found: nothere.py (recipe key plugins[0], looked for "),
    ("plugin-raises", "base.yaml", ["--set", "plugins=[{d}/raises.py]"],
     "plugin {d}/raises.py (recipe key plugins[0]) failed to import: RuntimeError: plug-in broken on purpose"),
    ("plugins-not-a-list", "base.yaml", ["--set", "plugins=nothere.py"],
     "recipe key plugins must be a list of Python file paths"),
    ("backbone-cannot-take-image-size", "base.yaml", ["--set", "backbone.name=vit_tiny_patch16_224"],
     "backbone 'vit_tiny_patch16_224' cannot take 1×28×28 images"),
    ("selector-needs-groups", "base.yaml", ["--set", "selector.name=micle"], "selector micle needs group ids"),
    ("selector-needs-predictor", "base.yaml", ["--set", "objective.name=simclr", "--set", "selector.name=nn"],
     "selector 'nn' needs the objective's prediction p (a predictor head)"),
    ("bad-choice", "base.yaml", ["--set", "train.precision=fp17"],
     "recipe key train.precision must be Literal['auto', '32-true', 'bf16-mixed', '16-mixed']"),
    ("bad-device", "base.yaml", ["--set", "train.device=tpu"],
     "recipe key train.device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    ("unknown-eval-key", "base.yaml", ["--set", "evaluate=[{name: knn, kk: 3}]"],
     "unknown recipe key evaluate[0].kk for evaluation 'knn'"),
    ("label-fraction-out-of-range", "base.yaml", ["--set", "evaluate=[{name: finetune, label_fraction: 2.0}]"],
     "label_fraction must be in (0, 1], got 2.0"),
    ("block-not-a-mapping", "base.yaml", ["--set", "selector=oracle"],
     "recipe key selector must be a mapping, got str 'oracle'"),
    ("evaluate-not-a-list", "base.yaml", ["--set", "evaluate=knn"],
     "recipe key evaluate must be a list, got str 'knn'"),
    ("set-without-value", "base.yaml", ["--set", "train.epochs"], "--set expects key=value, got 'train.epochs'"),
    ("out-dir-not-creatable", "base.yaml", ["--set", "out_dir=/proc/ssl-bench-runs"],
     "cannot create run directories under /proc/ssl-bench-runs/base (recipe key out_dir)"),
    ("invalid-yaml", "notyaml.yaml", [], "recipe {d}/notyaml.yaml line 3 is not valid YAML"),
    ("yaml-not-a-mapping", "list.yaml", [], "recipe {d}/list.yaml must be a YAML mapping, got list"),
    ("recipe-file-missing", "missing.yaml", [], "recipe file not found: {d}/missing.yaml"),
    ("extends-cycle", "cycle_a.yaml", [],
     "recipe extends itself in a cycle: cycle_a.yaml → cycle_b.yaml → cycle_a.yaml"),
    ("extends-missing-file", "ext_missing.yaml", [],
     "recipe key extends in ext_missing.yaml: file not found: {d}/nothere.yaml"),
    ("data-missing", "nodata.yaml", [], "recipe key data is missing"),
    ("resume-no-such-run", "base.yaml", ["--resume", "/nonexistent/run"],
     "--resume /nonexistent/run: no such run directory"),
    ("resume-nothing-to-resume", "base.yaml", ["--resume"],
     "no unfinished run of recipe 'base' with a checkpoint under {d}/runs/base"),
]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "base.yaml").write_text(BASE.format(runs=d / "runs"))
    for name, text in FILES.items():
        (d / name).write_text(text)
    return d


@pytest.mark.parametrize("recipe, args, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_recipe_exits_with_one_line_and_writes_nothing(recipes, recipe, args, message):
    d = recipes
    args = [a.replace("{d}", str(d)) for a in args]
    res = CliRunner().invoke(main, ["run", str(d / recipe), *args])
    # SystemExit(2) from the CLI's error handler; any other exception would be a traceback
    assert isinstance(res.exception, SystemExit) and res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output, err
    assert err.startswith("error: ") and message.replace("{d}", str(d)) in err, err
    assert sorted(p.name for p in Path(d).iterdir()) == sorted(["base.yaml", *FILES])  # nothing new anywhere

