"""The run directory of one run, as an object: every write a run makes goes through it.

``metrics.jsonl`` and ``steps.jsonl`` (an epoch's record and its steps' losses), the recipe's loggers
(CSV, TensorBoard, W&B, MLflow), the progress bar and the epoch line, the checkpoints
(``checkpoints/last.pt``, the kept ``epochNNNN.pt``), ``loss.png``, ``status.json`` when the run fails
and ``results.json``.  In a data-parallel run only rank 0 writes: the other ranks' ``RunDirectory``
(``writes=False``) writes nothing and prints nothing, so the loop calls it the same way on every rank.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ssl_bench import checkpoint as ckpt
from ssl_bench import runs

__all__ = ["RunDirectory", "epoch_line"]


class RunDirectory:
    """The writes of one run into ``path`` (rank 0's: ``writes``).  ``loggers``: the recipe's
    :class:`~ssl_bench.loggers.RunLoggers` (or None); ``progress``: draw a progress bar."""

    def __init__(self, path: Path, writes: bool, log: Callable[[str], None], loggers: Optional[Any] = None,
                 progress: bool = False):
        self.path, self.writes, self.log, self.loggers = Path(path), writes, log, loggers
        self._progress = progress and writes
        self._bar = self._task = None
        self._shown = 0.0

    # -- progress -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def progress(self, first_epoch: int, total_steps: int, done: int, show: bool = True) -> Iterator[None]:
        """The progress bar over the epochs left (``show=False``: none, e.g. no epoch is left)."""
        with _progress_bar(self._progress and show) as bar:
            self._bar = bar
            self._task = (bar.add_task(f"epoch {first_epoch}", total=total_steps, completed=done, loss="-", lr="-",
                                       ips="-") if bar is not None else None)
            try:
                yield
            finally:
                self._bar = self._task = None

    def due(self) -> bool:
        """Whether the bar wants a new figure (at most once a second: reading the running loss is a
        host sync on a GPU)."""
        return self._bar is not None and time.perf_counter() - self._shown >= 1.0

    def show(self, step: int, loss: float, lr: float, images_per_s: float) -> None:
        self._shown = time.perf_counter()
        self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.4g}", ips=f"{images_per_s:.0f}")

    def start_epoch(self) -> None:
        self._shown = time.perf_counter()

    # -- an epoch -----------------------------------------------------------------------------
    def end_epoch(self, record: dict, epochs: int) -> None:
        """An epoch's record (its ``_step_loss`` / ``_step_lr`` lists are taken out of it) to
        ``metrics.jsonl``, ``steps.jsonl`` and the loggers, and its line to the terminal."""
        step_losses, step_lrs = record.pop("_step_loss"), record.pop("_step_lr")
        if self.writes:
            from ssl_bench.loggers import append_steps

            runs.append_metrics(self.path, record)
            first = record["step"] - len(step_losses)
            append_steps(self.path, record["epoch"], first, step_losses, step_lrs)
            if self.loggers is not None:
                self.loggers.log_steps(first, step_losses, step_lrs)
                self.loggers.log_epoch(record)
        line = epoch_line(record, epochs)
        if self._bar is not None:
            self._bar.update(self._task, completed=record["step"],
                             description=f"epoch {min(record['epoch'] + 1, epochs)}")
            self._bar.console.print(line)
        else:
            self.log(line)

    def checkpoint(self, state: Callable[[], dict]) -> None:
        """``checkpoints/last.pt`` (``state()`` is built only where it is written)."""
        if self.writes:
            ckpt.save(self.path, state())

    def keep_epoch(self, epoch: int, state: Callable[[], dict]) -> None:
        """``checkpoints/epochNNNN.pt``: an epoch's network kept for TracInCP and ``positives``."""
        if self.writes:
            ckpt.save_epoch(self.path, epoch, state())

    def truncate_metrics(self, epoch: int) -> Optional[dict]:
        """A resumed run: the records of epochs after ``epoch`` (redone) are taken out of
        ``metrics.jsonl``; returns the record of ``epoch`` (None where nothing is written)."""
        return ckpt.truncate_metrics(self.path, epoch) if self.writes else None

    def loss_plot(self, title: str, boundaries: tuple = ()) -> None:
        if self.writes:
            from ssl_bench.loggers import plot_loss

            plot_loss(self.path, title=title, boundaries=boundaries, log=self.log)

    # -- the end ------------------------------------------------------------------------------
    def results(self, results: dict, headline: str, step: int) -> None:
        """``results.json``, and the evaluation metrics to the loggers."""
        if self.writes:
            runs.write_results(self.path, results)
            if self.loggers is not None:
                self.loggers.log_results(results["eval"], headline, step)

    def failed(self, reason: str, **info: Any) -> None:
        """``status.json``: the run stopped (``resumable``: with an error ``--resume`` can go past)."""
        if self.writes:
            runs.mark_failed(self.path, reason, **info)

    def close(self, status: str = "success") -> None:
        """The loggers' end (``status``: success or failed); safe to call twice."""
        if self.loggers is not None:
            self.loggers.close(status)


def epoch_line(record: dict, epochs: int) -> str:
    """``epoch 3/10  loss 0.8123  lr 0.09  sel-prec 0.541 (chance 0.470)  412 img/s``."""
    prec = (
        f"  sel-prec {record['selector_precision']:.3f} (chance {record['selector_chance']:.3f})"
        if record["selector_precision"] is not None else ""
    )
    knn = f"  val kNN acc {record['knn_val_accuracy']:.3f}" if record.get("knn_val_accuracy") is not None else ""
    return (f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  lr {record['lr']:.4g}{prec}{knn}  "
            f"{record['images_per_s']:.0f} img/s")


def _progress_bar(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[ips]} img/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        refresh_per_second=2,
    )
