"""``embedtrain train`` / ``embedtrain validate`` / ``embedtrain losses``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from embedtrain.cli.app import app, out


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in output_dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over even if output_dir has checkpoints."),
    set_: list[str] = typer.Option(None, "--set", help="Override a recipe value: --set training.max_steps=10"),
) -> None:
    """Train a model from RECIPE and save an ordinary sentence-transformers checkpoint."""
    from embedtrain.cli.smae_stage import run_smae_stage

    if run_smae_stage(recipe, set_, resume=resume, overwrite=overwrite):  # `stage: smae` recipes
        return
    from embedtrain.config import load_recipe
    from embedtrain.training import train as run_train

    result = run_train(load_recipe(recipe, set_), resume=resume, overwrite=overwrite, rich_progress=True)
    if not result.is_main_process:
        return
    if result.scores_after:
        table = Table(title="STS check (cosine Spearman x 100)")
        table.add_column("evaluator")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        table.add_column("delta", justify="right")
        for name, after in result.scores_after.items():
            before = result.scores_before.get(name)
            table.add_row(name, f"{before:.2f}" if before is not None else "-", f"{after:.2f}",
                          f"{after - before:+.2f}" if before is not None else "-")
        out.print(table)
    out.print(f"final model: {result.final_dir} ({result.global_step} steps)")


@app.command()
def validate(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: list[str] = typer.Option(None, "--set", help="Override a recipe value."),
) -> None:
    """Check RECIPE and all its data files without training."""
    from embedtrain.cli.smae_stage import validate_smae_stage

    if validate_smae_stage(recipe, set_):  # `stage: smae` recipes
        return
    from embedtrain.config import load_recipe
    from embedtrain.models.resolve import recipe_model_path
    from embedtrain.training.prepare import prepare_data
    from embedtrain.training.sts_check import build_sts_evaluators

    r = load_recipe(recipe, set_)
    recipe_model_path(r)
    prepared = prepare_data(r)
    build_sts_evaluators(r)
    for p in prepared:
        out.print(f"{p.config.name}: {len(p.dataset)} rows, columns {p.dataset.column_names}, loss {p.loss.name}")
    out.print("[green]recipe OK[/]")


@app.command("losses")
def list_losses() -> None:
    """List the losses a recipe can name, with the data formats they take."""
    from embedtrain.losses import available_losses

    table = Table(title="losses")
    for col in ("name", "formats", "parameters", "description"):
        table.add_column(col)
    for name, spec in sorted(available_losses().items()):
        table.add_row(name, ", ".join(sorted(spec.formats)), ", ".join(spec.param_names()), spec.description)
    out.print(table)
