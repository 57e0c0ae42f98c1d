"""Read tabular records from jsonl / json / parquet / csv files or a saved ``datasets`` folder.

Every reader returns :class:`Records`: the rows plus, for each row, where it came from (a line of a
text file, or a row index), so that later validation errors can name the exact line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedtrain.errors import DataError
from embedtrain.io.text import read_text_utf8

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Records:
    """Rows read from one source, with the position of each row for error messages."""

    path: Path
    rows: list[dict[str, Any]]
    positions: list[int]
    unit: str = "line"  # "line" (1-based line in a text file) or "row" (0-based row index)

    def line(self, i: int) -> int | None:
        """1-based line of row ``i`` for text files; None for binary formats."""
        return self.positions[i] if self.unit == "line" else None

    def where(self, i: int) -> str:
        """Human-readable position of row ``i``: ``file:line`` or ``file row N``."""
        if self.unit == "line":
            return f"{self.path}:{self.positions[i]}"
        return f"{self.path} row {self.positions[i]}"

    def error(self, i: int, field: str, message: str) -> DataError:
        """A :class:`DataError` pointing at row ``i`` and ``field``."""
        if self.unit == "line":
            return DataError(message, file=self.path, line=self.positions[i], field=field)
        return DataError(f"row {self.positions[i]}: {message}", file=self.path, field=field)

    def __len__(self) -> int:
        return len(self.rows)

    def columns(self) -> list[str]:
        """Column names seen in the first row."""
        return list(self.rows[0]) if self.rows else []


def infer_file_type(path: Path) -> str:
    """File type from the suffix; a folder is a ``datasets.save_to_disk`` dataset."""
    if path.is_dir():
        return "hf_disk"
    file_type = _SUFFIXES.get(path.suffix.lower())
    if file_type is None:
        raise DataError(
            f"cannot tell the file type from suffix '{path.suffix}'; use one of "
            f"{sorted(_SUFFIXES)} or set file_type", file=path)
    return file_type


def parse_json_object(line: str, path: Path, lineno: int) -> dict[str, Any]:
    """One JSON Lines line as an object; a malformed line or a non-object is a located DataError."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=path, line=lineno) from None
    if not isinstance(row, dict):
        raise DataError(f"each line must be a JSON object, got {type(row).__name__}", file=path, line=lineno)
    return row


def _decode_line(raw: bytes, path: Path, lineno: int, offset: int) -> str:
    """One line of a text file as UTF-8 (a BOM on the first line is dropped); else a located error."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: byte {offset + exc.start} (0x{raw[exc.start]:02x}) cannot be decoded; "
                        "save the file as UTF-8", file=path, line=lineno) from None


def _read_jsonl(path: Path, limit: int | None) -> Records:
    rows, positions = [], []
    offset = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = _decode_line(raw, path, lineno, offset)
            offset += len(raw)
            if not line.strip():
                continue
            rows.append(parse_json_object(line, path, lineno))
            positions.append(lineno)
            if limit is not None and len(rows) >= limit:
                break
    return Records(path, rows, positions)


def _read_json(path: Path, limit: int | None) -> Records:
    """A JSON list of objects; each record remembers the line it starts on."""
    text = read_text_utf8(path, error=DataError)
    decoder = json.JSONDecoder()
    newline_offsets: list[int] = [i for i, ch in enumerate(text) if ch == "\n"]

    def line_at(offset: int) -> int:
        import bisect

        return bisect.bisect_left(newline_offsets, offset) + 1

    def fail(offset: int, msg: str) -> DataError:
        return DataError(f"malformed JSON: {msg}", file=path, line=line_at(offset))

    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        # Also accept a single object with one list-valued key ({"data": [...]}) for HF-style dumps.
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON: {exc.msg}", file=path, line=exc.lineno) from None
        raise DataError(f"expected a JSON list of records, got {type(obj).__name__}", file=path, line=1)
    pos += 1
    rows, positions = [], []
    while True:
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == "]":
            break
        try:
            row, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc.pos, exc.msg) from None
        if not isinstance(row, dict):
            raise DataError(f"each record must be a JSON object, got {type(row).__name__}",
                            file=path, line=line_at(pos))
        rows.append(row)
        positions.append(line_at(pos))
        if limit is not None and len(rows) >= limit:
            break
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            break
        else:
            raise fail(pos, "expected ',' or ']' after a record")
    return Records(path, rows, positions)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_csv(path: Path, limit: int | None) -> Records:
    rows, positions = [], []
    reader = csv.DictReader(io.StringIO(read_text_utf8(path, error=DataError), newline=""))
    for row in reader:
        rows.append(dict(row))
        positions.append(reader.line_num)
        if limit is not None and len(rows) >= limit:
            break
    return Records(path, rows, positions)


def _read_parquet(path: Path, limit: int | None) -> Records:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read parquet: {exc}", file=path) from None
    if limit is not None:
        table = table.slice(0, limit)
    rows = table.to_pylist()
    return Records(path, rows, list(range(len(rows))), unit="row")


def _read_hf_disk(path: Path, split: str | None, limit: int | None) -> Records:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"not a dataset saved with datasets.save_to_disk: {exc}", file=path) from None
    if isinstance(ds, datasets.DatasetDict):
        split = split or "train"
        if split not in ds:
            raise DataError(f"split '{split}' not found; available: {sorted(ds)}", file=path, field="split")
        ds = ds[split]
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    rows = ds.to_list()
    return Records(path, rows, list(range(len(rows))), unit="row")


def _read_hub(name: str, split: str | None, limit: int | None) -> Records:
    """A dataset from the Hugging Face hub by name (needs network access, or a warm datasets cache)."""
    import datasets

    split = split or "train"
    if limit is not None:
        split = f"{split}[:{limit}]"
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise DataError(f"cannot load hub dataset '{name}' (split {split}): {exc}", file=name, field="path") from None
    rows = ds.to_list()
    return Records(Path(name), rows, list(range(len(rows))), unit="row")


def read_records(path: str | Path, file_type: str | None = None, *, split: str | None = None,
                 limit: int | None = None) -> Records:
    """Read all rows (or the first ``limit``) of a data source.

    ``file_type="hub"`` reads a dataset from the Hugging Face hub by name (online users only).
    Raises :class:`DataError` with file and line for missing files and malformed content.
    """
    if file_type == "hub":
        return _read_hub(str(path), split, limit)
    path = Path(path)
    if not path.exists():
        raise DataError("data file not found", file=path)
    file_type = file_type or infer_file_type(path)
    if file_type == "jsonl":
        return _read_jsonl(path, limit)
    if file_type == "json":
        return _read_json(path, limit)
    if file_type == "csv":
        return _read_csv(path, limit)
    if file_type == "parquet":
        return _read_parquet(path, limit)
    if file_type == "hf_disk":
        return _read_hf_disk(path, split, limit)
    raise DataError(f"unsupported file_type '{file_type}'", file=path, field="file_type")
