"""Run the cross product of a recipe's swept keys and seeds, sequentially, resumable.

``ssl-bench sweep RECIPE --grid selector.name=none,fs,tracin,oracle --seeds 0,1,2`` runs 12 runs.
Each combination has a fixed run directory, ``OUT_ROOT/<recipe name>/<key=value+…>/seed<N>``, so a
sweep started again skips what already finished (``results.json`` present), resumes what was
interrupted from its last checkpoint, and leaves alone what another process is running (two
sweeps of one grid share the work).  The list of
combinations (:func:`plan_sweep`) is plain data — a cluster launcher can take the same list and
run each entry as one ``ssl-bench run RECIPE --set … --out DIR`` job.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ssl_bench.errors import RunDirBusy, SSLBenchError
from ssl_bench.recipe import load_recipe
from ssl_bench.runs import RESULTS_FILE

__all__ = ["parse_seeds", "plan_sweep", "run_sweep"]


@dataclass
class SweepJob:
    overrides: list[str]  # --set values of this combination (grid values and the seed)
    out: Path

    @property
    def done(self) -> bool:
        return (self.out / RESULTS_FILE).is_file()

    def command(self, recipe: str) -> str:
        sets = " ".join(f"--set {o}" for o in self.overrides)
        return f"ssl-bench run {recipe} {sets} --out {self.out}"


def parse_grid(grid: list[str]) -> list[tuple[str, list[str]]]:
    axes = []
    for g in grid:
        if "=" not in g:
            raise SSLBenchError(f"--grid expects key=v1,v2,…, got '{g}'")
        key, values = g.split("=", 1)
        vals = list(dict.fromkeys(v.strip() for v in values.split(",") if v.strip()))  # a value given twice runs once
        if not key.strip() or not vals:
            raise SSLBenchError(f"--grid expects key=v1,v2,…, got '{g}'")
        axes.append((key.strip(), vals))
    return axes


def parse_seeds(seeds: str) -> list[int]:
    try:
        if re.fullmatch(r"\d+-\d+", seeds):
            a, b = map(int, seeds.split("-"))
            return list(range(a, b + 1))
        return [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as e:
        raise SSLBenchError(f"--seeds expects e.g. 0,1,2 or 0-4, got '{seeds}'") from e


SLUG_MAX = 120  # characters of a combination's folder name (file systems allow 255 bytes)


def _slug(assignments: list[tuple[str, str]]) -> str:
    """The folder name of one combination: ``key=value+…`` where that is a safe file name, else the
    safe characters and a short hash of the exact text — so two combinations never share a folder
    (``method=BYOL-α`` and ``method=BYOL-β``; ``a/b`` and ``a_b``).  The hash follows ``~``, a
    character no plain slug has."""
    if not assignments:
        return "default"
    text = "+".join(f"{k}={v}" for k, v in assignments)
    slug = re.sub(r"[^A-Za-z0-9._=+-]", "_", text)
    if slug == text and len(slug) <= SLUG_MAX:
        return slug
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return f"{slug[:SLUG_MAX - 11]}~{digest}"


def plan_sweep(recipe: str, grid: list[str], seeds: list[int], overrides: list[str], out_root: str) -> list[SweepJob]:
    """Every combination's overrides and run directory; validates each resolved recipe first."""
    axes = parse_grid(grid)
    base = load_recipe(recipe, overrides)
    jobs = []
    for combo in itertools.product(*[[(k, v) for v in vals] for k, vals in axes]):
        combo = list(combo)
        for seed in seeds:
            sets = list(overrides) + [f"{k}={v}" for k, v in combo] + [f"seed={seed}"]
            load_recipe(recipe, sets)  # a bad combination is reported before anything runs
            out = Path(out_root) / base.name / _slug(combo) / f"seed{seed}"
            jobs.append(SweepJob(sets, out))
    folders: dict[str, SweepJob] = {}
    for job in jobs:  # case-insensitive file systems (macOS, Windows) fold BYOL and byol into one folder
        other = folders.setdefault(str(job.out).casefold(), job)
        if other is not job:
            raise SSLBenchError(f"--grid: {' '.join(other.overrides)} and {' '.join(job.overrides)} would share the "
                                f"run folder {job.out} on a case-insensitive file system; rename one value")
    return jobs


def run_sweep(
    recipe: str,
    jobs: list[SweepJob],
    device: Optional[str] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[int, int, list[tuple[SweepJob, str]]]:
    """Run the jobs that have not finished; returns (ran, skipped, failures).

    A job whose directory another process holds (a sweep running beside this one) is left alone and
    counted as skipped; an interrupted one with a checkpoint is resumed (``--resume``); one that
    stopped before its first checkpoint is kept as ``…incomplete-<time>`` and run again; one marked
    failed for good (a NaN loss) is reported, not repeated.
    """
    from ssl_bench import checkpoint
    from ssl_bench.runs import RunLock, read_status, remove_stale_temps
    from ssl_bench.train import run as run_recipe

    ran = skipped = 0
    failures = []
    for i, job in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {' '.join(job.overrides)}"
        if job.done:
            log(f"{tag}: done, skipped ({job.out})")
            skipped += 1
            continue
        resume = None
        if job.out.exists():
            try:
                lock = RunLock(job.out)  # never touch a run another process is writing
            except SSLBenchError:
                log(f"{tag}: in use by another ssl-bench process, left alone ({job.out})")
                skipped += 1
                continue
            try:
                if job.done:  # another sweep finished it while this one was on its way
                    log(f"{tag}: done, skipped ({job.out})")
                    skipped += 1
                    continue
                status = read_status(job.out)
                has_ckpt = any(
                    (job.out / "checkpoints" / f).is_file() for f in ("last.pt", checkpoint.PREVIOUS_CHECKPOINT)
                )
                if status.get("status") == "failed" and not status.get("resumable", False):
                    failures.append((job, f"failed earlier: {status.get('reason', '?')} (not repeated; remove "
                                          f"{job.out} to run it again)"))
                    log(f"{tag}: failed earlier ({status.get('reason', '?')}); not repeated")
                    continue
                if has_ckpt:
                    resume = ""
                    log(f"{tag}: interrupted earlier; resuming from its checkpoint")
                elif any(job.out.iterdir()):
                    remove_stale_temps(job.out)
                    moved = job.out.with_name(job.out.name + time.strftime(".incomplete-%Y%m%d-%H%M%S"))
                    job.out.rename(moved)  # under our lock: nobody writes there
                    log(f"{tag}: interrupted before its first checkpoint; kept as {moved}, running again")
            finally:
                lock.release()
        log(f"{tag}: running")
        try:
            run_recipe(load_recipe(recipe, job.overrides), out=job.out, device=device, progress=progress, log=log,
                       resume=resume)
            ran += 1
        except RunDirBusy:  # another sweep claimed it between our check and our start
            log(f"{tag}: in use by another ssl-bench process, left alone ({job.out})")
            skipped += 1
        except SSLBenchError as e:
            failures.append((job, str(e)))
            log(f"{tag}: failed: {e}")
    return ran, skipped, failures
