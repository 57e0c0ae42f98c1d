"""Training data as memory-mapped Arrow datasets on disk, built once per file content and reused.

:func:`load_dataset_cached` reads a data source (:mod:`embedtrain.io.sources`), checks and converts it batch
by batch (:mod:`embedtrain.io.columnar`) and streams the result into an Arrow file in the cache; the
``datasets.Dataset`` returned is memory-mapped from that file, so no rank holds the rows in Python objects
and a second run (or another process of the same run) opens the file instead of reading the data again.

The cache key is the source's fingerprint (size, modification time and a hash of the first and last MiB of
the file; a saved dataset's file list; a hub dataset's ``datasets`` fingerprint) plus everything that shapes
the result (format, column mapping, ``num_negatives``, ``max_samples``, extra columns). Entries are written
to a temporary folder and renamed into place under a file lock, so processes that start together build an
entry once and the others wait for it. Location: ``$EMBEDTRAIN_CACHE_DIR/datasets``, else
``<datasets cache>/embedtrain``.

:func:`stream_dataset` is the ``streaming: true`` path: an ``IterableDataset`` that checks and converts the
same way while it is read, without writing anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedtrain.io.columnar import (
    NEGATIVES_LIST,
    ConvertStats,
    Plan,
    check_negatives_found,
    convert,
    make_plan,
    split_negatives,
)
from embedtrain.io.sources import Source, open_source

logger = logging.getLogger(__name__)

#: Bumped whenever the layout of a cache entry or the conversion changes.
CACHE_VERSION = 2  # 2: large record batches (BATCH_ROWS)
DATA_FILE = "data.arrow"
META_FILE = "meta.json"


def cache_root(kind: str = "datasets") -> Path:
    """Where prepared data of ``kind`` is kept: ``$EMBEDTRAIN_CACHE_DIR/<kind>``, else
    ``<datasets cache>/embedtrain`` for datasets and ``<datasets cache>/embedtrain-<kind>`` for the rest."""
    root = os.environ.get("EMBEDTRAIN_CACHE_DIR")
    if root:
        return Path(root).expanduser() / kind
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / ("embedtrain" if kind == "datasets" else f"embedtrain-{kind}")


@dataclass
class CachedDataset:
    """A prepared dataset (memory-mapped) and what was measured while preparing it."""

    dataset: Any
    folder: Path
    meta: dict[str, Any]
    #: True when this call opened an existing entry instead of reading the source.
    reused: bool = False


def _key(source: Source, fmt: str, columns: dict[str, str] | None, num_negatives: int | None,
         max_samples: int | None, candidates_column: str | None = None) -> str:
    payload = {"version": CACHE_VERSION, "source": source.fingerprint(), "split": source.split, "format": fmt,
               "columns": dict(sorted((columns or {}).items())), "num_negatives": num_negatives,
               "max_samples": max_samples, "candidates_column": candidates_column}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


#: Rows and bytes per record batch of a prepared file. Opening a memory-mapped IPC stream reads every batch's
#: header, and each header read maps the pages around it (the kernel's fault-around, 64 KB): a file of
#: thousands of small batches (one per 512 KB block read from the source) became hundreds of MB resident
#: before the first step (issue 13). Batches of this size keep that to a few pages per 64k rows.
BATCH_ROWS = 65536
BATCH_BYTES = 64 << 20


def _write(batches, path: Path) -> pa.Schema | None:
    """Stream column dicts into an Arrow IPC stream file (what ``Dataset.from_file`` memory-maps), in record
    batches of up to :data:`BATCH_ROWS` rows / :data:`BATCH_BYTES` bytes however small the incoming ones are."""
    writer = None
    schema = None
    pending: list[pa.RecordBatch] = []
    rows = size = 0

    def flush() -> None:
        nonlocal rows, size
        if pending:
            writer.write_batch(pa.concat_batches(pending))
            pending.clear()
            rows = size = 0

    with pa.OSFile(str(path), "wb") as sink:
        for columns in batches:
            batch = pa.RecordBatch.from_pydict(columns)
            if writer is None:
                schema = batch.schema
                writer = pa.ipc.new_stream(sink, schema)
            pending.append(batch)
            rows, size = rows + batch.num_rows, size + batch.nbytes
            if rows >= BATCH_ROWS or size >= BATCH_BYTES:
                flush()
        if writer is not None:
            flush()
            writer.close()
    return schema


def _release_written_pages(path: Path) -> None:
    """Flush ``path`` to disk and drop its pages from the page cache.

    Why: a file just written sits in the page cache in large folios (up to MiBs each on current Linux
    kernels), and a memory-mapped read of one row maps the whole folio around it into the process: reading
    16 random rows of a freshly prepared 1M-pair file made ~45 MB of it resident in each rank, 208 MB per
    rank at 5M pairs by the first step. Once the pages are dropped, a row read faults in only the
    readahead window around it (a few hundred KB). The flush also means a cache entry is on disk before it
    is renamed into place. Where ``posix_fadvise`` does not exist (not Linux) it only flushes.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read_batches(path: Path):
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_stream(source)
        for batch in reader:
            yield {name: batch.column(name) for name in batch.schema.names}


def build_entry(source: Source, plan: Plan, folder: Path, *, limit: int | None, hash_rows: bool) -> dict[str, Any]:
    """Check and convert ``source`` into ``folder`` (data file + meta); returns the meta."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stats = ConvertStats()
    raw = folder / "raw.arrow"
    _write(convert(source, plan, limit=limit, hash_rows=hash_rows, stats=stats), raw)
    n = check_negatives_found(source, plan, stats)
    data = folder / DATA_FILE
    with pa.memory_map(str(raw)) as mm:
        names = pa.ipc.open_stream(mm).schema.names
    if NEGATIVES_LIST in names:
        _write((split_negatives(c, n) for c in _read_batches(raw)), data)
        raw.unlink()
    else:
        raw.rename(data)
    _release_written_pages(data)
    meta = {"rows": stats.rows, "distinct_rows": stats.distinct_rows() if hash_rows else None,
            "score_min": stats.score_min if stats.score_max >= stats.score_min else None,
            "score_max": stats.score_max if stats.score_max >= stats.score_min else None,
            "num_negatives": n, "fast_path": stats.fast_path, "seconds": round(time.perf_counter() - t0, 3),
            "format": plan.fmt, "source": str(source.path)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


def load_dataset_cached(path: str | Path, fmt: str, *, file_type: str | None = None, split: str | None = None,
                        columns: dict[str, str] | None = None, num_negatives: int | None = None,
                        max_samples: int | None = None, cache_dir: str | Path | None = None,
                        hash_rows: bool = True, candidates_column: str | None = None) -> CachedDataset:
    """The checked dataset of ``path`` as format ``fmt``, memory-mapped from the cache (built on first use).

    Errors are the located :class:`~embedtrain.errors.DataError` of the first bad row (``file:line, field``).
    With ``candidates_column`` (hard negatives re-mined while training) the dataset also holds
    :data:`~embedtrain.io.columnar.EXTRA_COLUMNS`: every negative of the file, their scores, the candidates.
    """
    from datasets import Dataset
    from filelock import FileLock

    source = open_source(path, file_type, split=split)
    plan = make_plan(source, fmt, columns, num_negatives, candidates_column)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    stem = Path(str(path)).name.replace("/", "_")[:60] or "data"
    folder = root / f"{stem}-{_key(source, fmt, columns, num_negatives, max_samples, candidates_column)}"
    reused = True
    with FileLock(str(folder) + ".lock"):
        if not (folder / META_FILE).is_file():
            reused = False
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                build_entry(source, plan, tmp, limit=max_samples, hash_rows=hash_rows)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    dataset = Dataset.from_file(str(folder / DATA_FILE))
    logger.info("%s: %d rows %s %s", path, len(dataset), "opened from cache" if reused else "prepared into",
                folder)
    return CachedDataset(dataset, folder, meta, reused)


# -- streaming ------------------------------------------------------------------------------------------------
def _stream_rows(path: str, fmt: str, file_type: str | None, split: str | None, columns: dict[str, str],
                 num_negatives: int | None, max_samples: int | None):
    """Rows of the streamed dataset (the generator behind :func:`stream_dataset`)."""
    source = open_source(path, file_type, split=split)
    plan = make_plan(source, fmt, columns, num_negatives)
    yield from _as_rows(convert(source, plan, limit=max_samples, hash_rows=False), num_negatives)


def _as_rows(batches, num_negatives: int | None):
    for columns in batches:
        columns = split_negatives(columns, num_negatives or 0)
        names = list(columns)
        values = [columns[n].to_pylist() for n in names]
        for row in zip(*values):
            yield dict(zip(names, row))


def stream_dataset(path: str | Path, fmt: str, *, file_type: str | None = None, split: str | None = None,
                   columns: dict[str, str] | None = None, num_negatives: int | None = None,
                   max_samples: int | None = None):
    """An ``IterableDataset`` over ``path`` checked and converted while it is read (``streaming: true``).

    The column layout is known before reading (negatives need ``num_negatives``); the first bad row stops the
    run with its located error when it is reached.
    """
    from datasets import Features, IterableDataset, Value

    from embedtrain.errors import DataError

    source = open_source(path, file_type, split=split)
    plan = make_plan(source, fmt, columns, num_negatives)
    names = list(plan.spec.text_roles)
    if plan.spec.list_role:
        if num_negatives is None:
            raise DataError("streaming hard negatives needs num_negatives (the column layout must be known "
                            "before the data is read)", file=source.path, field="num_negatives")
        names += [f"negative_{k + 1}" for k in range(num_negatives)]
    features = {n: Value("string") for n in names}
    if plan.spec.score_role:
        features["score"] = Value("float64")
    return IterableDataset.from_generator(
        _stream_rows, features=Features(features),
        gen_kwargs={"path": str(path), "fmt": fmt, "file_type": file_type, "split": split,
                    "columns": dict(columns or {}), "num_negatives": num_negatives, "max_samples": max_samples})
