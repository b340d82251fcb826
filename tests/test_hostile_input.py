"""Hostile and careless input: no hang, no silent wrong data, no code run from a run directory,
nothing overwritten; every refusal is one line, exit code 2, with nothing written."""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.data import DATASETS
from ssl_bench.errors import SSLBenchError
from tests.data.layouts import HAM_PREFIX, ham_jpeg, ham_metadata, pneumonia_xrays, save_png

REPO = Path(__file__).resolve().parents[1]
BREAST = str(REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml")


def cli(*args, cwd=None):
    """``ssl-bench ARGS`` in this process; (exit code, output)."""
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        res = CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(old)
    return res.exit_code, res.output


def one_error_line(code: int, output: str, *expected: str) -> None:
    lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith("plug-in:")]
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for e in expected:
        assert e in lines[0], (e, lines[0])


def write_recipe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -------------------------------------------------------------------------------------------------
# 1. A YAML alias bomb
# -------------------------------------------------------------------------------------------------
BOMB = "".join(
    [f"extends: {BREAST}\n", "a: &a [x, x, x, x, x, x, x, x, x]\n"]
    + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")]
)


@pytest.mark.parametrize("command", ["show", "run"])
def test_an_alias_bomb_is_refused_at_once(tmp_path, command):
    recipe = write_recipe(tmp_path / "bomb.yaml", BOMB)
    assert len(BOMB) < 500
    t0 = time.perf_counter()
    code, out = cli(command, recipe, *(["--out", tmp_path / "never"] if command == "run" else []))
    assert time.perf_counter() - t0 < 10
    one_error_line(code, out, "anchors and aliases expand to more than", "bomb.yaml")
    assert not (tmp_path / "never").exists()


# -------------------------------------------------------------------------------------------------
# 2. A second sweep never touches a run another process holds
# -------------------------------------------------------------------------------------------------
def test_a_second_sweep_leaves_a_locked_run_alone(tmp_path):
    from ssl_bench.runs import RunLock

    root = tmp_path / "sweeps"
    live = root / "byol_breastmnist" / "default" / "seed0"
    live.mkdir(parents=True)
    (live / "recipe.yaml").write_text("name: being-written\n")
    (live / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = {p.name: p.read_bytes() for p in live.iterdir()}
    lock = RunLock(live)  # the first sweep's run, mid-epoch
    try:
        code, out = cli("sweep", BREAST, "--seeds", "0", "--out-root", root, "--quiet")
    finally:
        lock.release()
    assert code == 0 and "in use by another ssl-bench process, left alone" in out and "0 ran, 1 already finished" in out
    assert {p.name: p.read_bytes() for p in live.iterdir()} == before  # not moved, not touched
    assert [p.name for p in live.parent.iterdir()] == ["seed0"]


# -------------------------------------------------------------------------------------------------
# 3. No output file is overwritten without --force
# -------------------------------------------------------------------------------------------------
def _fake_run(root: Path, method: str = "BYOL", seed: int = 0, auc: float = 0.7) -> Path:
    d = root / f"{method}-{seed}"
    d.mkdir(parents=True)
    (d / "recipe.yaml").write_text(yaml.safe_dump({"name": "r", "seed": seed, "headline_metric": "auc"}))
    (d / "results.json").write_text(json.dumps({"method": method, "dataset": "D", "seed": seed,
                                                "eval": {"knn": {"auc": auc}}}))
    return d


def test_compare_and_embed_refuse_an_existing_out_file(tmp_path):
    run = _fake_run(tmp_path / "runs")
    victim = run / "results.json"
    before = victim.read_bytes()
    code, out = cli("compare", tmp_path / "runs", "--out", victim)
    one_error_line(code, out, "--out", "already exists", "--force")
    assert victim.read_bytes() == before
    code, out = cli("embed", run, "--out", victim)
    one_error_line(code, out, "already exists")
    assert victim.read_bytes() == before
    code, out = cli("compare", tmp_path / "runs", "--out", tmp_path / "t.md", "--format", "markdown")
    assert code == 0 and (tmp_path / "t.md").read_text().startswith("| method |")
    code, _ = cli("compare", tmp_path / "runs", "--out", tmp_path / "t.md", "--format", "csv", "--force")
    assert code == 0 and (tmp_path / "t.md").read_text().startswith("method,column")


# -------------------------------------------------------------------------------------------------
# 4.–6. Plug-ins: imported only when asked, only from where the recipe says, and never ending the program
# -------------------------------------------------------------------------------------------------
def _plugin(path: Path, marker: Path, body: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "from ssl_bench.selectors import SELECTORS, Selector\n"
        "@SELECTORS.register('marked_test', force=True)\n"
        "class Marked(Selector):\n"
        "    def select(self, ctx):\n"
        "        return None\n" + body
    )
    return path


def test_show_never_imports_a_plugin(tmp_path):
    marker = tmp_path / "imported.txt"
    _plugin(tmp_path / "evil.py", marker)
    recipe = write_recipe(tmp_path / "r.yaml",
                          f"extends: {BREAST}\nplugins: [evil.py]\nselector: {{name: marked_test}}\n")
    code, out = cli("show", recipe)
    assert code == 0 and not marker.exists()
    assert "not checked (from plug-ins, which show does not import): selector 'marked_test'" in out
    assert f"- {tmp_path / 'evil.py'}" in out  # resolved, not imported


def test_resuming_a_run_directory_imports_no_plugin_unless_asked(tmp_path):
    marker = tmp_path / "imported.txt"
    _plugin(tmp_path / "elsewhere" / "evil.py", marker)
    run_dir = tmp_path / "sent"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = yaml.safe_load(CliRunner().invoke(main, ["show", BREAST]).output)
    cfg.update(plugins=[str(tmp_path / "elsewhere" / "evil.py")], selector={"name": "marked_test"})
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(cfg))
    code, out = cli("run", "--resume", run_dir)
    one_error_line(code, out, "plug-ins", "were not imported", "--plugin FILE", "--load-plugins")
    assert not marker.exists()
    for command in (["embed", run_dir, "--out", tmp_path / "e.csv"], ["positives", run_dir, "--selector", "fs"]):
        code, out = cli(*command)
        assert code == 2 and not marker.exists(), out


def test_a_recipe_plugin_is_looked_up_beside_the_recipe_only(tmp_path):
    marker = tmp_path / "imported.txt"
    _plugin(tmp_path / "cwd" / "plug.py", marker)  # a same-named file in the working directory
    recipe = write_recipe(tmp_path / "recipes" / "r.yaml", f"extends: {BREAST}\nplugins: [plug.py]\n")
    code, out = cli("run", recipe, "--out", tmp_path / "never", cwd=tmp_path / "cwd")
    one_error_line(code, out, f"plugin file not found: plug.py (recipe key plugins[0], "
                              f"looked for {tmp_path / 'recipes' / 'plug.py'})")
    assert not marker.exists() and not (tmp_path / "never").exists()


@pytest.mark.parametrize("body, message", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0) while being imported"),
    ("raise RuntimeError('broken')\n", "failed to import: RuntimeError: broken"),
])
def test_a_plugin_that_exits_or_raises_is_one_line(tmp_path, body, message):
    _plugin(tmp_path / "bad.py", tmp_path / "m.txt", body)
    recipe = write_recipe(tmp_path / "r.yaml", f"extends: {BREAST}\nplugins: [bad.py]\n")
    code, out = cli("run", recipe, "--out", tmp_path / "never")
    one_error_line(code, out, str(tmp_path / "bad.py"), message)
    assert not (tmp_path / "never").exists()
    from ssl_bench.selectors import SELECTORS

    assert "marked_test" not in SELECTORS.names()  # registered before it failed: undone


def test_a_plugin_that_fails_after_replacing_a_component_puts_it_back(tmp_path):
    """A half-imported plug-in leaves nothing behind in a process that goes on (the Python API)."""
    from ssl_bench.registry import load_plugin_file
    from ssl_bench.selectors import SELECTORS

    builtin = SELECTORS.get("oracle")
    body = "@SELECTORS.register('oracle', force=True)\nclass Fake(Selector):\n    pass\nraise RuntimeError('broken')\n"
    with pytest.raises(SSLBenchError, match="failed to import: RuntimeError: broken"):
        load_plugin_file(_plugin(tmp_path / "bad.py", tmp_path / "m.txt", body))
    assert SELECTORS.get("oracle") is builtin and "marked_test" not in SELECTORS.names()


# -------------------------------------------------------------------------------------------------
# 7. The environment: SSL_BENCH_* only
# -------------------------------------------------------------------------------------------------
def test_a_recipe_reads_only_ssl_bench_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("SSL_BENCH_MY_ROOT", str(tmp_path))
    recipe = write_recipe(tmp_path / "r.yaml", f"extends: {BREAST}\nname: ${{oc.env:SECRET_TOKEN}}\n")
    code, out = cli("show", recipe)
    one_error_line(code, out, "recipe key name reads the environment variable 'SECRET_TOKEN'", "SSL_BENCH_*")
    assert "hunter2" not in out
    code, out = cli("show", BREAST, "--set", "out_dir=${oc.env:SECRET_TOKEN}")
    one_error_line(code, out, "SECRET_TOKEN")
    code, out = cli("show", BREAST, "--set", "out_dir=${oc.env:SSL_BENCH_MY_ROOT}")
    assert code == 0 and f"out_dir: {tmp_path}" in out


# -------------------------------------------------------------------------------------------------
# 8.–9. Files: exactly where a manifest says, nothing from outside the root, no image claimed twice
# -------------------------------------------------------------------------------------------------
def _xray_folder(root: Path, n: int = 12) -> list[str]:
    x, y = pneumonia_xrays(n)
    rows = []
    for i in range(n):
        save_png(x[i], root / "siteA" / f"img{i}.png")
        rows.append(f"siteA/img{i}.png,{['normal', 'pneumonia'][y[i]]}")
    return rows


@pytest.mark.parametrize("bad_path, message", [
    ("siteB/img0.png", "siteB/img0.png not found under"),  # a same-named file exists in siteA
    ("../outside/img0.png", "is outside the data root"),
    ("/etc/img0.png", "is outside the data root"),
])
def test_a_manifest_path_must_exist_exactly_under_the_root(tmp_path, bad_path, message):
    rows = _xray_folder(tmp_path / "data")
    save_png(pneumonia_xrays(1)[0][0], tmp_path / "outside" / "img0.png")
    rows[0] = f"{bad_path},normal"
    (tmp_path / "data" / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(SSLBenchError, match=f"m.csv line 2: .*{message}"):
        DATASETS.build({"name": "folder", "root": str(tmp_path / "data"), "manifest": "m.csv", "size": 28,
                        "cache_dir": str(tmp_path / "c")})


def _ham_zip(path: Path, extra: dict[str, bytes]) -> Path:
    meta = ham_metadata().head(20)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(HAM_PREFIX + "HAM10000_metadata.csv", meta.to_csv(index=False))
        for i in meta["image_id"]:
            z.writestr(f"{HAM_PREFIX}images/{i}.jpg", ham_jpeg(i))
        for name, data in extra.items():
            z.writestr(name, data)
    return path


def test_a_zip_member_outside_the_root_or_a_second_file_for_one_image_is_an_error(tmp_path):
    first = ham_metadata()["image_id"].iloc[0]
    other = ham_jpeg(ham_metadata()["image_id"].iloc[1])
    evil = _ham_zip(tmp_path / "evil.zip", {f"../../{first}.jpg": other})
    with pytest.raises(SSLBenchError, match=rf"member '\.\./\.\./{first}\.jpg' points outside the archive's root"):
        DATASETS.build({"name": "isic", "root": str(evil), "size": 28, "cache_dir": str(tmp_path / "c")})
    twice = _ham_zip(tmp_path / "twice.zip", {f"extra/{first}.jpg": other})
    with pytest.raises(SSLBenchError,
                       match=rf"image {first} .* is claimed by two files .*: .*{first}\.jpg and .*{first}\.jpg"):
        DATASETS.build({"name": "isic", "root": str(twice), "size": 28, "cache_dir": str(tmp_path / "c")})


# -------------------------------------------------------------------------------------------------
# 10.–11. Evaluation that cannot run, images dropped
# -------------------------------------------------------------------------------------------------
def test_a_knn_k_larger_than_the_training_split_is_refused_before_training(tmp_path):
    code, out = cli("run", BREAST, "--set", "evaluate=[{name: knn, k: 1000}]", "--out", tmp_path / "never")
    one_error_line(code, out, "evaluate.knn.k (1000) is larger than the train split (546 images)")
    assert not (tmp_path / "never").exists()


def test_images_dropped_as_corrupt_are_named_in_results(tmp_path):
    rows = _xray_folder(tmp_path / "data", n=24)
    (tmp_path / "data" / "siteA" / "img3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "data" / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    code, out = cli("run", BREAST, "--set",
                    "data={name: folder, root: " + str(tmp_path / "data") + ", manifest: m.csv, size: 28, "
                    "channels: 1, skip_corrupt: true, cache_dir: " + str(tmp_path / "c") + "}", "--set",
                    "train.epochs=0",
                    "--set", "evaluate=[{name: knn, k: 3}]", "--out", tmp_path / "run", "--quiet")
    assert code == 0, out
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["data_skipped"] == ["siteA/img3.png"]


# -------------------------------------------------------------------------------------------------
# 12.–13. One line, exit 2, nothing written
# -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sets, message", [
    (["seed=1180591620717411303424"], "recipe key seed must be in [0, 2**63)"),
    (["train.epochs: [unclosed"], "--set expects key=value"),
    (["train.lr=[unclosed"], "--set train.lr line 1 is not valid YAML"),
    (["train.lr=!!python/object/apply:os.system [echo PWNED]"], "--set train.lr"),
    (["train.lr=0.1\nout_dir=/tmp"], "the value contains a line break"),
    (["evaluate.0.k=3"], "'0' names no key (evaluate is a list"),
    (["train.lr=.nan"], "recipe key train.lr must be a finite number, got nan"),
    (["name=../x"], "recipe key name must be letters, digits"),
    (["name=/abs"], "recipe key name must be letters, digits"),
])
def test_bad_values_are_one_line(tmp_path, sets, message):
    code, out = cli("run", BREAST, *[x for s in sets for x in ("--set", s)], "--out", tmp_path / "never")
    one_error_line(code, out, message)
    assert "PWNED" not in out and not (tmp_path / "never").exists()


def test_a_recipe_with_non_utf8_bytes_or_a_key_given_twice(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(f"extends: {BREAST}\nname: caf\xe9\n".encode("latin-1"))
    code, out = cli("show", bad)
    one_error_line(code, out, "is not UTF-8 text")
    twice = write_recipe(tmp_path / "twice.yaml",
                         f"extends: {BREAST}\ntrain: {{epochs: 1}}\nseed: 1\ntrain: {{epochs: 5}}\n")
    code, out = cli("show", twice)
    one_error_line(code, out, "line 4: key 'train' is given twice in one mapping (also line 2)")


@pytest.mark.parametrize("damage, message", [
    (lambda z: {k: v for k, v in z.items() if k != "val_labels"}, "has no array 'val_labels'"),
    (lambda z: {**z, "test_labels": z["test_labels"][:-5]}, "test_images has 156 images but test_labels 151 labels"),
])
def test_a_damaged_medmnist_file_is_one_line(tmp_path, damage, message):
    from tests.conftest import MEDMNIST_ROOT

    z = dict(np.load(MEDMNIST_ROOT / "breastmnist.npz"))
    np.savez(tmp_path / "breastmnist.npz", **damage(z))
    code, out = cli("run", BREAST, "--set", f"data.root={tmp_path}", "--set", "data.download=false", "--out",
                    tmp_path / "never")
    one_error_line(code, out, message)


# -------------------------------------------------------------------------------------------------
# 14.–16. compare and checkpoints from other people
# -------------------------------------------------------------------------------------------------
def test_compare_prints_the_good_runs_and_lists_the_bad_files(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, seed=0, auc=0.7)
    _fake_run(root, seed=1, auc=0.8)
    bad = _fake_run(root, seed=2)
    (bad / "results.json").write_text("{not json")
    ugly = _fake_run(root, seed=3)
    (ugly / "recipe.yaml").write_text("a: [unclosed\n")
    code, out = cli("compare", root, "--format", "markdown")
    assert code == 0 and "| BYOL | 0.750(.071) n=2 |" in out
    assert f"unreadable run, left out: {bad.resolve()}" in out and f"unreadable run, left out: {ugly.resolve()}" in out
    code, _ = cli("compare", root, "--format", "markdown", "--strict")
    assert code == 1


def test_compare_follows_symlinked_run_directories(tmp_path):
    real = _fake_run(tmp_path / "store", seed=0)
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "a").symlink_to(real, target_is_directory=True)
    (tmp_path / "table" / "loop").symlink_to(tmp_path / "table", target_is_directory=True)  # a cycle: visited once
    code, out = cli("compare", tmp_path / "table", "--format", "csv")
    assert code == 0 and "BYOL,D · knn,0.7" in out


def test_a_checkpoint_holding_pickled_code_is_refused_as_such(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"objective": Evil(), "recipe": {}}, run / "checkpoints" / "last.pt")
    (run / "recipe.yaml").write_text("name: x\n")
    code, out = cli("positives", run, "--selector", "fs")
    one_error_line(code, out, "holds objects other than tensors and plain values", "was not loaded")
    assert not (tmp_path / "pwned").exists()


def test_the_cli_run_is_one_line_in_a_real_process(tmp_path):
    """The same refusal through `python -m ssl_bench.cli` (what a user types): stderr one line, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "ssl_bench.cli", "show", BREAST, "--set", "train.lr=.inf"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: recipe key train.lr must be a finite number, got inf"
