"""``embedtrain push CHECKPOINT --repo-id ORG/NAME``: upload with a generated model card."""

from __future__ import annotations

from pathlib import Path

import typer

from embedtrain.cli.app import app, out


@app.command()
def push(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder (e.g. runs/x/final)."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub repository, e.g. my-org/my-model."),
    token: str | None = typer.Option(None, "--token", help="Hub token (default: $HF_TOKEN, then the cached login).",
                                     show_default=False),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    dry_run: Path | None = typer.Option(None, "--dry-run", help="Write the exact upload folder here; upload nothing."),
    results: list[Path] = typer.Option(None, "--results", help="Extra folder with MTEB result files (repeatable)."),
    commit_message: str | None = typer.Option(None, "--commit-message", help="Commit message on the Hub."),
) -> None:
    """Upload CHECKPOINT to the Hub with a model card (recipe, data, loss, MTEB results as model-index)."""
    from embedtrain import api

    result = api.push(checkpoint, repo_id, token=token, private=private, dry_run=dry_run,
                      commit_message=commit_message, results=list(results or []))
    if result.uploaded:
        out.print(f"uploaded {len(result.files)} files to {result.repo_id}" + (f" ({result.url})" if result.url else ""))
    else:
        out.print(f"dry run: {len(result.files)} files written to {result.folder} (nothing uploaded)")
