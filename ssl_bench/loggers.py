"""Training curves out of a run: the ecosystem's own loggers, and ``loss.png``.

Recipe key ``log`` (a list; default none — ``metrics.jsonl`` is always written)::

    log: [csv, tensorboard]                     # <run>/logs/csv/metrics.csv, <run>/logs/tensorboard/events.*
    log: [{name: wandb, project: my-study, mode: offline}, {name: mlflow, tracking_uri: "http://localhost:5000"}]

``csv`` and ``tensorboard`` are Lightning Fabric's loggers; ``wandb`` and ``mlflow`` are those
packages' own clients (optional: ``pip install wandb`` / ``pip install mlflow``).  Every logger gets
the loss and learning rate of every step, and per epoch the mean loss, the selector's same-label
precision, images/s and, with ``train.knn_every: N``, the kNN accuracy on the validation split.
Per-step values are also kept in ``steps.jsonl`` (one line per epoch, whole lines, survives a
resume): ``loss.png`` is drawn from it after training.  Nothing here changes what a run computes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from ssl_bench.errors import SSLBenchError

LOGGERS = {
    "csv": "Lightning Fabric CSVLogger → logs/csv/metrics.csv",
    "tensorboard": "Lightning Fabric TensorBoardLogger → logs/tensorboard/ (tensorboard --logdir RUN/logs)",
    "wandb": "Weights & Biases (pip install wandb); options: project, entity, mode (online/offline), tags",
    "mlflow": "MLflow (pip install mlflow); options: tracking_uri (default: a file store in RUN/mlruns), experiment",
}
OPTIONS = {"csv": set(), "tensorboard": set(), "wandb": {"project", "entity", "mode", "tags"}, "mlflow": {"tracking_uri", "experiment"}}
STEPS_FILE = "steps.jsonl"
LOSS_PNG = "loss.png"


def parse_log(value: Any) -> list[dict]:
    """The recipe's ``log`` list as ``[{name, options…}]``; one-line errors naming the entry."""
    if not isinstance(value, list):
        raise SSLBenchError(f"recipe key log must be a list of logger names ({', '.join(LOGGERS)}), got {value!r}")
    out = []
    for i, entry in enumerate(value):
        block = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(block, dict) or not isinstance(block.get("name"), str):
            raise SSLBenchError(f"recipe key log[{i}] must be a logger name or {{name: …, options}}, got {entry!r}")
        name = block["name"]
        if name not in LOGGERS:
            import difflib

            close = difflib.get_close_matches(name, list(LOGGERS), n=1)
            hint = f" — did you mean '{close[0]}'?" if close else f" (loggers: {', '.join(LOGGERS)})"
            raise SSLBenchError(f"recipe key log[{i}]: unknown logger '{name}'{hint}")
        extra = set(block) - {"name"} - OPTIONS[name]
        if extra:
            raise SSLBenchError(f"recipe key log[{i}]: logger {name} takes no option '{sorted(extra)[0]}' (options: {', '.join(sorted(OPTIONS[name])) or 'none'})")
        if name in ("wandb", "mlflow", "tensorboard"):  # checked with the recipe, before anything is written
            import importlib.util

            if importlib.util.find_spec(name) is None and not (name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
                raise SSLBenchError(f"recipe key log[{i}]: {name} is not installed (pip install {name}; or pip install 'ssl-bench[loggers]')")
        out.append(dict(block))
    return out


def _flat_params(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


class RunLoggers:
    """The loggers a recipe names, opened on rank 0 for one run directory."""

    def __init__(self, blocks: list[dict], run_dir: Path, cfg: dict):
        self.run_dir = Path(run_dir)
        self.backends: list[tuple[str, Any]] = []
        for b in blocks:
            self.backends.append((b["name"], self._open(b, cfg)))

    def _open(self, b: dict, cfg: dict):
        name, logs = b["name"], self.run_dir / "logs"
        if name in ("csv", "tensorboard"):
            from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

            cls = CSVLogger if name == "csv" else TensorBoardLogger
            lg = cls(root_dir=str(logs), name="", version=name)
            if name == "tensorboard":  # Fabric's CSVLogger keeps no hyper-parameters (recipe.yaml has them)
                lg.log_hyperparams(_flat_params(cfg))
            return lg
        if name == "wandb":
            try:
                import wandb
            except ImportError:
                raise SSLBenchError("recipe key log: wandb is not installed (pip install wandb)") from None
            run = wandb.init(project=b.get("project", "ssl-bench"), entity=b.get("entity"), mode=b.get("mode"),
                             dir=str(self.run_dir), name=f"{cfg['name']}-seed{cfg['seed']}", config=cfg,
                             tags=b.get("tags"), reinit="finish_previous")
            return run
        try:
            import mlflow
        except ImportError:
            raise SSLBenchError("recipe key log: mlflow is not installed (pip install mlflow)") from None
        uri = b.get("tracking_uri")
        if not uri:  # a file store in the run directory (works with mlflow-skinny: no database needed)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (self.run_dir / "mlruns").resolve().as_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(b.get("experiment", "ssl-bench"))
        run = mlflow.start_run(run_name=f"{cfg['name']}-seed{cfg['seed']}")
        params = _flat_params(cfg)
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
        return run

    def log(self, metrics: dict[str, float], step: int) -> None:
        metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not metrics:
            return
        for name, lg in self.backends:
            if name in ("csv", "tensorboard"):
                lg.log_metrics(metrics, step=step)
            elif name == "wandb":
                lg.log(metrics, step=step)
            else:
                import mlflow

                mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items()}, step=step)

    def log_steps(self, first_step: int, losses: list[float], lrs: list[float]) -> None:
        for i, (loss, lr) in enumerate(zip(losses, lrs)):
            self.log({"train/loss_step": loss, "train/lr": lr}, first_step + i)

    def log_epoch(self, record: dict) -> None:
        keys = {"loss": "train/loss_epoch", "selector_precision": "train/selector_precision", "images_per_s": "train/images_per_s",
                "knn_val_accuracy": "val/knn_accuracy", "knn_val_balanced_accuracy": "val/knn_balanced_accuracy"}
        self.log({new: record[old] for old, new in keys.items() if record.get(old) is not None} | {"epoch": record["epoch"]}, record["step"])

    def close(self, status: str = "success") -> None:
        for name, lg in self.backends:
            try:
                if name in ("csv", "tensorboard"):
                    lg.finalize(status)
                elif name == "wandb":
                    lg.finish(exit_code=0 if status == "success" else 1)
                else:
                    import mlflow

                    mlflow.end_run("FINISHED" if status == "success" else "FAILED")
            except Exception:  # a logger that cannot flush never fails a finished run
                pass
        self.backends = []

    def files(self) -> list[str]:
        """What the loggers wrote, for the run summary."""
        out = []
        for name, lg in self.backends:
            if name == "csv":
                out.append(str(Path(lg.log_dir) / "metrics.csv"))
            elif name == "tensorboard":
                out.append(str(lg.log_dir))
            elif name == "wandb":
                out.append(f"wandb run {lg.id} ({lg.dir})")
            else:
                out.append(f"mlflow run {lg.info.run_id}")
        return out


def append_steps(run_dir: Path, epoch: int, first_step: int, losses: list[float], lrs: list[float]) -> None:
    """One whole line per epoch in ``steps.jsonl`` (the per-step loss and learning rate)."""
    from ssl_bench import runs

    line = json.dumps({"epoch": epoch, "first_step": first_step, "loss": losses, "lr": lrs}) + "\n"
    runs.append_line(run_dir / STEPS_FILE, line)


def read_steps(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / STEPS_FILE
    out = []
    if p.is_file():
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    # a resumed run repeats the epochs after its checkpoint: the last record of an epoch wins
    by_epoch = {r["epoch"]: r for r in out if isinstance(r, dict) and "epoch" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_loss(run_dir: Path, title: Optional[str] = None) -> Optional[Path]:
    """``loss.png``: the loss of every step (thin), each epoch's mean (dots) and the learning rate."""
    steps = read_steps(run_dir)
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys, lrs, ex, ey = [], [], [], [], []
    for r in steps:
        n = len(r["loss"])
        xs += list(range(r["first_step"] + 1, r["first_step"] + n + 1))
        ys += r["loss"]
        lrs += r["lr"]
        if n:
            ex.append(r["first_step"] + n)
            ey.append(sum(r["loss"]) / n)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    ax.plot(xs, ys, lw=0.7, color="#1f77b4", alpha=0.6, label="loss (step)")
    ax.plot(ex, ey, "o-", ms=3.5, color="#d62728", lw=1.2, label="loss (epoch mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(xs, lrs, color="0.5", lw=1.0, ls="--", label="learning rate")
    ax2.set_ylabel("learning rate", color="0.4")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right", frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    out = Path(run_dir) / LOSS_PNG
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, out)
    return out
