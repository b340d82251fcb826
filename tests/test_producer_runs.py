"""A pretrained checkpoint named by the recipe that produces it: run first, then reused."""

import json

import pytest
import yaml
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.errors import SSLBenchError
from ssl_bench.producer_runs import checkpoint_of_recipe, producer_overrides
from tests.test_cli import BREAST, FAST


def write_recipes(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "producer.yaml").write_text(
        f"extends: {BREAST}\nname: producer\nout_dir: {tmp_path / 'runs'}\nevaluate: [{{name: knn, k: 5}}]\n"
        "backbone: {name: resnet18, small_image_stem: false}\n"
    )
    (tmp_path / "recipes" / "consumer.yaml").write_text(
        "extends: producer.yaml\nname: consumer\n"
        "selector: {name: tracin, k: 1, model: pretrained, checkpoint: recipes/producer.yaml, views: light}\n"
    )
    return tmp_path / "recipes" / "consumer.yaml"


@pytest.mark.slow
@pytest.mark.e2e
def test_producer_runs_first_then_is_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    consumer = write_recipes(tmp_path)
    args = ["run", str(consumer), "--set", "train.epochs=1", *FAST, "--quiet"]
    with pytest.raises(SSLBenchError, match=r"names the recipe recipes/producer.yaml, which has no finished run"):
        checkpoint_of_recipe("recipes/producer.yaml")
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "c1")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "no finished run of recipes/producer.yaml" in res.output and "running it first" in res.output
    produced = list((tmp_path / "runs" / "producer").iterdir())
    assert len(produced) == 1 and (produced[0] / "results.json").is_file()
    saved = yaml.safe_load((tmp_path / "c1" / "recipe.yaml").read_text())
    assert saved["selector"]["checkpoint"] == str(produced[0])
    assert saved_producer_epochs(produced[0]) == 1  # the consumer's --set train.epochs=1 was inherited
    assert json.loads((tmp_path / "c1" / "results.json").read_text())["method"] == "BYOL-TracIn-pretrained"
    # the same overrides again reuse the finished run (no training: a run_fn that must not be called)
    from ssl_bench.producer_runs import resolve_pretrained
    from ssl_bench.recipe import load_recipe

    again = load_recipe(consumer, ["train.epochs=1", *FAST[1::2]])
    logs = []
    assert resolve_pretrained(again, log=logs.append, run_fn=lambda *a, **k: pytest.fail("ran again")) == produced[0]
    assert again.cfg["selector"]["checkpoint"] == str(produced[0]) and "finished run" in logs[0]
    other = load_recipe(consumer, ["train.epochs=1", *FAST[1::2], "seed=5"])  # another seed: another producer run
    ran = []
    resolve_pretrained(other, log=logs.append, run_fn=lambda r, **k: ran.append(r.cfg["seed"]) or tmp_path)
    assert ran == [5]
    with pytest.raises(SSLBenchError, match="has no finished run"):  # as written (100 epochs) it has none
        checkpoint_of_recipe("recipes/producer.yaml")


def saved_producer_epochs(run_dir):
    return yaml.safe_load((run_dir / "recipe.yaml").read_text())["train"]["epochs"]


def test_overrides_for_the_producer_and_cycles(tmp_path, monkeypatch):
    assert producer_overrides(["data.root=/x", "selector.k=2", "name=a", "method=M", "train.epochs=1", "seed=3"]) == [
        "data.root=/x", "train.epochs=1", "seed=3"
    ]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "self.yaml").write_text(
        f"extends: {BREAST}\nname: self\nselector: {{name: tracin, model: pretrained, checkpoint: self.yaml}}\n"
    )
    res = CliRunner().invoke(main, ["run", "self.yaml", "--quiet", "--out", str(tmp_path / "never")])
    assert res.exit_code == 2 and "names recipes in a cycle: self.yaml" in res.output
    assert not (tmp_path / "never").exists()
    for a, b in (("a", "b"), ("b", "a")):  # a's producer is b, whose producer is a: caught before any run
        (tmp_path / f"{a}.yaml").write_text(
            f"extends: {BREAST}\nname: {a}\nselector: {{name: tracin, model: pretrained, checkpoint: {b}.yaml}}\n"
        )
    res = CliRunner().invoke(main, ["run", "a.yaml", "--quiet", "--out", str(tmp_path / "never")])
    assert res.exit_code == 2 and "names recipes in a cycle: a.yaml → b.yaml → a.yaml" in res.output, res.output
    assert not (tmp_path / "never").exists() and not (tmp_path / "runs").exists()
    (tmp_path / "missing.yaml").write_text(
        f"extends: {BREAST}\nname: m\nselector: {{name: tracin, model: pretrained, checkpoint: nowhere.yaml}}\n"
    )
    res = CliRunner().invoke(main, ["run", "missing.yaml", "--quiet"])
    assert res.exit_code == 2 and "names the recipe nowhere.yaml, which was not found" in res.output
