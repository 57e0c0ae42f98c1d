"""Data sources read as Arrow record batches, with a row-by-row reference path and row lookup for errors.

A :class:`Source` is one data file (or saved / hub dataset) read three ways:

* :meth:`Source.batches` - the fast path: ``pyarrow`` / ``datasets`` readers stream the needed columns as
  ``RecordBatch`` objects (C++ parsing, no Python object per value). It raises :class:`FastPathUnavailable`
  when the file cannot be read that way (a column whose type changes between rows, invalid UTF-8, a
  malformed line...).
* :meth:`Source.rows` - the reference path: ``(position, dict)`` per row, decoded and parsed in Python
  exactly as :mod:`embedtrain.io.readers` does (same error messages), but streamed.
* :meth:`Source.locate` - row ``i`` and its position (1-based line for jsonl/json/csv, row index otherwise),
  found by a scan only when an error must be reported, so the fast path needs no line-number column.

Row order and numbering agree between the paths: blank lines are skipped in jsonl (and in csv, where a
record may span several lines), and rows are counted from 0 in the order the file holds them.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedtrain.errors import DataError
from embedtrain.io.readers import _decode_line, _read_json, infer_file_type, parse_json_object
from embedtrain.io.text import read_text_utf8

#: Rows per record batch on the reference path and for parquet / saved datasets.
BATCH_ROWS = 8192
#: Bytes per block of the pyarrow json / csv readers. Small blocks stay in the CPU caches: 512 KiB read ~2.5x more
#: rows/s than 8 MiB in examples/data_scale_benchmark.py. A row longer than a block is read by the reference path.
BLOCK_BYTES = 512 << 10


class FastPathUnavailable(Exception):
    """The Arrow readers cannot read this file as asked; the reference path must be used."""


def fingerprint_path(path: Path) -> dict[str, Any]:
    """What identifies a file's content cheaply: size, modification time and a hash of its first and last MiB.

    A folder (a saved dataset) is fingerprinted by its files' names, sizes and times.
    """
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return {"folder": str(path.resolve()),
                "files": [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        if stat.st_size > 2 << 20:
            fh.seek(-(1 << 20), io.SEEK_END)
            digest.update(fh.read(1 << 20))
    return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "head_tail_sha256": digest.hexdigest()}


class Source:
    """One data source; see the module docstring."""

    #: ``"line"`` (1-based line of a text file) or ``"row"`` (0-based row index).
    unit = "line"
    #: True when every value is text (csv): scores are parsed from text.
    values_are_text = False

    def __init__(self, path: Path | str, split: str | None = None) -> None:
        self.path = Path(path) if not isinstance(path, Path) else path
        self.split = split

    # -- description -------------------------------------------------------------------------------
    def first(self) -> tuple[int, dict[str, Any]] | None:
        """Position and content of the first row (its keys are the columns roles are looked up in); None when
        the source has no rows."""
        for pos, row in self.rows():
            return pos, row
        return None

    def fingerprint(self) -> dict[str, Any]:
        return fingerprint_path(self.path)

    # -- reading -----------------------------------------------------------------------------------
    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """Record batches holding the columns of ``schema`` (cast to its types where the reader can)."""
        raise FastPathUnavailable(f"no Arrow reader for {type(self).__name__}")

    def rows(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(position, row)`` for every row from row ``start`` on, parsed in Python; malformed content is a
        located error."""
        for i, item in enumerate(self._rows()):
            if i >= start:
                yield item

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        raise NotImplementedError

    def locate(self, index: int) -> tuple[int, dict[str, Any]]:
        """Position and content of row ``index`` (0-based, in reading order)."""
        for i, (pos, row) in enumerate(self.rows()):
            if i == index:
                return pos, row
        raise IndexError(index)


class JsonlSource(Source):
    """Newline-delimited JSON objects (blank lines skipped, a BOM on the first line accepted)."""

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        import pyarrow.json as pj

        try:
            reader = pj.open_json(
                str(self.path), read_options=pj.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
                parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
            yield from reader
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FastPathUnavailable(str(exc)) from None

    def rows(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        offset = 0
        count = 0
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if count < start:  # rows already read by the fast path: only counted
                    offset += len(raw)
                    if raw.strip() and (lineno > 1 or raw.strip() != b"\xef\xbb\xbf"):
                        count += 1
                    continue
                line = _decode_line(raw, self.path, lineno, offset)
                offset += len(raw)
                if not line.strip():
                    continue
                count += 1
                yield lineno, parse_json_object(line, self.path, lineno)

    def locate(self, index: int) -> tuple[int, dict[str, Any]]:
        count = -1
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if raw.strip() and (lineno > 1 or raw.strip() != b"\xef\xbb\xbf"):
                    count += 1
                    if count == index:
                        line = _decode_line(raw, self.path, lineno, 0)
                        return lineno, parse_json_object(line, self.path, lineno)
        raise IndexError(index)




class JsonSource(Source):
    """A JSON list of objects (read whole: use jsonl or parquet for data that does not fit in memory)."""

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        records = _read_json(self.path, None)
        yield from zip(records.positions, records.rows)


class CsvSource(Source):
    """A CSV file with a header line; every value is text (scores are parsed as numbers later)."""

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        import pyarrow.csv as pcsv

        names = [f.name for f in schema]
        try:
            reader = pcsv.open_csv(
                str(self.path), read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
                convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                    include_columns=names, strings_can_be_null=False,
                                                    quoted_strings_can_be_null=False))
            yield from reader
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
            raise FastPathUnavailable(str(exc)) from None

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        reader = csv.DictReader(io.StringIO(read_text_utf8(self.path, error=DataError), newline=""))
        for row in reader:
            yield reader.line_num, dict(row)

    values_are_text = True

    def first(self) -> tuple[int, dict[str, Any]] | None:
        with self.path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                return reader.line_num, dict(row)
        return None

    def locate(self, index: int) -> tuple[int, dict[str, Any]]:
        with self.path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            for i, row in enumerate(reader):
                if i == index:
                    return reader.line_num, dict(row)
        raise IndexError(index)


class ParquetSource(Source):
    """A parquet file, read one row group at a time."""

    unit = "row"

    def _file(self):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(f"cannot read parquet: {exc}", file=self.path) from None

    def first(self) -> tuple[int, dict[str, Any]] | None:
        pf = self._file()
        if pf.metadata.num_rows == 0:
            return None
        batch = next(pf.iter_batches(batch_size=1))
        return 0, batch.to_pylist()[0]

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        pf = self._file()
        names = [f.name for f in schema]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS * 8, columns=names):
            yield batch

    def _rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        i = 0
        for batch in self._file().iter_batches(batch_size=BATCH_ROWS):
            for row in batch.to_pylist():
                yield i, row
                i += 1

    def locate(self, index: int) -> tuple[int, dict[str, Any]]:
        pf = self._file()
        start = 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if index < start + n:
                return index, pf.read_row_group(g).slice(index - start, 1).to_pylist()[0]
            start += n
        raise IndexError(index)


class DiskSource(Source):
    """A dataset saved with ``datasets.save_to_disk`` (memory-mapped; a DatasetDict needs ``split``)."""

    unit = "row"

    def dataset(self):
        import datasets

        try:
            ds = datasets.load_from_disk(str(self.path))
        except Exception as exc:
            raise DataError(f"not a dataset saved with datasets.save_to_disk: {exc}", file=self.path) from None
        if isinstance(ds, datasets.DatasetDict):
            split = self.split or "train"
            if split not in ds:
                raise DataError(f"split '{split}' not found; available: {sorted(ds)}", file=self.path, field="split")
            ds = ds[split]
        return ds

    def first(self) -> tuple[int, dict[str, Any]] | None:
        ds = self.dataset()
        return (0, ds[0]) if len(ds) else None

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        table = self.dataset().data.table.select([f.name for f in schema])
        yield from table.to_batches(max_chunksize=BATCH_ROWS * 8)

    def rows(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        ds = self.dataset()
        for begin in range(start, len(ds), BATCH_ROWS):
            for j, row in enumerate(ds.data.table.slice(begin, BATCH_ROWS).to_pylist()):
                yield begin + j, row

    def locate(self, index: int) -> tuple[int, dict[str, Any]]:
        return index, self.dataset()[index]


class HubSource(DiskSource):
    """A dataset on the Hugging Face hub by name (``datasets`` downloads and caches it as Arrow)."""

    def dataset(self):
        import datasets

        split = self.split or "train"
        try:
            return datasets.load_dataset(str(self.path), split=split)
        except Exception as exc:
            raise DataError(f"cannot load hub dataset '{self.path}' (split {split}): {exc}", file=str(self.path),
                            field="path") from None

    def fingerprint(self) -> dict[str, Any]:
        return {"hub": str(self.path), "split": self.split, "fingerprint": self.dataset()._fingerprint}


_SOURCES: dict[str, type[Source]] = {"jsonl": JsonlSource, "json": JsonSource, "csv": CsvSource,
                                     "parquet": ParquetSource, "hf_disk": DiskSource, "hub": HubSource}


def open_source(path: str | Path, file_type: str | None = None, *, split: str | None = None) -> Source:
    """The :class:`Source` for ``path`` (type from ``file_type`` or the suffix); missing files are errors."""
    if file_type == "hub":
        return HubSource(str(path), split)
    path = Path(path)
    if not path.exists():
        raise DataError("data file not found", file=path)
    file_type = file_type or infer_file_type(path)
    if file_type not in _SOURCES:
        raise DataError(f"unsupported file_type '{file_type}'", file=path, field="file_type")
    return _SOURCES[file_type](path, split)
