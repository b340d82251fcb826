"""benchmarks/study2.py, the study's second round: which commands it runs, in which order, and what
it skips when a sitting resumes it (nothing here trains)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("study2", REPO / "benchmarks" / "study2.py")
study2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study2)


def test_kept_epochs_are_five_evenly_spaced_ending_at_the_last():
    assert study2.kept_epochs(40) == [8, 16, 24, 32, 40]
    assert study2.kept_epochs(4) == [1, 2, 3, 4]


def dry_run(*args) -> list[str]:
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "study2.py"), "--dry-run", *args],
                       capture_output=True, text=True, check=True)
    return [line for line in r.stdout.splitlines() if line.startswith("== study2:")]


def test_the_plan_of_one_seed(tmp_path):
    lines = dry_run("--seeds", "1", "--epochs", "20", "--root", str(tmp_path))
    rows = [line.split()[2] for line in lines]
    assert rows[0] == "random" and "train.epochs" not in lines[0]  # an untrained network: nothing to lengthen
    assert rows.index("byol") < rows.index("tracin_pre")  # the producer before the row that scores with it
    assert all("train.epochs=20" in line and "checkpoint_every=1" in line for line in lines if " sweep " in line
               and "study_random" not in line)
    pre = next(line for line in lines if "study_tracin_pre" in line)
    assert f"selector.checkpoint={tmp_path}/study_byol/default/seed1" in pre
    evals = [line for line in lines if " evaluate " in line]
    assert len(evals) == 8  # 2 rows × 4 kept epochs before the last (the last is the run's own evaluation)
    assert {e.split("--epoch ")[1].split()[0] for e in evals} == {"4", "8", "12", "16"}


def test_a_resumed_sitting_skips_the_epochs_already_evaluated(tmp_path):
    class Args:
        root, epochs = tmp_path, 20

    run = study2.run_dir(tmp_path, "byol", 0)
    run.mkdir(parents=True)
    (run / "results-evaluate-20261207-000000.json").write_text(json.dumps({"evaluated_epoch": 8, "eval": {}}))
    (run / "results-evaluate-20261207-000001.json").write_text("{torn")  # a file cut short: not counted
    left = [c[c.index("--epoch") + 1] for c in study2.curve_cmds("byol", 0, Args)]
    assert left == ["4", "12", "16"]
