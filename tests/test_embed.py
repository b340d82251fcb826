"""t-SimCNE end to end on real BreastMNIST: run → results.json map metrics → `ssl-bench embed`."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ssl_bench.cli import main

REPO = Path(__file__).resolve().parents[1]
RANDROT = str(REPO / "recipes" / "tsimcne" / "tsimcne_breastmnist_randrot.yaml")
# a tiny schedule: one epoch per stage, the standard (downsampling) stem, a narrow projector
TINY = [
    "--set", "objective.stages=[1,1,1]", "--set", "train.epochs=3", "--set", "objective.stage_warmup=[0,0,0]",
    "--set", "objective.hidden_dim=64", "--set", "backbone.small_image_stem=false",
]


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


N_TRAIN, N_TEST = 160, 64


@pytest.fixture(scope="module")
def tsimcne_run(tmp_path_factory):
    """A real-data subset (the first 160 training and 64 test BreastMNIST images) keeps the run cheap."""
    from tests.conftest import MEDMNIST_ROOT

    tmp = tmp_path_factory.mktemp("tsimcne")
    z = np.load(MEDMNIST_ROOT / "breastmnist.npz")
    np.savez(
        tmp / "breast_subset.npz",
        images=np.concatenate([z["train_images"][:N_TRAIN], z["test_images"][:N_TEST]]),
        labels=np.concatenate([z["train_labels"][:N_TRAIN], z["test_labels"][:N_TEST]]),
        split=np.array(["train"] * N_TRAIN + ["test"] * N_TEST),
    )
    out = tmp / "run"
    res = _cli("run", RANDROT, *TINY, *_subset_args(tmp / "breast_subset.npz"), "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    return out


def _subset_args(path):
    return ["--set", "data.name=npz", "--set", f"data.path={path}", "--set", "data.group=null",
            "--set", "data.class_names=[malignant,benign]", "--set", "train.batch_size=128"]


@pytest.mark.slow
def test_run_reports_map_metrics_and_saves_the_map(tsimcne_run):
    results = json.loads((tsimcne_run / "results.json").read_text())
    assert results["method"] == "t-SimCNE +randrot" and results["objective"] == "tsimcne"
    m = results["eval"]["embedding@poster"]  # the recipe scores the poster's way
    assert m["dim"] == 2
    lines = [json.loads(x) for x in (tsimcne_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines[2]["lr"] < 1e-3 * lines[0]["lr"] * 1.01  # stage 3: the 1000× lower learning rate
    csv = pd.read_csv(tsimcne_run / "embedding.csv")
    assert csv.shape == (N_TRAIN + N_TEST, 5) and np.isfinite(csv[["x", "y"]].to_numpy()).all()
    # the reported map metrics are those of the written map (scikit-learn on the CSV's points)
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    from sklearn.model_selection import train_test_split

    xy, y = csv[["x", "y"]].to_numpy(), csv["label"].to_numpy()
    assert m["silhouette"] == pytest.approx(silhouette_score(xy, y), abs=1e-5)  # all points
    tr, te = train_test_split(np.arange(len(y)), test_size=0.1, stratify=y, random_state=0)  # the poster's 90 / 10
    knn = KNeighborsClassifier(15).fit(xy[tr], y[tr])
    assert m["accuracy"] == pytest.approx((knn.predict(xy[te]) == y[te]).mean(), abs=1e-6)
    assert (tsimcne_run / "embedding.png").stat().st_size > 10_000


@pytest.mark.slow
def test_embed_reproduces_the_training_embedding_and_maps_new_images(tsimcne_run, tmp_path):
    res = _cli("embed", tsimcne_run, "--split", "train", "--out", tmp_path / "train.csv")
    assert res.exit_code == 0, res.output
    stored = pd.read_csv(tsimcne_run / "embedding.csv")
    stored = stored[stored.split == "train"]
    again = pd.read_csv(tmp_path / "train.csv")
    assert len(again) == N_TRAIN and (again["label"].to_numpy() == stored["label"].to_numpy()).all()
    np.testing.assert_allclose(again[["x", "y"]].to_numpy(), stored[["x", "y"]].to_numpy(), rtol=1e-5, atol=1e-5)
    # out-of-sample: another real dataset (grey, 28 px) through the same network
    res = _cli("embed", tsimcne_run, "--data", "{name: medmnist, flag: pneumoniamnist}", "--split", "test",
               "--out", tmp_path / "pneu.csv", "--png", tmp_path / "pneu.png")
    assert res.exit_code == 0, res.output
    pneu = pd.read_csv(tmp_path / "pneu.csv")
    assert pneu.shape == (624, 5) and set(pneu["split"]) == {"test"} and np.isfinite(pneu[["x", "y"]].to_numpy()).all()
    assert (tmp_path / "pneu.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "retinamnist"], "3-channel images"),
        (["--data", "{flag: breastmnist}"], "needs a 'name'"),
        (["--data", "nosuch.yaml"], "file not found"),
    ],
)
def test_embed_bad_input_is_one_line_and_writes_nothing(tsimcne_run, tmp_path, args, message):
    res = _cli("embed", tsimcne_run, *args, "--out", tmp_path / "x.csv")
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "x.csv").exists()


def test_embed_of_a_non_run_and_stage_mismatch_are_refused(tmp_path):
    res = _cli("embed", tmp_path, "--out", tmp_path / "x.csv")
    assert res.exit_code == 2 and "not a finished run directory" in res.output
    res = _cli("run", RANDROT, *TINY, "--set", "train.epochs=5", "--out", tmp_path / "never", "--quiet")
    assert res.exit_code == 2 and "train.epochs is 5 but objective.stages [1, 1, 1] sum to 3" in res.output
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_untrained_run_embeds_its_128d_output_and_refuses_a_png(tsimcne_run, tmp_path, monkeypatch):
    """train.epochs: 0 (the Random baseline) ends before stage 2: the head is the 128-D projector."""
    subset = tsimcne_run.parent / "breast_subset.npz"
    res = _cli("run", RANDROT, *TINY, "--set", "train.epochs=0", *_subset_args(subset), "--out", tmp_path / "r0",
               "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r0" / "results.json").read_text())["eval"]["embedding@poster"]["dim"] == 128
    res = _cli("embed", tmp_path / "r0", "--out", tmp_path / "z.csv", "--png", tmp_path / "z.png")
    assert (res.exit_code == 2 and "needs a 2-D embedding; the head outputs of run" in res.output
            and "128-D" in res.output)
    assert not (tmp_path / "z.csv").exists() and not (tmp_path / "z.png").exists()
    # backbone features are named as such, and refused from two images, before the whole feature pass
    from ssl_bench import evaluate

    passes, real = [], evaluate.extract_features
    monkeypatch.setattr(evaluate, "extract_features",
                        lambda net, images, *a, **k: passes.append(len(images)) or real(net, images, *a, **k))
    res = _cli("embed", tmp_path / "r0", "--features", "backbone", "--out", tmp_path / "b.csv", "--png",
               tmp_path / "b.png")
    assert res.exit_code == 2 and "the backbone features of run" in res.output and passes == [2]
    res = _cli("embed", tmp_path / "r0", "--split", "test", "--out", tmp_path / "z.csv")
    assert res.exit_code == 0 and pd.read_csv(tmp_path / "z.csv").shape == (N_TEST, 3 + 128)


@pytest.mark.slow
def test_embed_writes_backbone_features_as_npy_and_parquet(tmp_path):
    """`embed --features backbone` (the default for BYOL) gives the run's evaluation features; .npy and
    .parquet hold the same numbers; every written file is named."""
    import pandas as pd
    from click.testing import CliRunner

    import ssl_bench
    from ssl_bench.cli import main
    from tests.helpers import breast_recipe

    torch.manual_seed(0)
    run = ssl_bench.run(breast_recipe(train={"epochs": 1, "batch_size": 64, "threads": 2}), out=tmp_path / "run")
    r = CliRunner().invoke(main, ["embed", str(run.dir), "--out", str(tmp_path / "f.npy"), "--split", "test"])
    assert r.exit_code == 0, r.output
    assert f"wrote {tmp_path / 'f.npy'}" in r.output and "512-D backbone features; rows: test 156" in r.output
    feats = np.load(tmp_path / "f.npy")
    from ssl_bench.data import DATASETS

    test_images = DATASETS.build(run.recipe["data"]).test.images
    np.testing.assert_allclose(feats, run.embed(test_images), rtol=1e-4, atol=1e-4)
    r = CliRunner().invoke(main, ["embed", str(run.dir), "--out", str(tmp_path / "h.parquet"), "--features", "head",
                                  "--split", "test"])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(tmp_path / "h.parquet")
    assert list(df.columns[:3]) == ["split", "index", "label"] and df.shape == (156, 3 + 64)  # projection_dim 64
    r = CliRunner().invoke(main, ["embed", str(run.dir), "--out", str(tmp_path / "f.txt")])
    assert r.exit_code == 2 and "--out must end in .csv, .npy or .parquet" in r.output
