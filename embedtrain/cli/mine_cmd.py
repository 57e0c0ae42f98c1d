"""``embedtrain mine``: offline hard-negative mining into a ``hard_negatives`` file.

The options are generated from :class:`~embedtrain.schema.mining.OfflineMiningConfig` (one ``--flag`` per
field), so the command, ``data_prep/mine_hard_negatives.py`` and the config always agree. Under
``accelerate launch -m embedtrain mine ...`` the work is split across the processes; only the first prints.
"""

from __future__ import annotations

import os

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from embedtrain.cli.app import app, console, out
from embedtrain.cli.options import options_command
from embedtrain.schema.mining import OfflineMiningConfig, parse_column_map


def _run(config: OfflineMiningConfig) -> None:
    from embedtrain import api

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    if os.environ.get("RANK", "0") != "0":  # accelerate launch: the other processes work silently
        api.mine(config)
        return
    with Progress(*columns, console=console, transient=False) as progress:
        result = api.mine(config, progress=progress)
    stats = result.stats
    table = Table(title=f"mined {stats.written_rows} rows -> {config.output}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in (
        ("pairs / distinct queries", f"{stats.rows} / {stats.queries}"),
        ("corpus documents", f"{stats.corpus_size}"),
        ("corpus docs encoded / s", f"{stats.corpus_docs_per_s:.0f}"),
        ("search queries / s", f"{stats.search_queries_per_s:.0f}"),
        ("queries / s (end to end)", f"{stats.queries_per_s:.1f}"),
        ("rows with too few negatives", f"{stats.incomplete_rows}"
                                        + (f" ({stats.dropped_rows} dropped)" if stats.dropped_rows else "")),
        *((f"  too few because of: {reason}", str(n)) for reason, n in sorted(stats.incomplete_reasons.items())),
        *((("dropped rows written to", stats.dropped_output),) if stats.dropped_output else ()),
        ("processes / search", f"{stats.processes} / {stats.index}"),
        *((("recall@%d vs exact" % stats.recall_k, f"{stats.recall_at_k:.4f}"),) if stats.recall_at_k is not None
          else ()),
        ("embeddings reused from an earlier run", "yes" if stats.embeddings_reused else "no"),
    ):
        table.add_row(name, value)
    for name, value in stats.counts.as_dict().items():
        if value and name != "considered":
            table.add_row(f"skipped: {name}", str(value))
    out.print(table)


mine = options_command(
    OfflineMiningConfig, _run,
    bool_flags={"exclude_query_text": "--exclude-query-text/--keep-query-text"},
    list_flags={"columns": ("--column", parse_column_map)},
    doc="Mine hard negatives for (anchor, positive) pairs and write a hard_negatives file with scores.")
app.command("mine")(mine)
