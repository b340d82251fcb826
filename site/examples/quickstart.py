"""ssl-bench from Python: pre-train, read the results, tabulate, take the backbone out.

    python docs/examples/quickstart.py            # ≈ 1–2 minutes on 2 CPU cores

Runs BYOL on BreastMNIST for 1 epoch, twice (plain and with TracIn positives), compares them and
exports the backbone.  `tests/test_examples.py` runs this file; set SSL_BENCH_MEDMNIST_ROOT to a
folder holding breastmnist.npz (medmnist downloads it otherwise).
"""

import sys
import tempfile
from pathlib import Path

import torch

import ssl_bench

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="ssl-bench-quickstart-"))
recipe = Path(__file__).resolve().parents[2] / "recipes" / "medmnist" / "byol_breastmnist.yaml"
short = ["train.epochs=1", "train.batch_size=64", "backbone.stem_pool=true", "objective.hidden_dim=256",
         "evaluate=[{name: knn, k: 10}]"]  # a small, quick version of the recipe

# 1. Pre-train and evaluate: the same run directory `ssl-bench run` writes
runs = {}
for selector in ("none", "tracin"):
    runs[selector] = ssl_bench.run(recipe, overrides=[*short, f"selector.name={selector}"], out=out / selector)
    res = runs[selector].results
    print(f"{res['method']:12s} kNN AUC {res['eval']['knn']['auc']:.3f}  ({runs[selector].dir})")

# 2. Per-epoch metrics as a DataFrame (loss, lr, selector precision, images/s)
print(runs["tracin"].metrics()[["epoch", "loss", "selector_precision", "selector_chance"]])

# 3. The table `ssl-bench compare` prints, as a DataFrame (mean, std, count per method × protocol)
print(ssl_bench.compare([out]))

# 4. The backbone: export it, load it anywhere (timm keys; normalisation included)
info = runs["tracin"].export(out / "backbone.pt")
net = ssl_bench.load_backbone(out / "backbone.pt")
images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
with torch.no_grad():
    features = net(net.prepare(images))
print(f"backbone {info['timm_name']} → features {tuple(features.shape)}")
assert features.shape == (4, info["feature_dim"])
