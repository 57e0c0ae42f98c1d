"""``embedtrain export-task`` / ``embedtrain tasks``: work with task-adapter checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from embedtrain.cli.app import app, out


@app.command("export-task")
def export_task(
    checkpoint: Path = typer.Argument(..., help="Task-adapter checkpoint folder."),
    output: Path = typer.Argument(..., help="Folder to write the plain model to."),
    task: str = typer.Option(..., "--task", help="Task (or alias) whose adapter is merged into the base."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it already holds files."),
) -> None:
    """Merge one task's LoRA adapter into the base: OUTPUT is an ordinary sentence-transformers model."""
    from embedtrain.adapters.export import export_task as run_export

    result = run_export(checkpoint, task, output, overwrite=overwrite)
    out.print(f"exported task '{task}' of {checkpoint} to {result}")


@app.command("tasks")
def list_tasks(checkpoint: Path = typer.Argument(..., help="Task-adapter checkpoint folder.")) -> None:
    """List the tasks, adapters, prompts and MTEB mapping of a task-adapter checkpoint."""
    from embedtrain.adapters.checkpoint import require_task_module
    from embedtrain.models.resolve import load_model

    module = require_task_module(load_model(checkpoint, device="cpu"), checkpoint)
    table = Table(title=f"tasks of {checkpoint}")
    for col in ("task", "adapter", "rank", "prompt", "aliases", "MTEB types"):
        table.add_column(col)
    for name, route in module.routes.items():
        rank = str(module.model.peft_config[route.adapter].r) if route.adapter else "-"
        aliases = ", ".join(a for a, t in module.aliases.items() if t == name)
        kinds = ", ".join(k for k, t in module.mteb_map.items() if t == name)
        table.add_row(name, route.adapter or "(base)", rank, repr(route.prompt) if route.prompt else "-",
                      aliases or "-", kinds or "-")
    out.print(table)
