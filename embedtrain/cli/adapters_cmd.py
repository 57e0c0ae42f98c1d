"""``embedtrain export-task`` / ``embedtrain tasks``: work with task-adapter checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from embedtrain.cli.app import app, out

TRUST = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint folder to run its own code.")


@app.command("export-task")
def export_task(
    checkpoint: Path = typer.Argument(..., help="Task-adapter checkpoint folder."),
    output: Path = typer.Argument(..., help="Folder to write the plain model to."),
    task: str = typer.Option(..., "--task", help="Task (or alias) whose adapter is merged into the base."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it already holds files."),
    trust_remote_code: bool = TRUST,
) -> None:
    """Merge one task's LoRA adapter into the base: OUTPUT is an ordinary sentence-transformers model."""
    from embedtrain import api

    result = api.export_task(checkpoint, output, task=task, overwrite=overwrite, trust_remote_code=trust_remote_code)
    out.print(f"exported task '{task}' of {checkpoint} to {result}")


@app.command("tasks")
def list_tasks(checkpoint: Path = typer.Argument(..., help="Task-adapter checkpoint folder."),
               trust_remote_code: bool = TRUST) -> None:
    """List the tasks, adapters, prompts and MTEB mapping of a task-adapter checkpoint."""
    from embedtrain import api

    table = Table(title=f"tasks of {checkpoint}")
    for col in ("task", "adapter", "rank", "prompt", "aliases", "MTEB types"):
        table.add_column(col)
    for row in api.tasks(checkpoint, trust_remote_code=trust_remote_code):
        table.add_row(row.task, row.adapter or "(base)", str(row.rank) if row.rank else "-",
                      repr(row.prompt) if row.prompt else "-", ", ".join(row.aliases) or "-",
                      ", ".join(row.mteb_types) or "-")
    out.print(table)
