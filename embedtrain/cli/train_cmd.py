"""``embedtrain train`` / ``validate`` / ``losses``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from embedtrain.cli.app import app, out

RECIPE = typer.Argument(..., help="Recipe YAML file.")
SET = typer.Option(None, "--set", help="Override a recipe value: --set training.max_steps=10 (repeatable).")


@app.command()
def train(
    recipe: Path = RECIPE,
    resume: bool = typer.Option(False, "--resume", help="Continue from the last complete checkpoint in output_dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start a new run even if output_dir holds an old one."),
    set_: list[str] = SET,
) -> None:
    """Train a model from RECIPE and save an ordinary sentence-transformers checkpoint."""
    from embedtrain import api

    result = api.train(recipe, set_, resume=resume, overwrite=overwrite, progress=True)
    if not result.is_main_process:
        return
    if result.already_finished:
        out.print(f"already finished: {result.final_dir} ({result.global_step} steps); nothing to do")
        return
    if result.scores_after:
        table = Table(title="quick checks (main metric x 100: cosine Spearman, nDCG@10, accuracy)")
        for col, justify in (("evaluator", "left"), ("before", "right"), ("after", "right"), ("delta", "right")):
            table.add_column(col, justify=justify)
        for name, after in result.scores_after.items():
            before = result.scores_before.get(name)
            table.add_row(name, f"{before:.2f}" if before is not None else "-", f"{after:.2f}",
                          f"{after - before:+.2f}" if before is not None else "-")
        out.print(table)
    pair_losses = result.details.get("pair_losses")
    if pair_losses:
        losses = ", ".join(f"({layer},{dim}) {value:.3f}" for (layer, dim), value in pair_losses.items())
        out.print(f"SMAE mean MLM loss per (layers, dims): {losses}")
    merge = result.details.get("merge_with_start")
    if merge is not None:
        table = Table(title=f"merge_with_start: alpha {merge.alpha:g} ({merge.mode}; dev = cosine Spearman, agreement "
                            "= with the start model on general text)")
        for col in ("alpha", "dev", "agreement", ""):
            table.add_column(col, justify="right")
        for row in merge.rows():
            table.add_row(*row)
        out.print(table)
        out.print(merge.reason, highlight=False)
    report = result.details.get("generalization")
    if report is not None and report.changes:
        table = Table(title="generalization: every available local task, before -> after")
        for col, justify in (("task", "left"), ("trained on", "left"), ("before", "right"), ("after", "right"),
                             ("delta", "right")):
            table.add_column(col, justify=justify)
        for change in [*report.trained, *report.not_trained]:
            style = "red" if not change.trained and change.delta < -report.threshold else None
            table.add_row(change.task, "yes" if change.trained else "no", f"{change.before:.2f}",
                          f"{change.after:.2f}", f"{change.delta:+.2f}", style=style)
        for trained in (True, False):
            mean = report.mean_delta(trained)
            if mean is not None:
                table.add_row(f"mean, {'trained on' if trained else 'not trained on'}", "", "", "", f"{mean:+.2f}",
                              style="bold")
        out.print(table)
        for warning in report.warnings:
            out.print(f"[bold red]warning:[/] {warning}", highlight=False)
    out.print(f"final model: {result.final_dir} ({result.global_step} steps)")


@app.command()
def validate(recipe: Path = RECIPE, set_: list[str] = SET) -> None:
    """Check RECIPE and everything it names (every data row, losses, models, training arguments) without training."""
    from embedtrain import api

    report = api.validate(recipe, set_)
    for line in report.lines:
        out.print(line, highlight=False)
    out.print("[green]recipe OK[/]")


@app.command("losses")
def list_losses() -> None:
    """List the losses a recipe can name, with the data formats they take."""
    from embedtrain import api

    table = Table(title="losses")
    for col in ("name", "formats", "parameters", "description"):
        table.add_column(col)
    for name, spec in sorted(api.losses().items()):
        # escaped: rich would read "[positive, negatives]" in a description as markup and drop it
        table.add_row(name, ", ".join(sorted(spec.formats)), ", ".join(spec.param_names()), escape(spec.description))
    out.print(table)
