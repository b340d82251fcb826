"""The ``ssl-bench`` command line: ``run``, ``list``, ``show``, ``embed``, …"""

from __future__ import annotations

import sys
from typing import Optional

import click

from ssl_bench.errors import SSLBenchError

__all__ = ["main", "run", "sweep", "compare_cmd", "show", "positives", "embed", "export"]


class _Group(click.Group):
    """Turn user errors into one red line and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SSLBenchError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssl-bench")
def main():
    """Self-supervised pre-training on medical images with swappable positive pairs."""


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.argument("assignments", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. train.epochs=2.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory (new or empty).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (default: the recipe's train.device).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--devices", type=int, default=None,
              help="Data-parallel processes per node (DDP; GPUs, or CPU processes with gloo). train.batch_size is the "
                   "global batch.")
@click.option("--nodes", type=int, default=None,
              help="Nodes for DDP: run the command on each node with MASTER_ADDR, MASTER_PORT, NODE_RANK set (or use "
                   "torchrun).")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
              help="Continue an interrupted run from its last checkpoint: RUN_DIR (or a checkpoint in it); "
              "alone, the --out directory or the newest unfinished run of RECIPE.")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
              help="Import this plug-in file first (repeatable); for --resume RUN_DIR of a run that used plug-ins.")
@click.option("--load-plugins", is_flag=True,
              help="With --resume RUN_DIR: import the plug-in files the run's recipe.yaml names (code from that run).")
def run(recipe: Optional[str], assignments: tuple[str, ...], overrides: tuple[str, ...], out: Optional[str],
        device: Optional[str], quiet: bool, devices: Optional[int], nodes: Optional[int], resume: Optional[str],
        plugins: tuple[str, ...], load_plugins: bool):
    """Pre-train and evaluate RECIPE; write a run directory.

    A bare KEY=VALUE after RECIPE is taken as --set KEY=VALUE.  Resuming a run directory imports no
    code from it unless --plugin or --load-plugins says so."""
    from pathlib import Path

    from ssl_bench.recipe import load_recipe
    from ssl_bench.runs import RECIPE_FILE
    from ssl_bench.train import run as run_recipe

    if resume and recipe is None and Path(resume).suffix in (".yaml", ".yml"):  # `run --resume RECIPE`
        recipe, resume = resume, ""
    overrides = _with_assignments(overrides, assignments)
    own_recipe = True  # a recipe file the user named: its plug-ins are theirs to import
    if recipe is None:
        if not resume:
            raise SSLBenchError("ssl-bench run needs a RECIPE file (or --resume RUN_DIR)")
        run_dir = Path(resume).parent.parent if Path(resume).is_file() else Path(resume)
        recipe = str(run_dir / RECIPE_FILE)  # the run's own resolved recipe
        if not Path(recipe).is_file():
            raise SSLBenchError(f"--resume {resume}: not a run directory (no {RECIPE_FILE})")
        own_recipe = load_plugins
    since = _plugins_loaded()
    _load_plugin_options(plugins)
    r = load_recipe(recipe, list(overrides), load_plugins=own_recipe)
    if r.unchecked:
        raise SSLBenchError(
            f"{recipe} uses {', '.join(map(str, r.unchecked))} from plug-ins "
            f"({', '.join(r.cfg.get('plugins') or []) or 'none named'}) that were not imported: pass --plugin FILE, or "
            "--load-plugins to import the files the run names"
        )
    if plugins or load_plugins:  # code named by a run directory or a --plugin option
        _say_plugins(since)
    run_recipe(r, out=out, device=device, progress=not quiet, devices=devices, nodes=nodes, resume=resume)


def _with_assignments(overrides, assignments) -> list[str]:
    """``--set`` overrides, and the bare ``KEY=VALUE`` words after the recipe (the same thing)."""
    for a in assignments:
        if "=" not in a:
            raise SSLBenchError(f"unexpected argument '{a}': give recipe options as KEY=VALUE (or --set KEY=VALUE), "
                                "e.g. train.epochs=1")
    return list(overrides) + list(assignments)


def _load_plugin_options(plugins) -> None:
    from ssl_bench.registry import load_plugin_file

    for p in plugins:
        load_plugin_file(p, key="--plugin")


def _plugins_loaded() -> int:
    from ssl_bench.registry import LOADED_FILES

    return len(LOADED_FILES)


def _say_plugins(since: int = 0) -> None:
    """Name the plug-in files this command imported (``LOADED_FILES[since:]``): code from a run
    directory or a ``--plugin`` option that ran on the user's behalf."""
    from ssl_bench.registry import LOADED_FILES

    for f in LOADED_FILES[since:]:
        click.echo(f"plug-in: imported {f}", err=True)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--grid", multiple=True, metavar="KEY=V1,V2", help="A swept key and its values (repeatable).")
@click.option("--seeds", default="0", show_default=True, help="Seeds: 0,1,2 or 0-4.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fixed overrides for every run.")
@click.option("--out-root", default="runs/sweeps", show_default=True, type=click.Path(file_okay=False))
@click.option("--device", default=None)
@click.option("--dry-run", is_flag=True, help="Print the runs (as ssl-bench run commands) and exit.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sweep(recipe, grid, seeds, overrides, out_root, device, dry_run, quiet):
    """Run RECIPE for every combination of --grid values and --seeds, skipping finished runs."""
    from ssl_bench.sweep import parse_seeds, plan_sweep, run_sweep

    jobs = plan_sweep(recipe, list(grid), parse_seeds(seeds), list(overrides), out_root)
    if dry_run:
        for job in jobs:
            click.echo(("# done: " if job.done else "") + job.command(recipe))
        return
    ran, skipped, failures = run_sweep(recipe, jobs, device=device, progress=not quiet)
    click.echo(f"sweep: {ran} ran, {skipped} already finished, {len(failures)} failed — compare with: ssl-bench "
               f"compare {out_root}")
    if failures:
        for job, msg in failures:
            click.secho(f"failed: {job.out}: {msg}", fg="red", err=True)
        sys.exit(1)


@main.command(name="compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--metric", default=None,
              help="Metric of the cells: auc, bma (balanced accuracy), accuracy, precision, f1, … "
                   "(default: the recipes' headline_metric).")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "latex"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the table to this file.")
@click.option("--allow-mixed", is_flag=True, help="Average runs of one method even if their recipes differ.")
@click.option("--lower-is-better", is_flag=True, help="Mark the lowest mean as best.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Save PNGs here: metric vs label fraction, selector precision per epoch.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file or --plot figures.")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a run directory could not be read (the table of the others is printed).")
@click.option("--versus", default=None, metavar="METHOD",
              help="Also each method minus METHOD, paired by seed: mean difference, 95 % t-interval, "
                   "* where the interval excludes 0.")
def compare_cmd(runs, metric, fmt, out, allow_mixed, lower_is_better, plot_dir, force, strict, versus):
    """Mean(std) over seeds per method × dataset × protocol from run directories (or globs)."""
    from rich.console import Console
    from rich.table import Table

    from ssl_bench.compare import METRIC_ALIASES, compare, headline_metric

    check_new_file(out, force, "--out")
    table, text, loaded = compare(runs, metric=metric, fmt=fmt, allow_mixed=allow_mixed,
                                  lower_is_better=lower_is_better, versus=versus)
    metric = METRIC_ALIASES.get(metric, metric) if metric else headline_metric(loaded)
    plots = _plot_files(plot_dir, metric, force) if plot_dir else {}  # checked before anything is written
    for run_dir, protocol, name, value in loaded.nonfinite:
        if name == metric:
            click.secho(f"not a finite number, its cell shows nan: {run_dir} eval.{protocol}.{name} = {value}",
                        fg="yellow", err=True)
    for s in loaded.skipped:
        click.secho(f"skipped unfinished run (no results.json): {s}", fg="yellow", err=True)
    for s, reason in loaded.failed:
        click.secho(f"ignored failed run: {s} ({reason})", fg="yellow", err=True)
    for s, reason in loaded.unreadable:
        click.secho(f"unreadable run, left out: {s} ({reason})", fg="red", err=True)
    if loaded.reevaluated:
        click.secho(f"{len(loaded.reevaluated)} run(s) re-evaluated with ssl-bench evaluate: the newest value of each "
                    "protocol is used",
                    fg="yellow", err=True)
    if fmt == "table":
        n_runs = loaded.frame["run"].nunique()
        t = Table(title=f"{metric}: mean(std) over seeds, n = seeds; best per column marked * ({n_runs} runs)",
                  title_justify="left")
        t.add_column("method", style="bold")
        for c in table.columns:
            t.add_column(c, justify="right")
        for m, row in table.iterrows():
            t.add_row(m, *[(f"[bold green]{v.replace('**', '')} *[/]" if v.startswith("**") else v) for v in row])
        Console().print(t)
        text = table.to_string() + "\n"
        if table.attrs.get("note"):
            click.echo(table.attrs["note"])
            text += table.attrs["note"] + "\n"
        if "versus" in table.attrs:
            vt = Table(title=table.attrs["versus_note"], title_justify="left")
            vt.add_column("method", style="bold")
            for c in table.attrs["versus"].columns:
                vt.add_column(c, justify="right")
            for m, row in table.attrs["versus"].iterrows():
                vt.add_row(m, *row)
            Console().print(vt)
            text += "\n" + table.attrs["versus_note"] + "\n" + table.attrs["versus"].to_string() + "\n"
    else:
        click.echo(text, nl=False)
    if out:
        from ssl_bench.runs import atomic_write_text

        atomic_write_text(out, text)
        click.echo(f"table: {out}", err=True)
    if plot_dir:
        from ssl_bench.plots import plot_label_fractions, plot_selector_precision

        methods = dict(loaded.frame.drop_duplicates("run")[["run", "method"]].itertuples(index=False, name=None))
        made = [plot_label_fractions(loaded.frame, metric, plots["label_fraction"]),
                plot_selector_precision(methods, plots["selector"])]
        for m in made:
            if m is not None:
                click.echo(f"plot: {m}")
        if not any(made):
            click.echo("--plot: nothing to plot (no label-fraction series and no selector precision in these runs)",
                       err=True)
    if strict and loaded.unreadable:
        sys.exit(1)


def _plot_files(plot_dir: str, metric: str, force: bool) -> dict:
    """The figure files ``compare --plot DIR`` may write, each checked as an output file (a run's own
    files refused, existing ones only with --force); the metric's name made safe for a file name."""
    import re
    from pathlib import Path

    d = Path(plot_dir)  # click has checked that it is not a file
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", metric).lstrip(".") or "metric"
    files = {"label_fraction": d / f"label_fraction_{safe}.png", "selector": d / "selector_precision.png"}
    for f in files.values():
        check_new_file(str(f), force, "--plot")
    return files


def check_new_file(path: Optional[str], force: bool, option: str) -> None:
    """An output file: refused when it is a run directory's own file (even with --force), a folder, or
    exists and --force is not given (:func:`ssl_bench.runs.check_output`)."""
    from ssl_bench.runs import check_output

    if path is not None:
        check_output(path, option, force)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.argument("assignments", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
def show(recipe: str, assignments: tuple[str, ...], overrides: tuple[str, ...]):
    """Print RECIPE fully resolved (extends, overrides and defaults applied).  Imports no plug-in: a
    component only a plug-in registers is printed as given and named as not checked."""
    from ssl_bench.recipe import load_recipe

    r = load_recipe(recipe, _with_assignments(overrides, assignments), load_plugins=False)
    click.echo(r.to_yaml(), nl=False)
    train = r.cfg["train"]
    if train.get("precision") == "auto":  # what it resolves to here, without starting anything
        from ssl_bench.device import resolve_precision, select_device

        try:
            where = select_device(train.get("device", "auto"))
            click.echo(f"# train.precision auto resolves to {resolve_precision('auto', where)} on this machine "
                       f"({where})")
        except SSLBenchError:
            pass
    if r.unchecked:
        click.secho("note: not checked (from plug-ins, which show does not import): "
                    f"{', '.join(map(str, r.unchecked))}", fg="yellow", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--selector", "selectors", multiple=True, required=True,
              help="A batch selector to measure (repeatable), with options after a colon: tracin:normalize=true.")
@click.option("--k", default=3, show_default=True,
              help="Positives per anchor in the gallery; precision at top-1, 3, 10 up to k.")
@click.option("--epoch", type=int, default=None,
              help="Measure the network the run kept at this epoch (train.save_epochs).")
@click.option("--gallery", default=8, show_default=True, help="Anchors (rows) in the PNG gallery.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Gallery figure (.png, .pdf or .svg; default RUN_DIR/positives.png); "
                   "the report goes beside it as .json.")
@click.option("--device", default="auto")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False), help="Load a plug-in file first.")
@click.option("--force", is_flag=True, help="Overwrite an existing gallery and report (never a run's own files).")
def positives(run_dir: str, selectors: tuple[str, ...], k: int, epoch: Optional[int], gallery: int, out: Optional[str],
              device: str, plugins: tuple[str, ...], force: bool):
    """Same-label precision of each selector's positives over the training set, with a trained
    run's frozen network (the paper's Fig. 2), plus a PNG gallery of anchors and positives."""
    from rich.console import Console
    from rich.table import Table

    from ssl_bench.positives_report import analyse_positives, check_positives_options, positives_outputs
    from ssl_bench.registry import load_plugin_file

    check_positives_options(k, gallery, device)  # before any plug-in is imported or anything loaded
    positives_outputs(run_dir, out, epoch, force)
    since = _plugins_loaded()
    for p in plugins:
        load_plugin_file(p, key="--plugin")
    _say_plugins(since)
    rep = analyse_positives(run_dir, list(selectors), k=k, gallery=gallery, out=out, device=device, epoch=epoch,
                            force=force)
    table = Table(title=f"positives on {rep['dataset']} ({rep['images']} training images, batches of "
                        f"{rep['batch_size']}, network of epoch {rep['epoch']})")
    table.add_column("selector", style="bold cyan")
    ats = [key for key in next(iter(rep["selectors"].values())) if key.startswith("precision_top")]
    for key in ats:
        table.add_column(f"precision top-{key[len('precision_top'):]}", justify="right")
    table.add_column("chance Σp²", justify="right")
    for name, r in rep["selectors"].items():
        table.add_row(name, *(f"{r[key]:.3f}" for key in ats), f"{rep['chance']:.3f}")
    Console().print(table)
    click.echo(f"wrote {rep['gallery']} and {rep['report']}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="File to write: .csv (split, index, label, x, y or z0…), .npy (features only) or .parquet.")
@click.option("--features", type=click.Choice(["backbone", "head"]), default=None,
              help="backbone: pooled features (default); head: the objective's output (default for t-SimCNE's 2-D "
                   "map).")
@click.option("--data", "data_spec", default=None, metavar="BLOCK|RECIPE|FLAG",
              help="Images to embed: a data block ('{name: medmnist, flag: pneumoniamnist}'), a recipe file "
                   "(its data block) or a MedMNIST flag; default: the run's own data.")
@click.option("--split", default="all", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--png", default=None, type=click.Path(dir_okay=False),
              help="Also save a scatter plot (2-D heads; .png, .pdf or .svg).")
@click.option("--thumbnails", default=0, show_default=True, help="Image thumbnails at cluster positions in the PNG.")
@click.option("--device", default="auto")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
              help="Import this plug-in file first (a run that used plug-in components).")
@click.option("--force", is_flag=True, help="Overwrite existing --out / --png files.")
def embed(run_dir: str, out: str, features: Optional[str], data_spec: Optional[str], split: str, png: Optional[str],
          thumbnails: int, device: str, plugins: tuple[str, ...], force: bool):
    """Embed (new, out-of-sample) images with a trained run: backbone features, or the head's output
    (t-SimCNE's 2-D coordinates by default)."""
    from ssl_bench.embed import embed_outputs, embed_run, select_option_device

    embed_outputs(out, png, force)  # before any plug-in is imported or anything loaded
    select_option_device(device)
    since = _plugins_loaded()
    _load_plugin_options(plugins)
    _say_plugins(since)

    rep = embed_run(run_dir, out, data=data_spec, split=split, png=png, thumbnails=thumbnails, device=device,
                    features=features, force=force)
    rows = ", ".join(f"{s} {n}" for s, n in rep["splits"].items())
    click.echo(f"embedded {rep['images']} images of {rep['dataset']} ({rep['dim']}-D {rep['features']} features; rows: "
               f"{rows}) → wrote {rep['out']}")
    if "png" in rep:
        click.echo(f"wrote {rep['png']}")


@main.command(name="evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("assignments", nargs=-1, metavar="[evaluate=...]")
@click.option("--set", "overrides", multiple=True, metavar="evaluate=[...]",
              help="Other evaluations than the recipe's, e.g. --set 'evaluate=[{name: finetune, epochs: 20}]'.")
@click.option("--epoch", type=int, default=None,
              help="Evaluate the network the run kept at this epoch (train.save_epochs).")
@click.option("--device", default="auto")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
              help="Import this plug-in file first (a run that used plug-in components).")
def evaluate_cmd(run_dir: str, assignments: tuple[str, ...], overrides: tuple[str, ...], epoch: Optional[int],
                 device: str, plugins: tuple[str, ...]):
    """Run evaluations on a finished run's checkpoint without training; the results go to a new
    results-evaluate-<time>.json beside the run's results.json (never overwritten), which compare reads."""
    from ssl_bench.evaluate.saved_run import evaluate_run

    since = _plugins_loaded()
    _load_plugin_options(plugins)
    _say_plugins(since)
    evaluate_run(run_dir, _with_assignments(overrides, assignments), epoch=epoch, device=device, log=click.echo)


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write (e.g. backbone.pt).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def export(run_dir: str, out: str, force: bool):
    """Write a run's pre-trained backbone alone (timm state dict + what rebuilds it; FILE.safetensors
    also writes FILE.json, timm's config fields); load it with ssl_bench.load_backbone(FILE) or timm
    (docs/use_your_backbone.md)."""
    from ssl_bench.export import export_backbone

    check_new_file(out, force, "--out")
    info = export_backbone(run_dir, out, force=force)
    stem = (
        ("3×3 stride-1 stem" + (" + max-pool" if info["stem_pool"] else ", no max-pool"))
        if info["small_image_stem"] else "timm's own stem"
    )
    click.echo(
        f"wrote {out}: timm {info['timm_name']}, in_chans {info['in_chans']}, {stem}, {info['feature_dim']}-D "
        f"features, {info['image_size']} px views, epoch {info['epoch']}"
    )
    if str(out).endswith(".safetensors"):
        from pathlib import Path

        click.echo(f"wrote {Path(out).with_suffix('.json')}: timm's config.json fields (pretrained_cfg: the run's "
                   "mean, std, input size)")
    click.echo(f"load it: ssl_bench.load_backbone({str(out)!r})  (input: images in [0, 1]; normalisation included)")


KINDS = ("datasets", "augmentations", "backbones", "objectives", "selectors", "evaluations")


@main.command(name="list")
@click.argument("kind", required=False)
@click.argument("pattern", required=False)
@click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False), help="Load a plug-in file first.")
@click.option("--markdown", is_flag=True,
              help="Print the whole recipe reference as Markdown (docs/recipe_reference.md).")
def list_(kind: Optional[str], pattern: Optional[str], plugins: tuple[str, ...], markdown: bool):
    """Tables of the registries (KIND: datasets, augmentations, backbones, objectives, selectors,
    evaluations) or of the shipped recipes (KIND: recipes).  PATTERN filters names with wildcards,
    e.g. `ssl-bench list backbones 'convnext*'`; an exact NAME prints that component's options with
    type, default and help, e.g. `ssl-bench list selectors tracin`."""
    import difflib
    import fnmatch

    from rich.console import Console
    from rich.table import Table

    import ssl_bench.augment  # noqa: F401  (importing registers the built-in components)
    import ssl_bench.backbones  # noqa: F401
    import ssl_bench.data  # noqa: F401
    import ssl_bench.evaluate  # noqa: F401
    import ssl_bench.objectives  # noqa: F401
    import ssl_bench.selectors  # noqa: F401
    from ssl_bench.registry import ALL_REGISTRIES, load_plugin_file

    from ssl_bench.reference import option_rows, plain

    since = _plugins_loaded()
    for p in plugins:
        load_plugin_file(p, key="--plugin")
    _say_plugins(since)
    if markdown:
        from ssl_bench.reference import markdown_reference

        click.echo(markdown_reference(), nl=False)
        return
    if kind in ("recipes", "recipe"):
        _list_recipes(pattern)
        return
    if kind is not None:
        k = kind if kind in KINDS else kind + "s"
        if k not in KINDS:
            close = difflib.get_close_matches(kind, KINDS, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else f" (kinds: {', '.join(KINDS)})"
            raise SSLBenchError(f"unknown registry '{kind}'{hint}")
        kinds = [k]
    else:
        kinds = list(KINDS)
    console = Console()
    if (
        kind is not None and pattern and not any(c in pattern for c in "*?[")
        and (pattern in ALL_REGISTRIES[kinds[0]] or kinds[0] == "backbones")
    ):
        reg = ALL_REGISTRIES[kinds[0]]
        factory = reg.get(pattern, key=kinds[0])
        entry = next((e for e in reg.entries() if e.name == pattern), None)
        summary = plain(entry.summary) if entry else "timm model"
        table = Table(title=f"{kinds[0][:-1]} '{pattern}': {summary}", title_justify="left")
        for col, style in (("option", "bold cyan"), ("type", "dim"), ("default", ""), ("help", "")):
            table.add_column(col, style=style or None, no_wrap=col in ("option",))
        from rich.markup import escape

        for row in option_rows(factory):
            table.add_row(*(escape(c) for c in row))
        console.print(table)
        return
    for k in kinds:
        reg = ALL_REGISTRIES[k]
        table = Table(title=k, title_justify="left", show_lines=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("summary")
        table.add_column("defined in", style="dim")
        for name, summary, module in reg.rows(pattern):
            table.add_row(name, plain(summary), module)
        if reg.fallback_names is not None:  # e.g. any timm model for backbones
            extra = reg.fallback_names()
            if pattern:
                for name in fnmatch.filter(extra, pattern):
                    if name not in reg.names():
                        table.add_row(name, "timm model", "timm")
            else:
                table.add_row(
                    "<any timm model>",
                    f"{len(extra)} architectures, e.g. resnet18, resnet50, convnext_nano; search with `ssl-bench list "
                    f"{k} 'resnet*'`",
                    "timm",
                )
        console.print(table)


def _list_recipes(pattern: Optional[str]) -> None:
    """The recipes under ./recipes (or the shipped ones beside the installed package)."""
    import fnmatch
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from ssl_bench.reference import recipe_rows

    root = Path("recipes")
    if not root.is_dir():
        root = Path(__file__).resolve().parents[1] / "recipes"
    if not root.is_dir():
        raise SSLBenchError("no recipes folder here (./recipes) or beside the installed package")
    rows = [r for r in recipe_rows(root) if not pattern or fnmatch.fnmatch(r[0], f"*{pattern}*")]
    table = Table(title=f"recipes in {root} ({len(rows)})", title_justify="left")
    table.add_column("recipe", style="bold cyan", no_wrap=True)
    table.add_column("method")
    table.add_column("dataset")
    table.add_column("what it is", style="dim")
    for r in rows:
        table.add_row(*r)
    Console(width=max(Console().width, 160)).print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
