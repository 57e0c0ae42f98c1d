"""Where mined rows go as they are produced: a jsonl or parquet file (streamed), or a list (the in-memory API).

Under a multi-process launch every rank writes its share of the rows (a contiguous range of input pairs) to
``<output>.part-<rank>``; :func:`merge_parts` then concatenates the parts in rank order into the output, so the
file lists the pairs in input order whatever the number of processes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedtrain.errors import DataError

OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_SCORED = pa.list_(pa.struct([("text", pa.string()), ("score", pa.float64())]))


def output_kind(path: str | Path) -> str:
    """``jsonl`` or ``parquet`` from the output file's suffix (DataError otherwise)."""
    kind = OUTPUT_SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise DataError(f"output must end in one of {sorted(OUTPUT_SUFFIXES)}", file=path)
    return kind


def row_schema(with_candidates: bool) -> pa.Schema:
    """The parquet schema of mined rows (fixed, so every written chunk agrees)."""
    fields = [("anchor", pa.string()), ("positive", pa.string()), ("positive_score", pa.float64()),
              ("negatives", _SCORED)]
    if with_candidates:
        fields.append(("candidates", _SCORED))
    return pa.schema(fields)


class MemorySink:
    """Keeps the rows (for :func:`embedtrain.mining.offline.mine`, which returns them)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def close(self) -> None:
        pass


class DiscardSink:
    """Drops the rows (rows dropped for too few negatives when nobody asked to keep them)."""

    rows: list[dict[str, Any]] = []

    def write(self, rows: list[dict[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass


def dropped_path(output: str | Path) -> Path:
    """Where ``keep_dropped`` writes the rows dropped for too few negatives: ``<output>.dropped.jsonl``."""
    return Path(f"{output}.dropped.jsonl")


class FileSink:
    """Appends rows to a jsonl or parquet file as they come."""

    def __init__(self, path: str | Path, kind: str, with_candidates: bool) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.schema = row_schema(with_candidates)
        self._fh = self.path.open("w", encoding="utf-8") if kind == "jsonl" else None
        self._writer = None
        if kind == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(str(self.path), self.schema)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._fh is not None:
            self._fh.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        else:
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._writer is not None:
            self._writer.close()


def part_path(output: str | Path, rank: int) -> Path:
    return Path(f"{output}.part-{rank}")


def merge_parts(output: str | Path, world_size: int, kind: str, with_candidates: bool) -> None:
    """Concatenate the ranks' part files into ``output`` (in rank order) and delete them."""
    output = Path(output)
    parts = [part_path(output, r) for r in range(world_size)]
    if kind == "jsonl":
        with output.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 24)
    else:
        import pyarrow.parquet as pq

        with pq.ParquetWriter(str(output), row_schema(with_candidates)) as writer:
            for part in parts:
                pf = pq.ParquetFile(part)
                for g in range(pf.num_row_groups):
                    writer.write_table(pf.read_row_group(g))
    for part in parts:
        part.unlink()
