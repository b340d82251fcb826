"""Never lose a run: SIGKILL + --resume is bit-identical, checkpoints are atomic and checked, a
NaN loss stops and marks the run failed, two processes never share a run directory."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ssl_bench import checkpoint as ckpt
from ssl_bench import runs
from ssl_bench.cli import main
from ssl_bench.compare import load_runs
from ssl_bench.errors import SSLBenchError

REPO = Path(__file__).resolve().parents[1]
BREAST = str(REPO / "recipes" / "medmnist" / "byol_breastmnist.yaml")
# tiny but complete: EMA target, SGD momentum, cosine LR, NN selector with a memory bank that wraps
# around (its state must survive the restart too); 3 epochs × 8 steps, one thread (bit-reproducible)
TINY = [
    "--set", "backbone.name=mobilenetv3_small_050", "--set", "backbone.small_image_stem=false",
    "--set", "backbone.stem_pool=false", "--set", "objective.hidden_dim=256", "--set", "train.batch_size=64",
    "--set", "train.threads=1", "--set", "train.checkpoint_every=1", "--set", "evaluate=[{name: knn, k: 10}]",
    "--quiet",
]
NN = ["--set", "selector.name=nn", "--set", "selector.bank_size=192"]
TIMING = {"images_per_s", "epoch_time_s"}


def _cli(args):
    threads = torch.get_num_threads()
    try:
        return CliRunner().invoke(main, args, catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)  # train.threads=1 applies to this whole test process


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def killed_and_resumed(module_dir):
    """An uninterrupted run, and the same run SIGKILLed in the middle of an epoch then resumed."""
    root = module_dir / "resume"
    root.mkdir()
    ref, killed = root / "ref", root / "killed"
    args = [BREAST, "--set", "train.epochs=3", *TINY, *NN]
    proc = subprocess.Popen([sys.executable, "-m", "ssl_bench.cli", "run", *args, "--out", str(killed)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=root)
    at_kill = {}

    def kill_mid_epoch():
        last = killed / "checkpoints" / "last.pt"
        while not last.exists() and proc.poll() is None:
            time.sleep(0.05)
        epoch_s = json.loads((killed / "metrics.jsonl").read_text().splitlines()[0])["epoch_time_s"]
        time.sleep(0.4 * epoch_s)  # well inside epoch 2
        at_kill["metrics_lines"] = len((killed / "metrics.jsonl").read_text().splitlines())
        proc.send_signal(signal.SIGKILL)

    watcher = threading.Thread(target=kill_mid_epoch)
    watcher.start()
    res_ref = _cli(["run", *args, "--out", str(ref)])  # meanwhile, in this process
    watcher.join()
    output = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, output
    assert not (killed / "results.json").exists()
    epoch_at_kill = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    # killed inside epoch epoch_at_kill + 1: every finished epoch was checkpointed, the next one was cut
    assert 1 <= epoch_at_kill < 3 and at_kill["metrics_lines"] == epoch_at_kill
    res = _cli(["run", "--resume", str(killed)])  # the run's own recipe.yaml, no RECIPE needed
    return ref, killed, res_ref, res, epoch_at_kill


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_mid_epoch_then_resume_is_bit_identical(killed_and_resumed):
    ref, killed, res_ref, res, epoch_at_kill = killed_and_resumed
    assert res_ref.exit_code == 0, res_ref.output
    assert res.exit_code == 0, res.output
    assert f"resumed after epoch {epoch_at_kill} from last.pt" in res.output
    a = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"] == 24
    diff = max((a["objective"][k].double() - b["objective"][k].double()).abs().max().item() for k in a["objective"])
    assert diff == 0.0  # online, EMA target and BatchNorm statistics: bit for bit
    assert any(k.startswith("target_backbone.") for k in a["objective"])
    for k, s in a["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    assert torch.equal(a["selector"]["bank"], b["selector"]["bank"]) and a["selector"]["filled"] == 192
    # the redone epoch replaced the cut one: the same records, once each
    assert _metrics(ref) == _metrics(killed) and [r["epoch"] for r in _metrics(killed)] == [1, 2, 3]
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (ref, killed))
    assert ra["eval"] == rb["eval"] and ra["train"]["final_loss"] == rb["train"]["final_loss"]
    assert rb["resumed_from_epoch"] == epoch_at_kill and ra["resumed_from_epoch"] is None
    # peak memory: in the summary line and in results.json
    assert 100 < ra["peak_rss_mb"] < 8192 and "peak RSS" in res_ref.output


@pytest.mark.slow
@pytest.mark.e2e
def test_truncated_checkpoint_is_a_one_line_error_and_the_previous_one_is_kept(killed_and_resumed, tmp_path):
    _, killed, *_ = killed_and_resumed
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_bytes((killed / "recipe.yaml").read_bytes())
    good = (killed / "checkpoints" / "previous.pt").read_bytes()  # epoch 2's checkpoint
    (run_dir / "checkpoints" / "previous.pt").write_bytes(good)
    (run_dir / "checkpoints" / "last.pt").write_bytes(good[: len(good) // 2])  # a cut-off write
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    res = CliRunner().invoke(main, ["run", "--resume", str(run_dir)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"checkpoint {run_dir / 'checkpoints' / 'last.pt'} is truncated or corrupt" in err
    assert f"--resume {run_dir / 'checkpoints' / 'previous.pt'}" in err
    assert {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()} == before  # nothing touched
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "recipe.yaml"]
    assert torch.load(run_dir / "checkpoints" / "previous.pt", weights_only=True)["epoch"] == 2


def test_save_keeps_the_previous_checkpoint_and_a_failed_write_changes_nothing(tmp_path, monkeypatch):
    ckpt.save(tmp_path, {"epoch": 1, "objective": {"w": torch.ones(3)}})
    ckpt.save(tmp_path, {"epoch": 2, "objective": {"w": torch.full((3,), 2.0)}})
    folder = tmp_path / "checkpoints"
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 2
    assert torch.load(folder / "previous.pt", weights_only=True)["epoch"] == 1
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def disk_full(obj, f):  # a write that dies half-way
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(SSLBenchError, match=r"cannot write .*last.pt: No space left on device \(nothing was replaced"):
        ckpt.save(tmp_path, {"epoch": 3, "objective": {}})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file left either


NAN_PLUGIN = '''
import torch
from ssl_bench.objectives.base import StepOutput, ViewOutput
from ssl_bench.selectors import SELECTORS, Selector


@SELECTORS.register("nan_from_step")
class NanFromStep(Selector):
    """Test double: from global step ``at`` on, the predictions become NaN (a diverging run)."""

    def __init__(self, at: int = 10):
        super().__init__()
        self.at = at

    def select(self, ctx):
        return None

    def transform_outputs(self, out, ctx):
        if ctx.step < self.at:
            return out
        bad = lambda v: ViewOutput(h=v.h, z=v.z, t=v.t, p=v.p * float("nan"), a=v.a)
        return StepOutput((bad(out.views[0]), bad(out.views[1])))
'''


@pytest.mark.slow
@pytest.mark.e2e
def test_nan_loss_stops_marks_failed_keeps_checkpoint_and_compare_ignores_it(tmp_path, killed_and_resumed):
    ref = killed_and_resumed[0]
    plug = tmp_path / "nan_plugin.py"
    plug.write_text(NAN_PLUGIN)
    out = tmp_path / "diverged"
    res = _cli(["run", BREAST, "--set", "train.epochs=2", *TINY, "--set", f"plugins=[{plug}]",
                "--set", "selector.name=nan_from_step", "--set", "selector.at=10", "--out", str(out)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1
    assert msg.startswith("error: loss became non-finite at epoch 2, step 11 (step 3 of the epoch)")
    assert f"last good checkpoint kept: {out / 'checkpoints' / 'last.pt'}" in msg
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "failed" and status["epoch"] == 2 and status["step"] == 11
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["objective"].values()
                                       if v.is_floating_point())
    assert [r["epoch"] for r in _metrics(out)] == [1] and not (out / "results.json").exists()
    # compare leaves it out and says so; resuming it would only repeat the divergence
    loaded = load_runs([str(ref), str(out)])
    assert set(loaded.frame["run"]) == {str(ref.resolve())}
    assert [r for r, _ in loaded.failed] == [str(out.resolve())] and "epoch 2" in loaded.failed[0][1]
    res = CliRunner().invoke(main, ["compare", str(ref), str(out), "--metric", "auc"])
    assert res.exit_code == 0 and f"ignored failed run: {out.resolve()}" in res.output
    with pytest.raises(SSLBenchError, match=r"failed \(non-finite loss at epoch 2, step 11.*start a new run"):
        ckpt.open_run(out, {})


@pytest.mark.slow
def test_two_processes_never_write_into_one_run_directory(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    lock = runs.lock_run_dir(busy)  # another ssl-bench process holds it
    try:
        res = CliRunner().invoke(main, ["run", BREAST, *TINY, "--set", "train.epochs=1", "--out", str(busy)])
        assert res.exit_code == 2 and f"run directory {busy} is in use by another ssl-bench process" in res.output
        assert list(busy.iterdir()) == []
        # a separate process sees the lock too (flock is per open file, released on exit or SIGKILL)
        probe = (f"from ssl_bench.runs import lock_run_dir\ntry:\n lock_run_dir({str(busy)!r})\n"
                 "except Exception as e:\n print(e)")
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
        assert "in use by another ssl-bench process" in out
    finally:
        lock.release()
    runs.lock_run_dir(busy).release()  # free again once released
