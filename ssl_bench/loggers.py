"""Training curves out of a run: the ecosystem's own loggers, and ``loss.png``.

Recipe key ``log`` (a list; default none — ``metrics.jsonl`` is always written)::

    log: [csv, tensorboard]                     # <run>/logs/csv/metrics.csv, <run>/logs/tensorboard/events.*
    log: [{name: wandb, project: my-study, mode: offline}, {name: mlflow, tracking_uri: "http://localhost:5000"}]

``csv`` and ``tensorboard`` are Lightning Fabric's loggers; ``wandb`` and ``mlflow`` are those
packages' own clients (optional: ``pip install wandb`` / ``pip install mlflow``).  Every logger gets
the loss and learning rate of every step (counted from 1), and per epoch, at its last step, the mean
loss, the selector's same-label precision, images/s and, with ``train.knn_every: N``, the kNN
accuracy on the validation split; after the evaluations, every final metric as
``eval/<protocol>/<metric>`` (TensorBoard's ``hp_metric`` is the recipe's headline metric).
Per-step values are also kept in ``steps.jsonl`` (one line per epoch, whole lines, survives a
resume): ``loss.png`` is drawn from it after training.  Nothing here changes what a run computes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

from ssl_bench.errors import SSLBenchError

__all__ = ["parse_log", "check_reachable", "RunLoggers", "append_steps", "plot_loss"]

LOGGERS = {
    "csv": "Lightning Fabric CSVLogger → logs/csv/metrics.csv",
    "tensorboard": "Lightning Fabric TensorBoardLogger → logs/tensorboard/ (tensorboard --logdir RUN/logs)",
    "wandb": "Weights & Biases (pip install wandb); options: project, entity, mode (online/offline), tags",
    "mlflow": "MLflow (pip install mlflow); options: tracking_uri (default: a file store in RUN/mlruns), experiment",
}
OPTIONS = {"csv": set(), "tensorboard": set(), "wandb": {"project", "entity", "mode", "tags"},
           "mlflow": {"tracking_uri", "experiment"}}
WANDB_MODES = ("online", "offline", "disabled")
MLFLOW_SCHEMES = ("file", "http", "https", "databricks", "sqlite", "postgresql", "mysql", "mssql")
REACH_TIMEOUT_S = 5.0  # an MLflow server that does not answer a TCP connection in this time is reported, not waited for
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
            raise SSLBenchError(f"recipe key log[{i}]: logger {name} takes no option '{sorted(extra)[0]}' (options: "
                                f"{', '.join(sorted(OPTIONS[name])) or 'none'})")
        _check_options(block, f"log[{i}]")
        if any(b["name"] == name for b in out):  # two csv loggers would write every row twice into one file
            raise SSLBenchError(f"recipe key log[{i}]: logger {name} is named twice; name each logger once")
        if name in ("wandb", "mlflow", "tensorboard"):  # checked with the recipe, before anything is written
            import importlib.util

            if importlib.util.find_spec(name) is None and not (
                name == "tensorboard" and importlib.util.find_spec("tensorboardX")
            ):
                raise SSLBenchError(f"recipe key log[{i}]: {name} is not installed (pip install {name}; or pip install "
                                    "'ssl-bench[loggers]')")
        out.append(dict(block))
    return out


def _check_options(block: dict, key: str) -> None:
    """The types and values of a logger's options, checked with the recipe (``show`` and ``run`` alike)."""
    name = block["name"]
    for opt in ("project", "entity", "experiment", "tracking_uri"):
        if opt in block and block[opt] is not None and (not isinstance(block[opt], str) or not block[opt].strip()):
            raise SSLBenchError(f"recipe key {key}.{opt} ({name}) must be a non-empty string, got {block[opt]!r}")
    if name == "wandb":
        if block.get("mode") is not None and block["mode"] not in WANDB_MODES:
            raise SSLBenchError(f"recipe key {key}.mode (wandb) must be one of {', '.join(WANDB_MODES)}, got "
                                f"{block['mode']!r}")
        tags = block.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags)):
            raise SSLBenchError(f"recipe key {key}.tags (wandb) must be a list of strings, got {tags!r}")
    if name == "mlflow" and block.get("tracking_uri"):
        from urllib.parse import urlsplit

        scheme = urlsplit(block["tracking_uri"]).scheme.split("+")[0].lower()
        if scheme and len(scheme) > 1 and scheme not in MLFLOW_SCHEMES:  # one letter: a Windows drive
            raise SSLBenchError(f"recipe key {key}.tracking_uri (mlflow): unknown scheme '{scheme}' "
                                f"(a path, or {', '.join(s + '://' for s in MLFLOW_SCHEMES)})")


def check_reachable(blocks: list[dict]) -> None:
    """An MLflow server named by ``http(s)://`` must accept a connection within
    :data:`REACH_TIMEOUT_S` seconds: checked before the run directory is claimed, so an unreachable
    server is one line, not minutes of retries and a traceback after the run has started."""
    import socket
    from urllib.parse import urlsplit

    for i, b in enumerate(blocks):
        uri = b.get("tracking_uri") if b["name"] == "mlflow" else None
        parts = urlsplit(uri) if uri else None
        if parts is None or parts.scheme not in ("http", "https"):
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=REACH_TIMEOUT_S).close()
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise SSLBenchError(f"recipe key log[{i}].tracking_uri: the MLflow server at {uri} cannot be reached "
                                f"({reason}); start it, or leave tracking_uri out to log into the run directory") from e


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
        self._params = _flat_params(cfg)  # the recipe as TensorBoard's hyper-parameters (start and final metrics)
        self.backends: list[tuple[str, Any]] = []
        for i, b in enumerate(blocks):
            try:
                self.backends.append((b["name"], self._open(b, cfg)))
            except SSLBenchError:
                self.close("failed")
                raise
            except Exception as e:  # a logger's own client failing to start: one line naming it
                self.close("failed")
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise SSLBenchError(f"recipe key log[{i}]: {b['name']} could not start: {type(e).__name__}: "
                                    f"{first[:200]}") from e

    def _open(self, b: dict, cfg: dict):
        name, logs = b["name"], self.run_dir / "logs"
        if name in ("csv", "tensorboard"):
            from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

            if name == "csv":
                return CSVLogger(root_dir=str(logs), name="", version=name)
            # no placeholder hp_metric of -1: log_results writes the run's headline figure there
            lg = TensorBoardLogger(root_dir=str(logs), name="", version=name, default_hp_metric=False)
            lg.log_hyperparams(self._params)  # Fabric's CSVLogger keeps no hyper-parameters (recipe.yaml has them)
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
        mlflow.log_params({k: str(v)[:250] for k, v in self._params.items()})
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
        """Step ``first_step + 1 + i``: steps count from 1, so an epoch's scalars (at its last step,
        ``record["step"]``) sit on the step they sum up, as in ``loss.png``."""
        for i, (loss, lr) in enumerate(zip(losses, lrs)):
            self.log({"train/loss_step": loss, "train/lr": lr}, first_step + 1 + i)

    def log_results(self, eval_results: dict, headline: str, step: int) -> None:
        """The final evaluation metrics (``eval/<protocol>/<metric>``) into every logger at the last
        step; TensorBoard's ``hp_metric`` is the headline metric of the first protocol that reports it."""
        flat = {f"eval/{proto}/{k}": v for proto, m in eval_results.items() if isinstance(m, dict)
                for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not flat:
            return
        self.log(flat, step)
        head = next((float(m[headline]) for m in eval_results.values() if isinstance(m, dict)
                     and isinstance(m.get(headline), (int, float)) and not isinstance(m.get(headline), bool)), None)
        for name, lg in self.backends:
            if name == "tensorboard" and head is not None:
                lg.log_hyperparams(self._params, metrics={"hp_metric": head})
            elif name == "wandb":
                lg.summary.update(flat)

    def log_epoch(self, record: dict) -> None:
        keys = {"loss": "train/loss_epoch", "selector_precision": "train/selector_precision",
                "images_per_s": "train/images_per_s", "knn_val_accuracy": "val/knn_accuracy",
                "knn_val_balanced_accuracy": "val/knn_balanced_accuracy"}
        self.log(
            {new: record[old] for old, new in keys.items() if record.get(old) is not None} | {"epoch": record["epoch"]},
            record["step"],
        )

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


def plot_loss(run_dir: Path, title: Optional[str] = None, boundaries: tuple[tuple[int, str], ...] = (),
              log: Optional[Callable[[str], None]] = None) -> Optional[Path]:
    """``loss.png``: the loss of every step (thin), each epoch's mean (dots) and the learning rate;
    ``boundaries``: ``(step, label)`` of a staged objective's stage starts (t-SimCNE), drawn as lines.
    A figure that cannot be written (a full disk) is a warning through ``log``: the run's results
    matter more than its picture, and no half-written PNG is left."""
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
    for step, label in boundaries:
        ax.axvline(step + 0.5, color="0.35", lw=0.8, ls=":")
        ax.annotate(label, (step + 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10),
                    textcoords="offset points", fontsize=7, color="0.3", va="top")
    if title:
        ax.set_title(title, fontsize=9)
    out = Path(run_dir) / LOSS_PNG
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        (log or print)(f"warning: {out} was not written ({e.strerror or e}); the run's results are unaffected")
        return None
    finally:
        plt.close(fig)
    return out
