"""``embedtrain export CHECKPOINT --layers L --dim D OUT``: save a smaller standalone model."""

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
    dim: int | None = typer.Option(None, "--dim", help="Keep the first D embedding dims (default: all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it already holds files."),
    sentences: Path | None = typer.Option(None, "--sentences",
                                   help="Records file whose text is used to measure encode speed "
                                        "(default: the bundled STSb test sentences)."),
    num_sentences: int = typer.Option(512, "--num-sentences", min=1, help="Sentences to time."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Encode batch size for the timing."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure encode speed of full vs exported."),
) -> None:
    """Cut the first L layers / D dims out of CHECKPOINT into OUTPUT, an ordinary sentence-transformers model."""
    import logging

    from sentence_transformers import SentenceTransformer

    from embedtrain.export import export_small_model, load_speed_sentences, measure_encode_speed
    from embedtrain.export.speed import default_speed_file
    from embedtrain.models.resolve import load_model, resolve_model_path

    logger = logging.getLogger("embedtrain.export")
    model = load_model(checkpoint, device="cpu")
    result = export_small_model(resolve_model_path(checkpoint), output, layers=layers, dim=dim,
                                overwrite=overwrite, model=model)
    table = Table(title=f"export {result.source} -> {result.output_dir}")
    for col in ("", "full", "exported"):
        table.add_column(col, justify="right")
    table.add_row("layers", str(result.full_layers), str(result.layers))
    table.add_row("dims", str(result.full_dim), str(result.dim))
    table.add_row("parameters", f"{result.params_full / 1e6:.2f}M", f"{result.params_exported / 1e6:.2f}M")
    source = sentences or default_speed_file()
    if speed and source is None:
        logger.warning("no sentences to time encoding with (pass --sentences FILE); skipping the speed check")
    elif speed:
        texts = load_speed_sentences(source, num_sentences)
        exported = SentenceTransformer(str(result.output_dir), device="cpu", local_files_only=True)
        full_speed = measure_encode_speed(model, texts, batch_size=batch_size)
        small_speed = measure_encode_speed(exported, texts, batch_size=batch_size)
        table.add_row("encode sentences/s", f"{full_speed.sentences_per_second:.0f}",
                      f"{small_speed.sentences_per_second:.0f} "
                      f"(x{small_speed.sentences_per_second / full_speed.sentences_per_second:.2f})")
        table.caption = f"timed on {len(texts)} sentences from {source}, batch size {batch_size}, device cpu"
    out.print(table)
    out.print(f"exported model: {result.output_dir}")
