"""``embedtrain mine``: offline hard-negative mining into a ``hard_negatives`` file."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from embedtrain.cli.app import app, console, out
from embedtrain.errors import RecipeError


@app.command()
def mine(
    model: str = typer.Option(..., "--model", help="Model folder or packaged short name (all-MiniLM-L6-v2)."),
    input: Path = typer.Option(..., "--input", help="(anchor, positive) pairs: jsonl / json / parquet / csv."),
    output: Path = typer.Option(..., "--output", help="Mined file to write (.jsonl or .parquet)."),
    corpus: Path = typer.Option(None, "--corpus", help="Extra documents (.txt lines or a table with --corpus-column)."),
    corpus_column: str = typer.Option("text", "--corpus-column", help="Text column of the corpus file."),
    column: list[str] = typer.Option(None, "--column", help="Map a role to a column: --column anchor=question"),
    num_negatives: int = typer.Option(5, "--num-negatives", help="Negatives per pair."),
    candidates: int = typer.Option(0, "--candidates", help="Extra ranked candidates to keep (dynamic mining)."),
    range_min: int = typer.Option(0, "--range-min", help="Skip this many top-ranked non-positive documents."),
    range_max: int = typer.Option(100, "--range-max", help="Consider documents ranked below this."),
    absolute_margin: float = typer.Option(None, "--absolute-margin", help="Drop if score > positive - margin."),
    relative_margin: float = typer.Option(None, "--relative-margin",
                                          help="Drop if score > positive - |positive| * margin (e.g. 0.05)."),
    max_score: float = typer.Option(None, "--max-score", help="Drop candidates scoring above this."),
    min_score: float = typer.Option(None, "--min-score", help="Drop candidates scoring below this."),
    faiss: bool = typer.Option(False, "--faiss", help="Search with a faiss flat index instead of torch."),
    cross_encoder: str = typer.Option(None, "--cross-encoder", help="CrossEncoder folder to rescore candidates."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoding batch size."),
    query_chunk_size: int = typer.Option(1024, "--query-chunk-size", help="Queries per search block."),
    corpus_chunk_size: int = typer.Option(65536, "--corpus-chunk-size", help="Documents per search block."),
    query_prompt: str = typer.Option(None, "--query-prompt", help="Text prepended to queries."),
    passage_prompt: str = typer.Option(None, "--passage-prompt", help="Text prepended to documents."),
    max_samples: int = typer.Option(None, "--max-samples", help="Only mine the first N pairs."),
    keep_incomplete: bool = typer.Option(False, "--keep-incomplete", help="Keep rows with too few negatives."),
    keep_query_text: bool = typer.Option(False, "--keep-query-text",
                                         help="Allow the query's own text as a negative."),
    engine: str = typer.Option("embedtrain", "--engine", help="embedtrain or sentence-transformers."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ..."),
) -> None:
    """Mine hard negatives for (anchor, positive) pairs and write a hard_negatives file with scores."""
    from embedtrain.mining.config import OfflineMiningConfig, parse_column_map
    from embedtrain.mining.offline import run_mining

    columns = parse_column_map(column)
    try:
        config = OfflineMiningConfig(
            model=model, input=str(input), output=str(output), corpus=str(corpus) if corpus else None,
            corpus_column=corpus_column, columns=columns, num_negatives=num_negatives, candidates=candidates,
            range_min=range_min, range_max=range_max, absolute_margin=absolute_margin,
            relative_margin=relative_margin, max_score=max_score, min_score=min_score, use_faiss=faiss,
            cross_encoder=cross_encoder, batch_size=batch_size, query_chunk_size=query_chunk_size,
            corpus_chunk_size=corpus_chunk_size, query_prompt=query_prompt, passage_prompt=passage_prompt,
            max_samples=max_samples, keep_incomplete=keep_incomplete, exclude_query_text=not keep_query_text,
            engine=engine, device=device)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RecipeError(err["msg"].removeprefix("Value error, "),
                          field=f"--{where.replace('_', '-')}" if where else None) from None

    columns_ = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn())
    with Progress(*columns_, console=console, transient=False) as progress:
        result = run_mining(config, progress=progress)
    stats = result.stats
    table = Table(title=f"mined {stats.written_rows} rows -> {output}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in (
        ("pairs / distinct queries", f"{stats.rows} / {stats.queries}"),
        ("corpus documents", f"{stats.corpus_size}"),
        ("corpus docs encoded / s", f"{stats.corpus_docs_per_s:.0f}"),
        ("search queries / s", f"{stats.search_queries_per_s:.0f}"),
        ("queries / s (end to end)", f"{stats.queries_per_s:.1f}"),
        ("rows with too few negatives", f"{stats.incomplete_rows}"),
    ):
        table.add_row(name, value)
    for name, value in stats.counts.as_dict().items():
        if value and name != "considered":
            table.add_row(f"skipped: {name}", str(value))
    out.print(table)
