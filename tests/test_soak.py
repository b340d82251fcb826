"""Soak: sweeps under kill -9, two sweeps on one grid, and a full disk — nothing lost, nothing corrupt.

Marked ``soak`` and left out of the default run (about 10 minutes on 2 cores); run it with

    python -m pytest -m soak tests/test_soak.py

Every run is a short real BYOL / BYOL-Sup pre-training on BreastMNIST with a checkpoint per epoch
and a kNN evaluation.  The reference is the same grid swept once without interruption; every other
scenario must end with each run's ``results.json`` identical to the reference's (same evaluation
numbers, same seed) or with a ``failed`` status that says why — and with no temporary file, no
half-written checkpoint and no partial ``metrics.jsonl`` line left behind.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_bench.runs import CHECKPOINT_DIR, LAST_CHECKPOINT, METRICS_FILE, RESULTS_FILE, read_status

pytestmark = [pytest.mark.soak, pytest.mark.slow]  # slow too: `-m "not slow"` replaces the default `-m "not soak"`

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml")
FIXED = ["train.epochs=3", "train.batch_size=128", "train.checkpoint_every=1", "backbone.small_image_stem=false",
         "objective.hidden_dim=256", "evaluate=[{name: knn, k: 10}]"]
GRID = "selector.name=none,oracle"
SEEDS = "0-9"  # 2 × 10 = 20 runs


def sweep_cmd(root: Path, seeds: str = SEEDS) -> list[str]:
    sets = [a for s in FIXED for a in ("--set", s)]
    return [sys.executable, "-c", "from ssl_bench.cli import main; main()", "sweep", RECIPE, "--grid", GRID,
            "--seeds", seeds, *sets, "--out-root", str(root), "--quiet"]


def start(root: Path, seeds: str = SEEDS, limit_bytes: int | None = None) -> subprocess.Popen:
    def child():
        os.setsid()  # its own process group: kill -9 reaches every process of the sweep
        if limit_bytes is not None:  # a disk that takes no file larger than this (writes fail with EFBIG)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(sweep_cmd(root, seeds), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=child, env={**os.environ, "OMP_NUM_THREADS": "1"})


def results_of(root: Path) -> dict[str, dict]:
    """Run (relative path) → the numbers its results.json reports."""
    out = {}
    for f in sorted(root.rglob(RESULTS_FILE)):
        r = json.loads(f.read_text())
        out[f.parent.relative_to(root).as_posix()] = {"seed": r["seed"], "eval": r["eval"]}
    return out


def assert_nothing_corrupt(root: Path) -> None:
    """No temporary file, every checkpoint loads, every metrics line is whole JSON."""
    leftovers = [p for p in root.rglob("*.tmp")]
    assert not leftovers, leftovers
    for ck in root.rglob(f"{CHECKPOINT_DIR}/*.pt"):
        state = torch.load(ck, map_location="cpu", weights_only=True)
        assert "epoch" in state, ck
    for m in root.rglob(METRICS_FILE):
        epochs = [json.loads(line)["epoch"] for line in m.read_text().splitlines()]  # whole JSON lines
        if (m.parent / RESULTS_FILE).is_file():  # a finished run logged each epoch once, in order
            assert epochs == [1, 2, 3], (m, epochs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("reference")
    p = start(root)
    out, _ = p.communicate(timeout=1800)
    assert p.returncode == 0, out
    assert "sweep: 20 ran, 0 already finished, 0 failed" in out, out
    return results_of(root)


def test_twenty_runs_killed_at_random_points_end_as_if_never_killed(reference, tmp_path):
    rng = random.Random(20261129)
    root = tmp_path / "killed"
    kills = 0
    for attempt in range(60):
        p = start(root)
        if kills < 12:  # kill at a random point (start-up, training, checkpoint write, evaluation)
            try:
                out, _ = p.communicate(timeout=rng.uniform(2.0, 14.0))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
                kills += 1
                continue
        else:
            out, _ = p.communicate(timeout=1800)
        assert p.returncode == 0, out  # no run ever fails because of an earlier kill
        if "0 failed" in out and len(results_of(root)) == 20:
            break
    assert kills >= 8, f"only {kills} kills landed"
    assert results_of(root) == reference
    assert_nothing_corrupt(root)
    assert not [p for p in root.rglob("status.json")]  # no run left marked failed


def test_two_sweeps_of_one_grid_share_the_work(reference, tmp_path):
    root = tmp_path / "shared"
    a = start(root, seeds="0-4")
    time.sleep(1.5)
    b = start(root, seeds="0-4")
    out_a, _ = a.communicate(timeout=1800)
    out_b, _ = b.communicate(timeout=1800)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    ran = sum(int(o.split("sweep: ")[1].split(" ran")[0]) for o in (out_a, out_b))
    assert ran == 10, out_a + out_b  # each of the 10 runs trained exactly once
    assert "Traceback" not in out_a + out_b
    left_alone = (out_a + out_b).count("in use by another ssl-bench process, left alone")
    assert left_alone >= 1, out_a + out_b  # they did meet
    # what one sweep left to the other is done when both have ended; a third sweep has nothing to do
    third = start(root, seeds="0-4")
    out_c, _ = third.communicate(timeout=600)
    assert "sweep: 0 ran, 10 already finished, 0 failed" in out_c, out_c
    assert results_of(root) == {k: v for k, v in reference.items() if int(k.rsplit("seed", 1)[1]) <= 4}
    assert_nothing_corrupt(root)


def test_a_full_disk_fails_runs_clearly_and_a_second_sweep_completes_them(reference, tmp_path):
    root = tmp_path / "full"
    # a checkpoint of this model is ~50 MB: every checkpoint write fails, the small files still fit
    p = start(root, seeds="0-1", limit_bytes=4 * 2**20)
    out, _ = p.communicate(timeout=1800)
    assert p.returncode == 1, out
    assert "Traceback" not in out, out
    assert out.count(": failed: cannot write ") == 4, out
    assert "sweep: 0 ran, 0 already finished, 4 failed" in out, out
    for run in sorted(root.glob("*/*/seed*")):
        status = read_status(run)
        assert status["status"] == "failed" and status["resumable"] is True, status
        assert "cannot write" in status["reason"] and LAST_CHECKPOINT in status["reason"], status
        assert not (run / RESULTS_FILE).exists()
    assert_nothing_corrupt(root)
    # space again: the next sweep reruns (or resumes) them, and they end as the uninterrupted runs
    p = start(root, seeds="0-1")
    out, _ = p.communicate(timeout=1800)
    assert p.returncode == 0, out
    assert "sweep: 4 ran, 0 already finished, 0 failed" in out, out
    assert results_of(root) == {k: v for k, v in reference.items() if int(k.rsplit("seed", 1)[1]) <= 1}
    assert_nothing_corrupt(root)
