"""The generated recipe reference, `ssl-bench list KIND NAME` and `ssl-bench list recipes`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.reference import is_built_in, markdown_reference, option_rows

REPO = Path(__file__).resolve().parents[1]


def test_recipe_reference_is_not_stale():
    doc = (REPO / "docs" / "recipe_reference.md").read_text()
    assert doc == markdown_reference(), ("docs/recipe_reference.md is stale: "
                                         "run `ssl-bench list --markdown > docs/recipe_reference.md`")


@pytest.mark.slow
def test_reference_lists_every_option_of_every_built_in_component_with_help():
    from ssl_bench.registry import ALL_REGISTRIES, factory_params

    doc = markdown_reference()
    for kind, reg in ALL_REGISTRIES.items():
        for e in reg.entries():
            if not is_built_in(e.factory):
                continue
            assert f"### `{e.name}`" in doc, (kind, e.name)
            names = [r[0] for r in option_rows(e.factory)]
            params = [n for n, p in factory_params(e.factory).items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                      and not (p.default is p.empty and n in ("backbone", "encoder", "data", "objective"))]
            assert names == params, (kind, e.name)
            assert all(r[3] for r in option_rows(e.factory)), (kind, e.name,
                                                               [r[0] for r in option_rows(e.factory) if not r[3]])
    assert "| `knn_every` | int | 0 |" in doc and "| `log` | list | [] |" in doc
    assert "``" not in doc and ":func:" not in doc  # no reST markup leaks


def test_list_one_component_shows_type_default_and_help():
    r = CliRunner().invoke(main, ["list", "selectors", "tracin"], env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    assert "normalize" in r.output and "checkpoints" in r.output and "list[int] | None" in r.output
    assert "the cosine of the two per-sample gradients" in r.output
    r = CliRunner().invoke(main, ["list", "selectors", "tracn"])
    # a name that is not exact: the filtered table
    assert r.exit_code == 0 and "tracin" not in r.output.split("\n", 1)[0]


@pytest.mark.slow
def test_list_recipes_shows_every_shipped_recipe():
    r = CliRunner().invoke(main, ["list", "recipes"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    shipped = sorted((REPO / "recipes").rglob("*.yaml"))
    assert f"({len(shipped)})" in r.output
    assert "recipes/byol_tracin_isic.yaml" in r.output and "BYOL-TracIn-pretrained" in r.output
    r = CliRunner().invoke(main, ["list", "recipes", "study_tracincp"], env={"COLUMNS": "250"})
    assert "(1)" in r.output and "BYOL-TracInCP-pretrained" in r.output


def test_show_checks_dataset_names_and_sizes_as_run_does():
    recipe = str(REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml")
    r = CliRunner().invoke(main, ["show", recipe, "data.flag=breastmnst"])
    assert (r.exit_code == 2
            and "unknown MedMNIST flag 'breastmnst' (recipe key data.flag) — did you mean 'breastmnist'" in r.output)
    r = CliRunner().invoke(main, ["show", recipe, "data.size=36"])
    assert (r.exit_code == 2
            and "recipe key data.size must be one of (28, 64, 128, 224) for MedMNIST, got 36" in r.output)
