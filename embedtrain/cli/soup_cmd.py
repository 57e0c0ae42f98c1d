"""``embedtrain soup CKPT... OUT``: average checkpoints (uniform / weighted / greedy); ``embedtrain merge-start``:
merge a fine-tuned checkpoint with its start model (WiSE-FT)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from embedtrain.cli.app import app, out


def _weights(text: str | None, param_hint: str = "--weights") -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers such as 0.5,0.3,0.2, got '{text}'",
                                 param_hint=param_hint) from None


@app.command()
def soup(
    paths: list[Path] = typer.Argument(..., metavar="CKPT... OUT",
                                       help="Checkpoints to average, then the output folder (last)."),
    method: str = typer.Option("uniform", "--method", help="uniform | weighted | greedy."),
    weights: str | None = typer.Option(None, "--weights", help="Weights for --method weighted: 0.5,0.3,0.2"),
    held_out: Path | None = typer.Option(None, "--held-out",
                                         help="Scored-pairs file (sentence1, sentence2, score) scored with "
                                              "cosine Spearman: guides --method greedy, reported otherwise."),
    mteb_task: str | None = typer.Option(None, "--mteb-task", help="Offline MTEB task as the held-out metric."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Local data folder for --mteb-task."),
    task_config: list[Path] = typer.Option(None, "--task-config",
                                           help="YAML defining local tasks for --mteb-task (repeatable)."),
    task: str | None = typer.Option(None, "--task", help="Task-adapter models: score under this task."),
    max_samples: int | None = typer.Option(None, "--max-samples", min=1, help="Use the first N held-out pairs."),
    eval_held_out: Path | None = typer.Option(None, "--eval-held-out",
                                              help="Scored-pairs file scored for every checkpoint and the soup "
                                                   "(report only; a split other than --held-out)."),
    eval_mteb_task: str | None = typer.Option(None, "--eval-mteb-task",
                                              help="Offline MTEB task(s), comma-separated, scored for every "
                                                   "checkpoint and the soup (report only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it already holds files."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow the checkpoint folders to run their own code."),
) -> None:
    """Average CKPT... (same architecture) into OUT, keeping the first checkpoint's configuration."""
    from embedtrain import api

    *checkpoints, output = paths
    eval_tasks = [t.strip() for t in eval_mteb_task.split(",") if t.strip()] if eval_mteb_task else []
    result = api.soup(checkpoints, output, method=method, weights=_weights(weights), held_out=held_out,
                      mteb_task=mteb_task, data_dir=data_dir, task_configs=task_config or [], task=task,
                      max_samples=max_samples, eval_held_out=eval_held_out, eval_mteb_tasks=eval_tasks,
                      overwrite=overwrite, trust_remote_code=trust_remote_code)
    metric_name = held_out.name if held_out else mteb_task
    table = Table(title=f"{result.method} soup -> {result.output}")
    for col in ("checkpoint", "weight", f"{metric_name or 'held-out'} alone (selection)", *result.report):
        table.add_column(col)
    weights_of = dict(zip(result.members, result.weights))

    def cell(score: float | None) -> str:
        return "-" if score is None else f"{score:.2f}"

    for ckpt in checkpoints:
        name = str(ckpt)
        table.add_row(name, f"{weights_of.get(name, 0.0):.3f}", cell(result.individual_scores.get(name)),
                      *(cell(scores.get(name)) for scores in result.report.values()))
    table.add_row("soup", "", cell(result.soup_score), *(cell(scores.get("soup")) for scores in result.report.values()))
    out.print(table)
    if result.soup_score is not None:
        out.print(f"soup: {result.soup_score:.2f} on {metric_name} (the selection metric)")
    for name, scores in result.report.items():
        best = max(v for k, v in scores.items() if k != "soup")
        out.print(f"soup: {scores['soup']:.2f} on {name} (held out from selection; best single checkpoint {best:.2f})")


@app.command("merge-start")
def merge_start(
    trained: Path = typer.Argument(..., help="The fine-tuned checkpoint (alpha = 1)."),
    output: Path = typer.Argument(..., help="Folder for the merged model."),
    start: str = typer.Option(..., "--start", help="The model it was fine-tuned from (folder or packaged name)."),
    alpha: str = typer.Option("auto", "--alpha", help="Weight of the trained model in (0, 1], or 'auto'."),
    dev: Path | None = typer.Option(None, "--dev", help="The target's dev split (scored pairs) for --alpha auto; "
                                                        "never a test split."),
    general_text: Path | None = typer.Option(None, "--general-text",
                                             help="Unlabeled sentences for the agreement signal (default: bundled)."),
    grid: str | None = typer.Option(None, "--grid", help="Candidate weights for auto, e.g. 0.3,0.4,0.5,0.7,1.0"),
    keep: float = typer.Option(0.9, "--keep", min=0.01, max=1.0, help="Share of the best dev gain to keep."),
    max_dev_pairs: int | None = typer.Option(None, "--max-dev-pairs", min=3, help="Use the first N dev pairs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it already holds files."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow the checkpoint folders to run their own code."),
) -> None:
    """Merge TRAINED with its start model (WiSE-FT) into OUTPUT, the weight chosen on dev data (docs/generalization.md)."""
    from embedtrain import api

    try:
        weight: float | str = alpha if alpha == "auto" else float(alpha)
    except ValueError:
        raise typer.BadParameter(f"expected a number in (0, 1] or 'auto', got '{alpha}'", param_hint="--alpha") from None
    selection = api.merge_start(trained, start, output, alpha=weight, dev=dev, general_text=general_text,
                                grid=_weights(grid, "--grid"), keep=keep, max_dev_pairs=max_dev_pairs, overwrite=overwrite,
                                trust_remote_code=trust_remote_code)
    out.print(selection.table(), highlight=False)
    out.print(f"merged at alpha {selection.alpha:g} ({selection.reason}) -> {output}", highlight=False)
