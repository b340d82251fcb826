"""What a lightly / timm user trips on: help that reads as help, hub names that say why, show that
checks what run checks, a derived recipe that files its own runs, messages that count right."""

import pytest

from ssl_bench.recipe import load_recipe
from tests.test_hostile_input import BREAST, cli, one_error_line, write_recipe
from tests.test_hostile_recipes import TINY


def test_list_backbones_documents_every_option():
    code, out = cli("list", "backbones", "resnet18")
    assert code == 0, out
    from ssl_bench.backbones import BACKBONES
    from ssl_bench.reference import option_rows

    rows = option_rows(BACKBONES.get("resnet18"))
    assert {r[0] for r in rows} >= {"in_chans", "small_image_stem", "kwargs", "stem_pool", "weights"}
    assert all(r[3] for r in rows), [r for r in rows if not r[3]]


def test_data_root_help_is_its_own_sentence():
    from ssl_bench.data import DATASETS
    from ssl_bench.reference import option_rows

    for name in ("folder", "isic", "chestxray14"):
        helps = {r[0]: r[3] for r in option_rows(DATASETS.get(name))}
        assert helps["root"] and "the side they are decoded to" not in helps["root"], (name, helps["root"])


@pytest.mark.parametrize("sets, message", [
    (["backbone.name=hf-hub:timm/resnet18.a1_in1k"], "names a model hub entry; ssl-bench never downloads weights"),
    (["backbone.name=timm/resnet18.a1_in1k"], "names a model hub entry"),
])
def test_hub_names_say_that_weights_are_not_fetched(sets, message):
    code, out = cli("show", BREAST, *[x for s in sets for x in ("--set", s)])
    one_error_line(code, out, message, "backbone.weights: PATH")


def test_producer_runs_kwarg_says_that_weights_are_not_fetched(tmp_path):
    code, out = cli("run", BREAST, *TINY, "--set", "backbone.kwargs={pretrained: true}", "--out", tmp_path / "never")
    one_error_line(code, out, "backbone.kwargs.pretrained: ssl-bench never downloads weights")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("sets, message", [
    ("selector.name=orcle", "unknown selector 'orcle'"),
    ("backbone.name=resnet181", "unknown backbone 'resnet181'"),
])
def test_show_refuses_an_unknown_built_in_name_as_run_does(tmp_path, sets, message):
    for command in ("show", "run"):
        code, out = cli(command, BREAST, "--set", sets, *(["--out", tmp_path / "never"] if command == "run" else []))
        one_error_line(code, out, message)
        assert "not checked" not in out


def test_a_derived_recipe_without_a_name_files_its_runs_under_its_own(tmp_path):
    child = write_recipe(tmp_path / "my_variant.yaml", f"extends: {BREAST}\nseed: 3\n")
    assert load_recipe(child).name == "my_variant"
    named = write_recipe(tmp_path / "other.yaml", f"extends: {child}\nname: chosen\n")
    assert load_recipe(named).name == "chosen"
    assert load_recipe(child, ["name=from_set"]).name == "from_set"
    assert load_recipe(BREAST).name == "byol_breastmnist"


def test_zero_epochs_and_a_batch_larger_than_the_split_are_said(tmp_path):
    code, out = cli("run", BREAST, *TINY, "--set", "train.epochs=0", "--set", "train.batch_size=1024", "--out",
                    tmp_path / "r")
    assert code == 0, out
    assert "0 epochs × 1 step ·" in out and "1 epochs" not in out
    assert "train.epochs is 0: no pre-training" in out and "0/0" not in out
    assert "train.batch_size 1024 is larger than the training split (546 images)" in out


def test_selector_precision_plot_counts_epochs_in_whole_numbers(tmp_path, monkeypatch):
    import json

    from ssl_bench import plots

    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "selector_precision": 0.5 + e / 100,
                                                           "selector_chance": 0.4}) + "\n" for e in (1, 2, 3)))
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, **kw: figures.append(fig) or out)
    assert plots.plot_selector_precision({str(run): "FS"}, tmp_path / "p.png") == tmp_path / "p.png"
    ticks = figures[0].axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


@pytest.mark.slow
def test_list_recipes_names_every_method_and_keeps_whole_sentences():
    from pathlib import Path

    from ssl_bench.reference import _first_sentence, recipe_rows

    rows = recipe_rows(Path(__file__).resolve().parents[1] / "recipes")
    assert len(rows) > 50 and all(method for _, method, _, _ in rows), [r[0] for r in rows if not r[1]]
    byol_tracin = {path: method for path, method, _, _ in rows}
    assert byol_tracin["recipes/isic/tracin_isic.yaml"] == "BYOL-TracIn"  # as a run of it reports, with no method key
    assert (_first_sentence("MICLe of Azizi et al. (2021) pairs two images. Then more.")
            == "MICLe of Azizi et al. (2021) pairs two images.")
