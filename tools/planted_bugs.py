"""Plant the bugs that once slipped past the tests, one at a time, and check that the tests catch each.

    python tools/planted_bugs.py [--only NAME ...]

Each bug is a one-line change made in a temporary git worktree of HEAD (the checkout is never
touched); the tests named beside it — a subset of ``python -m pytest -m "not e2e"`` (every test but
the CLI's end-to-end runs, as tools/mutation.py runs), so a failure there is a failure of the default
suite — must fail.  Prints one line per bug and exits 1 if any
survives.  Not part of CI (a few minutes); part of the release checklist beside tools/mutation.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (file, original text, planted text, tests that must catch it)
BUGS = {
    "loss-without-positives": (
        "ssl_bench/step.py", "loss = self.objective.loss(out, chosen.extra, self.selector.weight)",
        "loss = self.objective.loss(out, None, self.selector.weight)", ["tests/test_training_path.py"]),
    "linear-C-on-train": (
        "ssl_bench/evaluate/linear.py",
        "m = classification_metrics(y_va, self._proba(ctx, fits[-1], x_va), ctx.data.task, ctx.data.positive_class)",
        "m = classification_metrics(y_tr, self._proba(ctx, fits[-1], x_tr), ctx.data.task, ctx.data.positive_class)",
        ["tests/evaluate/test_model_selection.py"]),
    "finetune-epoch-on-test": (
        "ssl_bench/evaluate/finetune.py", "val = self._evaluate(ctx, model, self.select_split, precision)",
        "val = self._evaluate(ctx, model, self.test_split, precision)", ["tests/evaluate/test_model_selection.py"]),
    "fs-least-similar": (
        "ssl_bench/selectors/similarity.py",
        "scores = F.normalize(f1.float(), dim=1) @ pool(ctx, F.normalize(f2.float(), dim=1)).T",
        "scores = -(F.normalize(f1.float(), dim=1) @ pool(ctx, F.normalize(f2.float(), dim=1)).T)",
        ["tests/selectors/test_semantics.py"]),
    "compare-std-ddof0": (
        "ssl_bench/compare.py",
        'stats = g["value"].agg(mean=_mean, std=lambda v: v.std(skipna=False), count="size").reset_index()',
        'stats = g["value"].agg(mean=_mean, std=lambda v: v.std(skipna=False, ddof=0), count="size").reset_index()',
        ["tests/test_compare_semantics.py", "tests/test_compare_tables.py"]),
    "compare-median-as-mean": (
        "ssl_bench/compare.py",
        'stats = g["value"].agg(mean=_mean, std=lambda v: v.std(skipna=False), count="size").reset_index()',
        'stats = g["value"].agg(mean="median", std=lambda v: v.std(skipna=False), count="size").reset_index()',
        ["tests/test_compare_semantics.py", "tests/test_compare_tables.py"]),
    "self-mask-dropped": (
        "ssl_bench/selectors/base.py", "mask = rows == torch.arange(n, device=scores.device)[None, :]",
        "mask = torch.zeros(b, n, dtype=torch.bool, device=scores.device)", ["tests/selectors/test_selectors.py"]),
    "byol-extra-target-wrong-view": (
        "ssl_bench/objectives/base.py",
        "own1, ex1 = cosine_terms(v1.p, v2.t, extra, self.scale, self.offset, extra_t=et[0], pool_t=pool1)",
        "own1, ex1 = cosine_terms(v1.p, v2.t, extra, self.scale, self.offset, extra_t=et[0], "
        "pool_t=pool1 if pool1 is not None else v1.t)",
        ["tests/objectives/test_objectives.py"]),
    "ema-momentum-off-by-one": (
        "ssl_bench/step.py", "momentum = self.objective.momentum_update(step + 1, self.total_steps)",
        "momentum = self.objective.momentum_update(step, self.total_steps)", ["tests/test_training_path.py"]),
    "fnc-min-instead-of-max": (
        "ssl_bench/selectors/fnc.py",
        "return torch.stack([F.normalize(s.float(), dim=1) @ c.T for s in support]).amax(0)",
        "return torch.stack([F.normalize(s.float(), dim=1) @ c.T for s in support]).amin(0)",
        ["tests/selectors/test_selectors.py"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(BUGS), help="plant only these (repeatable)")
    args = ap.parse_args()
    survived = []
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "wt"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(wt), "HEAD"], check=True)
        try:
            for name in args.only or BUGS:
                path, original, planted, tests = BUGS[name]
                f = wt / path
                text = f.read_text()
                if text.count(original) != 1:
                    print(f"{name:32s} CANNOT PLANT: the line is not in {path} (once)")
                    survived.append(name)
                    continue
                f.write_text(text.replace(original, planted))
                env = {**os.environ, "PYTHONPATH": str(wt),  # the worktree has no ../shared beside it
                       "SSL_BENCH_SHARED_DATA": os.environ.get("SSL_BENCH_SHARED_DATA",
                                                               str(REPO.parent / "shared" / "data"))}
                proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-m", "not e2e", "-p",
                                       "no:cacheprovider", *tests],
                                      cwd=wt, env=env, capture_output=True, text=True)
                f.write_text(text)
                failed = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
                caught = proc.returncode == 1 and failed
                print(f"{name:32s} "
                      f"{'caught by ' + failed[0].split(' ')[1] if caught else 'NOT CAUGHT (exit ' + str(proc.returncode) + ')'}", flush=True)  # noqa: E501
                if proc.returncode not in (0, 1):
                    print(proc.stdout[-2000:] + proc.stderr[-2000:])
                if not caught:
                    survived.append(name)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(wt)], check=False)
    print(f"planted {len(args.only or BUGS)}, caught {len(args.only or BUGS) - len(survived)}"
          + (f", survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
