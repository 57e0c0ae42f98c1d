"""Encoding throughput (sentences per second) of a model on real sentences.

A measurement for the export report, not a benchmark suite: one warm-up batch, then the median of
``repeats`` timed passes over the same sentences.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from embedtrain.errors import DataError
from embedtrain.io.readers import read_records

#: Columns tried, in order, when reading sentences for a speed measurement.
TEXT_COLUMNS = ("text", "sentence", "sentence1", "anchor", "query", "sentence2", "positive")


@dataclass
class EncodeSpeed:
    """Throughput of one model on ``num_sentences`` sentences."""

    sentences_per_second: float
    num_sentences: int
    batch_size: int
    seconds: float


def default_speed_file() -> Path:
    """512 English sentences shipped with the package (:mod:`embedtrain.resources`)."""
    from embedtrain.resources import resource_path

    return resource_path("sentences.jsonl")


def load_speed_sentences(path: str | Path, limit: int = 512) -> list[str]:
    """Up to ``limit`` distinct sentences from any records file (first text-like column(s))."""
    records = read_records(path, limit=limit)
    columns = [c for c in TEXT_COLUMNS if c in records.columns()]
    if not columns:
        raise DataError(f"no text column found (looked for {list(TEXT_COLUMNS)}); columns are "
                        f"{records.columns()}", file=path)
    sentences: list[str] = []
    for row in records.rows:
        for column in columns:
            value = row.get(column)
            if isinstance(value, str) and value.strip():
                sentences.append(value)
    return list(dict.fromkeys(sentences))[:limit]


def measure_encode_speed(model, sentences: list[str], *, batch_size: int = 32, repeats: int = 3) -> EncodeSpeed:
    """Median sentences/second of ``model.encode(sentences)`` over ``repeats`` passes."""
    if not sentences:
        raise ValueError("no sentences to measure encoding speed on")
    model.encode(sentences[:batch_size], batch_size=batch_size, show_progress_bar=False)  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model.encode(sentences, batch_size=batch_size, show_progress_bar=False)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return EncodeSpeed(len(sentences) / seconds, len(sentences), batch_size, seconds)
