"""``embedtrain export CHECKPOINT OUT --layers L --dim D``: save a smaller standalone model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from embedtrain.cli.app import app, out


@app.command()
def export(
    checkpoint: str = typer.Argument(..., help="Trained model folder (or packaged model name)."),
    output: Path = typer.Argument(..., help="Folder to write the smaller model to."),
    layers: int | None = typer.Option(None, "--layers", help="Keep the first L transformer layers (default: all)."),
    dim: int | None = typer.Option(None, "--dim", "--dims", help="Keep the first D embedding dims (default: all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it already holds files."),
    sentences: Path | None = typer.Option(None, "--sentences",
                                          help="Records file whose text is used to measure encode speed "
                                               "(default: 512 sentences shipped with embedtrain)."),
    num_sentences: int = typer.Option(512, "--num-sentences", min=1, help="Sentences to time."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Encode batch size for the timing."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure encode speed of full vs exported."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="Allow the model folder to run its own code."),
) -> None:
    """Cut the first L layers / D dims out of CHECKPOINT into OUTPUT, an ordinary sentence-transformers model."""
    from embedtrain import api

    report = api.export(checkpoint, output, layers=layers, dim=dim, overwrite=overwrite, speed=speed,
                        sentences=sentences, num_sentences=num_sentences, batch_size=batch_size,
                        trust_remote_code=trust_remote_code)
    result = report.result
    table = Table(title=f"export {result.source} -> {result.output_dir}")
    for col in ("", "full", "exported"):
        table.add_column(col, justify="right")
    table.add_row("layers", str(result.full_layers), str(result.layers))
    table.add_row("dims", str(result.full_dim), str(result.dim))
    table.add_row("parameters", f"{result.params_full / 1e6:.2f}M", f"{result.params_exported / 1e6:.2f}M")
    if report.full_speed is not None and report.exported_speed is not None:
        full, small = report.full_speed.sentences_per_second, report.exported_speed.sentences_per_second
        table.add_row("encode sentences/s", f"{full:.0f}", f"{small:.0f} (x{small / full:.2f})")
    out.print(table)
    if result.warning:
        out.print(f"[bold yellow]warning:[/] {result.warning}", highlight=False)
    out.print(f"exported model: {result.output_dir}")
