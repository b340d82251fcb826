"""The lazy registries (ssl_bench/catalog.py): names known without importing, members imported on first
use, and what checking a recipe imports."""

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ssl_bench
from ssl_bench import catalog, timm_names
from ssl_bench.errors import SSLBenchError
from ssl_bench.registry import ALL_REGISTRIES, registrations, undo_registrations

REPO = Path(__file__).resolve().parents[1]
# what `ssl-bench show` of a shipped recipe must not import (torch's compiler stack comes with
# torchvision; the optional loggers and scikit-learn are needed only by what they do)
HEAVY = ("torch._dynamo", "sklearn", "wandb", "mlflow", "timm", "torchvision", "pandas", "matplotlib", "tensorboard")


def all_modules():
    for info in pkgutil.walk_packages(ssl_bench.__path__, "ssl_bench."):
        yield importlib.import_module(info.name)


def test_every_location_registers_its_names_and_nothing_else_is_built_in():
    list(all_modules())  # every module of the package, imported: every registration made
    for plural, reg in ALL_REGISTRIES.items():
        built_in = {name: e.factory.__module__ for name, e in reg._builtin.items()}
        assert built_in == reg.locations, plural
        stray = {name: e.factory.__module__ for name, e in reg._entries.items()
                 if e.factory.__module__.startswith("ssl_bench.") and name not in reg.locations}
        assert not stray, f"{plural}: registered by the package but missing from ssl_bench/catalog.py: {stray}"
    assert set(catalog.REGISTRIES.values()) | {catalog.EVALUATIONS} == set(ALL_REGISTRIES.values())


@pytest.fixture(scope="module", autouse=True)
def timm_name_cache():
    """The timm name cache exists (the first command on a fresh machine builds it: it imports timm once)."""
    from ssl_bench.timm_names import timm_models

    timm_models()


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


SHOW = """
import json, sys
from ssl_bench.cli import main
try:
    main(%r)
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "loaded": sorted(m for m in %r + ("torch",) if m in sys.modules)}), file=sys.stderr)
"""


def run_show(args: list[str]) -> tuple[int, list[str], str]:
    p = python(SHOW % (args, HEAVY))
    last = json.loads(p.stderr.strip().splitlines()[-1])
    return last["code"], last["loaded"], p.stderr


SHIPPED = ["recipes/byol_tracin_isic.yaml", "recipes/study/study_tracin.yaml",
           "recipes/tsimcne/tsimcne_breastmnist.yaml"]


@pytest.mark.parametrize("recipe", SHIPPED)
def test_show_imports_none_of_the_heavy_optional_modules(recipe):
    code, loaded, err = run_show(["show", recipe])
    assert code in (0, None), err
    assert [m for m in loaded if m != "torch"] == [], f"show {recipe} imported {loaded}"


@pytest.mark.parametrize("override, message", [
    ("train.epohcs=2", "unknown recipe key train.epohcs for train — did you mean 'epochs'?"),
    ("selector.name=orcle", "unknown selector 'orcle' (recipe key selector.name) — did you mean 'oracle'"),
    ("backbone.name=resnt18", "unknown backbone 'resnt18' (recipe key backbone.name) — did you mean 'resnet18'"),
    ("evaluate=[linaer]", "unknown evaluation 'linaer' (recipe key evaluate[0].name) — did you mean 'linear'"),
    ("seeed=1", "unknown recipe key 'seeed' — did you mean 'seed'?"),
])
def test_a_structural_error_is_found_before_torch_is_imported(override, message):
    code, loaded, err = run_show(["show", "recipes/byol_tracin_isic.yaml", "--set", override])
    assert code == 2 and message in err, err
    assert loaded == [], f"imported {loaded} before finding the error"


def test_show_and_run_refuse_an_unknown_built_in_name_alike(tmp_path):
    outs = []
    for cmd in ("show", "run"):
        p = subprocess.run([sys.executable, "-m", "ssl_bench.cli", cmd, "recipes/byol_tracin_isic.yaml", "--set",
                            "selector.name=orcle", *(["--out", str(tmp_path / "r")] if cmd == "run" else [])],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        outs.append((p.returncode, p.stderr.strip().splitlines()[-1]))
    assert outs[0] == outs[1] and outs[0][0] == 2, outs
    assert not (tmp_path / "r").exists()


def test_a_name_is_known_without_importing_its_module():
    p = python("import sys; from ssl_bench.catalog import SELECTORS, EVALUATIONS; "
               "print('tracin' in SELECTORS, 'linear' in EVALUATIONS, SELECTORS.names()[:3], "
               "'ssl_bench.selectors.tracin' in sys.modules, 'torch' in sys.modules)")
    assert p.stdout.split() == ["True", "True", "['fnc',", "'fs',", "'ft']", "False", "False"], p.stderr


def test_a_plugin_replacing_a_built_in_before_it_is_imported_keeps_it_until_undone():
    reg = catalog.SELECTORS
    before = registrations()
    had = "micle" in reg._entries
    with pytest.raises(SSLBenchError, match="'micle' is already registered \\(by ssl_bench.selectors.micle\\)"):
        reg.register("micle")(type("Mine", (), {"__module__": "my_plugin"}))
    mine = type("Mine", (), {"__module__": "my_plugin"})
    reg.register("micle", force=True)(mine)
    importlib.import_module("ssl_bench.selectors.micle")  # the built-in module imported afterwards
    assert reg.get("micle") is mine
    undo_registrations(before, lambda e: e.factory.__module__ == "my_plugin")
    from ssl_bench.selectors.micle import MICLeSelector

    assert reg.get("micle") is MICLeSelector and ("micle" in reg._entries or not had)


@pytest.mark.slow
def test_timm_names_are_cached_per_timm_and_a_broken_cache_is_rebuilt(tmp_path):
    env = {"SSL_BENCH_CACHE_DIR": str(tmp_path)}
    code = ("import sys; from ssl_bench.timm_names import is_timm_model, cache_file; "
            "print(is_timm_model('resnet18'), is_timm_model('resnt18'), 'timm' in sys.modules, cache_file().name)")
    first = python(code, **env).stdout.split()
    assert first[:3] == ["True", "False", "True"]  # built: timm imported once
    cache = tmp_path / first[3]
    assert cache.is_file() and "resnet18\n" in cache.read_text()
    assert python(code, **env).stdout.split()[:3] == ["True", "False", "False"]  # read: timm not imported
    cache.write_text("# timm.list_models()\nresnet18")  # torn (no final newline): not trusted
    assert python(code, **env).stdout.split()[:3] == ["True", "False", "True"]
    assert cache.read_text().endswith("\n") and len(cache.read_text().splitlines()) > 500


def test_hub_names_are_refused_by_the_name_check():
    with pytest.raises(SSLBenchError, match="names a model hub entry"):
        catalog.BACKBONES.check_name({"name": "hf-hub:timm/resnet18.a1_in1k"}, "backbone")
    assert timm_names.is_timm_model("resnet18")
