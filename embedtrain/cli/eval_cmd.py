"""``embedtrain eval``: offline MTEB evaluation of a checkpoint, truncation grids, and comparisons."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.table import Table

from embedtrain.cli.app import app, int_list, out


def _quiet_mteb() -> None:
    """mteb logs every step at INFO; keep that for -v only."""
    if logging.getLogger().level > logging.DEBUG:
        for name in ("mteb", "sentence_transformers", "datasets"):
            logging.getLogger(name).setLevel(logging.WARNING)


@app.command("eval")
def eval_command(
    checkpoints: list[str] = typer.Argument(None, metavar="CHECKPOINT...",
                                            help="Model folder or packaged model name (all-MiniLM-L6-v2); "
                                                 "with --compare, two or more checkpoints or eval folders."),
    tasks: list[str] = typer.Option(None, "--tasks", "-t",
                                    help="Comma-separated task names (default: STSBenchmark,SICK-R,STS12,STS13,STS14)."),
    data_dir: Path = typer.Option(None, "--data-dir",
                                  help="Folder with the bundled tasks' files (default: $EMBEDTRAIN_DATA_DIR)."),
    task_config: list[Path] = typer.Option(None, "--task-config", help="YAML file defining local tasks (repeatable)."),
    dims: str = typer.Option(None, "--dims", help="Also evaluate embeddings truncated to these dims: 32,64,128."),
    layers: str = typer.Option(None, "--layers", help="Also evaluate the first N transformer layers: 2,4,6."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Encoding batch size."),
    output: Path = typer.Option(None, "--output", "-o",
                                help="Results folder (default: CHECKPOINT/eval); with --compare, a markdown file."),
    compare: bool = typer.Option(False, "--compare", help="Print a side-by-side table of evaluated checkpoints."),
    trained_on: list[str] = typer.Option(None, "--trained-on",
                                         help="With --compare: tasks the later models trained on; the others are "
                                              "flagged when they drop more than --threshold."),
    threshold: float = typer.Option(0.5, "--threshold", min=0, help="With --trained-on: the allowed drop."),
    online: bool = typer.Option(False, "--online", help="Allow built-in MTEB tasks without local data (downloads)."),
    reuse: bool = typer.Option(False, "--reuse", help="Reuse saved results of the same weights instead of re-running."),
    device: str = typer.Option(None, "--device", help="Torch device (default: automatic)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide progress bars."),
    list_tasks: bool = typer.Option(False, "--list-tasks", help="List the local tasks and exit."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow the model folder to run its own code (off by default)."),
    precision: str = typer.Option("fp32", "--precision",
                                  help="fp32 (exact, default), bf16, or auto (bf16 autocast where the hardware has "
                                       "native bf16): faster encoding, scores saved apart as <label>-bf16."),
) -> None:
    """Evaluate CHECKPOINT on MTEB tasks from local files (no downloads) and save mteb JSON + a summary."""
    if list_tasks:
        _print_tasks(task_config or [])
        return
    if not checkpoints:
        raise typer.BadParameter("give a checkpoint folder or model name", param_hint="CHECKPOINT")
    if compare:
        names = [t.strip() for value in trained_on or [] for t in value.split(",") if t.strip()]
        _compare(checkpoints, output, names if trained_on else None, threshold)
        return
    if len(checkpoints) > 1:
        raise typer.BadParameter("evaluate one checkpoint at a time (use --compare to compare several)",
                                 param_hint="CHECKPOINT")
    _quiet_mteb()
    from embedtrain import api

    report = api.evaluate(
        checkpoints[0], tasks=tasks, data_dir=data_dir, task_configs=task_config or [], output=output,
        batch_size=batch_size, dims=int_list(dims, "--dims"), layers=int_list(layers, "--layers"), online=online,
        reuse=reuse, show_progress=not no_progress, device=device, trust_remote_code=trust_remote_code,
        precision=_precision(precision))
    table = Table(title=f"{report.summary.label} (weights {report.summary.fingerprint})")
    for col, justify in (("task", "left"), ("metric", "left"), ("score", "right")):
        table.add_column(col, justify=justify)
    for score in report.summary.scores.values():
        table.add_row(score.task, score.metric, f"{score.value:.2f}")
    for metric, value in report.summary.means().items():
        n = sum(1 for s in report.summary.scores.values() if s.metric == metric)
        if n > 1:
            table.add_row(f"mean ({n} tasks)", metric, f"{value:.2f}", style="bold")
    out.print(table)
    if report.grid is not None:
        _print_grid(report.grid)
    out.print(f"results: {report.output_dir} (summary.md, scores.json, mteb JSON under results/)")


def _precision(value: str) -> str:
    if value not in ("fp32", "bf16", "auto"):
        raise typer.BadParameter(f"{value!r} is not one of fp32, bf16, auto", param_hint="--precision")
    return value


def _print_grid(grid) -> None:
    for key in grid.summary_keys:
        title = "mean score" if key not in grid.tasks else f"{key} ({grid.metrics[key]})"
        table = Table(title=f"{title} by layers (rows) x dims (columns)")
        table.add_column("layers", justify="right")
        for d in grid.dims:
            table.add_column(str(d), justify="right")
        for n in grid.layers:
            table.add_row(str(n), *(f"{grid.scores[key][(n, d)]:.2f}" for d in grid.dims))
        out.print(table)


def _compare(paths: list[str], output: Path | None, trained_on: list[str] | None, threshold: float) -> None:
    from embedtrain import api

    if len(paths) < 2:
        raise typer.BadParameter("--compare needs at least two checkpoints or evaluation folders",
                                 param_hint="CHECKPOINT")
    comparison = api.compare(paths, trained_on=trained_on, threshold=threshold)
    table = Table(title="MTEB main scores x 100 (delta vs the first)")
    table.add_column("task")
    for i, label in enumerate(comparison.labels):
        table.add_column(label if i == 0 else f"{label} (Δ)", justify="right")
    if trained_on is not None:
        table.add_column("trained on")
    for row in comparison.rows:
        extra = [] if trained_on is None else ["yes" if row.trained else "no"]
        table.add_row(row.task, *row.cells(), *extra)
    for row in comparison.means:
        table.add_row(row.task, *row.cells(), *([] if trained_on is None else [""]), style="bold")
    out.print(table)
    for warning in comparison.warnings:
        out.print(f"[bold yellow]not comparable as is:[/] {warning}", highlight=False)
    for drop in comparison.drops:
        out.print(f"[bold red]regression:[/] {drop}", highlight=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(comparison.markdown(), encoding="utf-8")
        out.print(f"markdown table written to {output}")


def _print_tasks(task_configs: list[Path]) -> None:
    from embedtrain import api

    table = Table(title="local evaluation tasks")
    for col in ("name", "MTEB task / type", "data", "defined in"):
        table.add_column(col)
    for name, defn in sorted(api.eval_tasks(task_configs).items()):
        spec = defn.spec
        data = spec.beir_dir + "/ (BEIR)" if spec.beir_dir else ", ".join(f"{k}: {v}" for k, v in spec.files.items())
        table.add_row(name, spec.mteb_task or spec.type or "", data, defn.where)
    out.print(table)
